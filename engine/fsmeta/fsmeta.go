//go:build linux

package fsmeta

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"coffer/engine/tree"

	"golang.org/x/sys/unix"
)

var (
	// ErrNeedRoot is wrapped by Create when a device node cannot be made
	// because the process is not root (or lacks CAP_MKNOD).
	ErrNeedRoot = errors.New("fsmeta: creating a device node needs root")
	// ErrSkipped is returned by Create for a socket: a Unix socket belongs to
	// the program that listens on it and cannot be restored meaningfully.
	ErrSkipped = errors.New("fsmeta: entry type is not restored")
	// ErrNotSpecial is wrapped by Create for files, folders and hard links,
	// which the engine creates itself.
	ErrNotSpecial = errors.New("fsmeta: Create makes only symlinks, fifos and devices")
	// ErrUnknownType is wrapped by Stat for a file type Coffer does not know.
	ErrUnknownType = errors.New("fsmeta: unknown file type")
	// ErrChanged is wrapped by Stat when the entry was replaced while its
	// metadata was being read.
	ErrChanged = errors.New("fsmeta: file changed during stat")
)

// Info is what Stat learns besides the Node.
type Info struct {
	Dev uint64 // st_dev: with Node.Inode, identifies the inode for hard-link detection
}

// IsRoot reports whether the process runs with effective user ID 0, which
// Apply needs to set ownership and Create needs to make device nodes.
func IsRoot() bool { return os.Geteuid() == 0 }

// Stat reads path's metadata without following a final symlink. It fills
// every Node field except Content and Subtree: Name is filepath.Base(path)
// (the caller must set a valid name for "/" or "."). Size is set for regular
// files only; LinkTarget for symlinks, byte for byte; Rdev for devices. Holes
// are looked up only for a regular file whose allocated bytes (st_blocks*512)
// are fewer than its size, and are empty on a file system that does not report
// them. Xattrs are every attribute the process may read, sorted by name
// (none on a file system without xattr support). User and Group are the names
// of UID and GID on this system, "" when unknown. Stat does not make hard-link
// nodes: the caller uses Info.Dev and Node.Inode for that.
//
// Stat is safe for concurrent use.
func Stat(path string) (tree.Node, Info, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return tree.Node{}, Info{}, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	n := tree.Node{
		Name:  filepath.Base(path),
		Mode:  st.Mode & tree.ModeMask,
		UID:   st.Uid,
		GID:   st.Gid,
		MTime: st.Mtim.Nano(),
		CTime: st.Ctim.Nano(),
		Inode: st.Ino,
		Links: uint64(st.Nlink),
	}
	n.User = names.userOf(st.Uid)
	n.Group = names.groupOf(st.Gid)
	info := Info{Dev: uint64(st.Dev)}

	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		n.Type = tree.File
		n.Size = uint64(st.Size)
		if st.Blocks*512 < st.Size {
			holes, err := statHoles(path, &st)
			if err != nil {
				return tree.Node{}, Info{}, err
			}
			n.Holes = holes
		}
	case unix.S_IFDIR:
		n.Type = tree.Dir
	case unix.S_IFLNK:
		n.Type = tree.Symlink
		target, err := os.Readlink(path)
		if err != nil {
			return tree.Node{}, Info{}, err
		}
		n.LinkTarget = target
	case unix.S_IFIFO:
		n.Type = tree.FIFO
	case unix.S_IFSOCK:
		n.Type = tree.Socket
	case unix.S_IFCHR:
		n.Type = tree.CharDev
		n.Rdev = uint64(st.Rdev)
	case unix.S_IFBLK:
		n.Type = tree.BlockDev
		n.Rdev = uint64(st.Rdev)
	default:
		return tree.Node{}, Info{}, fmt.Errorf("stat %q: mode %#o: %w", path, st.Mode, ErrUnknownType)
	}

	xattrs, err := readXattrs(path)
	if err != nil {
		return tree.Node{}, Info{}, err
	}
	n.Xattrs = xattrs
	return n, info, nil
}

// statHoles opens the regular file described by st and finds its holes. The
// file is opened without following symlinks, without blocking (in case it was
// replaced by a FIFO) and, when allowed, without updating its atime.
func statHoles(path string, st *unix.Stat_t) ([]tree.Extent, error) {
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	fd, err := unix.Open(path, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) { // O_NOATIME needs ownership or CAP_FOWNER
		fd, err = unix.Open(path, flags, 0)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return nil, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if fst.Dev != st.Dev || fst.Ino != st.Ino || fst.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("find holes in %q: %w", path, ErrChanged)
	}
	return Holes(f, st.Size)
}

// Holes returns the holes of the open regular file f within its first size
// bytes, found with lseek SEEK_DATA/SEEK_HOLE: sorted, non-empty, never
// touching each other, and inside [0, size), as tree.Node.Holes requires. A
// file system that does not report holes gives none, without error. Holes
// uses f's file offset but puts it back before returning; ReadAt is never
// affected. It must not be called concurrently with Read or Seek on f.
func Holes(f *os.File, size int64) (holes []tree.Extent, err error) {
	if size <= 0 {
		return nil, nil
	}
	saved, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	defer func() {
		if _, serr := f.Seek(saved, io.SeekStart); serr != nil && err == nil {
			holes, err = nil, serr
		}
	}()
	off := int64(0)
	for off < size {
		data, err := f.Seek(off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO): // no data after off: the rest is a hole
			data = size
		case errors.Is(err, unix.EINVAL) && off == 0: // SEEK_DATA not supported
			return nil, nil
		case err != nil:
			return nil, err
		}
		data = min(data, size)
		if data > off {
			holes = append(holes, tree.Extent{Off: uint64(off), Len: uint64(data - off)})
		}
		if data >= size {
			break
		}
		hole, err := f.Seek(data, unix.SEEK_HOLE)
		if errors.Is(err, unix.ENXIO) { // file shrank meanwhile
			break
		}
		if err != nil {
			return nil, err
		}
		if hole <= data { // cannot happen on a sane file system; avoid looping
			break
		}
		off = hole
	}
	return holes, nil
}

// readXattrs lists and reads path's extended attributes without following a
// symlink. Attributes removed between listing and reading are left out.
func readXattrs(path string) ([]tree.Xattr, error) {
	list, err := getSized(func(b []byte) (int, error) { return unix.Llistxattr(path, b) })
	if unsupported(err) {
		return nil, nil
	}
	if err != nil {
		return nil, &fs.PathError{Op: "llistxattr", Path: path, Err: err}
	}
	var xattrs []tree.Xattr
	for name := range strings.SplitSeq(string(list), "\x00") {
		if name == "" {
			continue
		}
		val, err := getSized(func(b []byte) (int, error) { return unix.Lgetxattr(path, name, b) })
		if errors.Is(err, unix.ENODATA) || unsupported(err) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		xattrs = append(xattrs, tree.Xattr{Name: name, Value: val})
	}
	slices.SortFunc(xattrs, func(a, b tree.Xattr) int { return strings.Compare(a.Name, b.Name) })
	xattrs = slices.CompactFunc(xattrs, func(a, b tree.Xattr) bool { return a.Name == b.Name })
	return xattrs, nil
}

// getSized calls get first to learn the size, then with a buffer of that
// size, and again if the value grew in between (ERANGE).
func getSized(get func([]byte) (int, error)) ([]byte, error) {
	for range 8 {
		n, err := get(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		b := make([]byte, n)
		n, err = get(b)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return b[:n], nil
	}
	return nil, unix.ERANGE
}

func unsupported(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// Create makes the special node n at path, which must not exist: a symlink to
// n.LinkTarget, a FIFO, or a character or block device with n.Rdev. FIFOs and
// devices are created with mode 0600; Apply sets the recorded mode afterwards.
// A device needs root: otherwise the error wraps ErrNeedRoot. A socket is not
// created: Create returns ErrSkipped. Files, folders and hard links are the
// engine's to create: for them the error wraps ErrNotSpecial.
func Create(path string, n *tree.Node) error {
	switch n.Type {
	case tree.Symlink:
		return os.Symlink(n.LinkTarget, path)
	case tree.FIFO:
		if err := unix.Mkfifo(path, 0o600); err != nil {
			return &fs.PathError{Op: "mkfifo", Path: path, Err: err}
		}
		return nil
	case tree.CharDev, tree.BlockDev:
		if !IsRoot() {
			return fmt.Errorf("create %s %q: %w", n.Type, path, ErrNeedRoot)
		}
		kind := uint32(unix.S_IFCHR)
		if n.Type == tree.BlockDev {
			kind = unix.S_IFBLK
		}
		if err := unix.Mknod(path, kind|0o600, int(n.Rdev)); err != nil {
			err = &fs.PathError{Op: "mknod", Path: path, Err: err}
			if errors.Is(err, unix.EPERM) { // root without CAP_MKNOD
				return fmt.Errorf("%w: %w", ErrNeedRoot, err)
			}
			return err
		}
		return nil
	case tree.Socket:
		return ErrSkipped
	}
	return fmt.Errorf("create %s %q: %w", n.Type, path, ErrNotSpecial)
}

// ApplyOptions says which metadata Apply restores besides mode and times.
type ApplyOptions struct {
	// Owner sets ownership (lchown); only root can. The owner is the uid/gid
	// that n.User/n.Group have on this system if those names exist here,
	// else the recorded numeric IDs (like tar --same-owner).
	Owner bool
	// Xattrs sets n.Xattrs, POSIX ACLs included (lsetxattr). Attributes the
	// target file system does not support are skipped without error.
	Xattrs bool
}

// Apply sets n's metadata on path once its content is in place, without
// following a final symlink, in this order: ownership (a chown clears the
// setuid/setgid bits and file capabilities), xattrs and ACLs, mode (after the
// ACLs, so the recorded bits win; never on a symlink), then mtime, with atime
// set to the same value (utimensat with AT_SYMLINK_NOFOLLOW, so a symlink gets
// its own times).
//
// Apply does as much as it can and returns every failure, joined. When it
// runs as root and the recorded owner was not set (opts.Owner false, or the
// chown failed), it drops the setuid and setgid bits: a restored program must
// not become setuid root by accident.
func Apply(path string, n *tree.Node, opts ApplyOptions) error {
	var errs []error
	keepSetID := !IsRoot()
	if opts.Owner {
		uid, gid := owner(n)
		if err := unix.Lchown(path, int(uid), int(gid)); err != nil {
			errs = append(errs, &fs.PathError{Op: "lchown", Path: path, Err: err})
		} else {
			keepSetID = true
		}
	}
	if opts.Xattrs {
		for _, x := range n.Xattrs {
			err := unix.Lsetxattr(path, x.Name, x.Value, 0)
			if err != nil && !unsupported(err) {
				errs = append(errs, &fs.PathError{Op: "lsetxattr " + x.Name, Path: path, Err: err})
			}
		}
	}
	if n.Type != tree.Symlink {
		mode := n.Mode & tree.ModeMask
		if !keepSetID {
			mode &^= unix.S_ISUID | unix.S_ISGID
		}
		if err := unix.Chmod(path, mode); err != nil {
			errs = append(errs, &fs.PathError{Op: "chmod", Path: path, Err: err})
		}
	}
	ts := unix.NsecToTimespec(n.MTime)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		errs = append(errs, &fs.PathError{Op: "utimensat", Path: path, Err: err})
	}
	return errors.Join(errs...)
}

// owner returns the uid and gid to restore: those of n's names on this
// system when they exist here, else the recorded numbers.
func owner(n *tree.Node) (uid, gid uint32) {
	uid, gid = n.UID, n.GID
	if n.User != "" {
		if id, ok := names.uidOf(n.User); ok {
			uid = id
		}
	}
	if n.Group != "" {
		if id, ok := names.gidOf(n.Group); ok {
			gid = id
		}
	}
	return uid, gid
}
