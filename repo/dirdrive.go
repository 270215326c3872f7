package repo

import (
	"golang.org/x/sys/unix"

	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DirDrive is a Drive kept in a folder of the local file system (in production,
// the mount point of one disk). Object "a/b/c" is the file <root>/a/b/c; temporary
// files of puts in progress live in <root>/tmp and are never listed.
//
// A Put is atomic and durable: the data goes to a new file in <root>/tmp, which is
// fsynced; missing parent folders are created, each new folder's parent fsynced so
// the folder entry survives a crash; the file is renamed into place and the
// destination folder fsynced so the rename survives a crash. A crash at any point
// leaves either the old object or the new one, plus at most a stray temporary file
// (RemoveStaleTemp clears those).
//
// Delete removes the object, fsyncs its folder, and removes parent folders left
// empty, up to but not including the top-level folder of the name.
//
// A name that is also the folder of another name (both "a" and "a/b") is not
// supported; Coffer's names never collide that way. DirDrive is safe for
// concurrent use.
type DirDrive struct {
	root string // cleaned absolute path of the folder; immutable
}

var (
	_ Drive         = (*DirDrive)(nil)
	_ PrefixDeleter = (*DirDrive)(nil)
)

// Permissions of what DirDrive creates: everything on a drive is sealed, but
// nothing on it is for other users of the machine either.
const (
	dirPerm  = 0o700
	filePerm = 0o600
)

// NewDirDrive opens the drive kept in folder root, which must exist.
func NewDirDrive(root string) (*DirDrive, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("repo: drive folder %s: %w", root, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("repo: drive folder %s does not exist", root)
		}
		return nil, fmt.Errorf("repo: drive folder %s: %w", root, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("repo: drive path %s is not a folder", root)
	}
	return &DirDrive{root: abs}, nil
}

// Root returns the absolute path of the drive's folder.
func (d *DirDrive) Root() string { return d.root }

var _ SpaceReporter = (*DirDrive)(nil)

// Free reports the space available to unprivileged writers on the drive's
// file system, and its size.
func (d *DirDrive) Free(ctx context.Context) (avail, total int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.root, &st); err != nil {
		return 0, 0, fmt.Errorf("repo: free space of %s: %w", d.root, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

var _ InodeReporter = (*DirDrive)(nil)

// FreeInodes reports the files that can still be created on the drive's file
// system, and its total (0 on file systems without a fixed number).
func (d *DirDrive) FreeInodes(ctx context.Context) (avail, total int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.root, &st); err != nil {
		return 0, 0, fmt.Errorf("repo: free inodes of %s: %w", d.root, err)
	}
	return int64(st.Ffree), int64(st.Files), nil
}

func (d *DirDrive) path(name string) string {
	return filepath.Join(d.root, filepath.FromSlash(name))
}

// writeChunk is how much Put writes between two looks at ctx.
const writeChunk = 8 << 20

// putRetries bounds how often Put recreates parent folders that a concurrent
// Delete removed between mkdir and rename.
const putRetries = 8

// Put implements Drive.
func (d *DirDrive) Put(ctx context.Context, name string, data []byte) error {
	return d.PutParts(ctx, name, data)
}

var _ PartsPutter = (*DirDrive)(nil)

// PutParts is Put of the concatenation of parts.
func (d *DirDrive) PutParts(ctx context.Context, name string, parts ...[]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	tmp, err := d.createTemp()
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	tmpName := tmp.Name()
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	for _, data := range parts {
		for rest := data; len(rest) > 0; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(len(rest), writeChunk)
			if _, err := tmp.Write(rest[:n]); err != nil {
				return fmt.Errorf("put %s: write temporary file: %w", name, err)
			}
			rest = rest[n:]
		}
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("put %s: fsync temporary file: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("put %s: close temporary file: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dst := d.path(name)
	for attempt := 0; ; attempt++ {
		err := d.mkdirs(path.Dir(name))
		if err == nil {
			err = os.Rename(tmpName, dst)
		}
		if err == nil {
			break
		}
		if errors.Is(err, fs.ErrNotExist) && attempt < putRetries {
			continue // a concurrent Delete removed a parent folder it found empty
		}
		return fmt.Errorf("put %s: %w", name, err)
	}
	renamed = true
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("put %s: fsync folder: %w", name, err)
	}
	return nil
}

// createTemp creates a new file in <root>/tmp, creating that folder if needed.
func (d *DirDrive) createTemp() (*os.File, error) {
	dir := filepath.Join(d.root, tmpFolder)
	f, err := os.CreateTemp(dir, "*.tmp")
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	if err := os.Mkdir(dir, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	if err := syncDir(d.root); err != nil {
		return nil, err
	}
	return os.CreateTemp(dir, "*.tmp")
}

// mkdirs creates the folder dir (a slash-separated name relative to the root) and
// its missing parents, fsyncing the parent of each folder it creates.
func (d *DirDrive) mkdirs(dir string) error {
	if dir == "." {
		return nil
	}
	if fi, err := os.Stat(d.path(dir)); err == nil && fi.IsDir() {
		return nil
	}
	parent := d.root
	for c := range strings.SplitSeq(dir, "/") {
		p := filepath.Join(parent, c)
		err := os.Mkdir(p, dirPerm)
		switch {
		case err == nil:
			if err := syncDir(parent); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return err
		}
		parent = p
	}
	return nil
}

// checkRead checks the arguments of a Drive's ReadAt, the same for every
// drive: ctx still live, a valid name, an offset that is not negative.
func checkRead(ctx context.Context, name string, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("read %s: negative offset %d", name, off)
	}
	return nil
}

// ReadAt implements Drive.
func (d *DirDrive) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := checkRead(ctx, name, off); err != nil {
		return err
	}
	f, err := os.Open(d.path(name))
	if err != nil {
		return fmt.Errorf("read %s: %w", name, notFound(err))
	}
	defer f.Close()
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == io.EOF {
		return fmt.Errorf("read %s: %d bytes at %d: %w", name, len(p), off, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("read %s: %w", name, notFound(err))
}

// Size implements Drive.
func (d *DirDrive) Size(ctx context.Context, name string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := ValidateName(name); err != nil {
		return 0, err
	}
	fi, err := os.Stat(d.path(name))
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", name, notFound(err))
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("size of %s: %w", name, ErrNotFound)
	}
	return fi.Size(), nil
}

// List implements Drive. Files and folders whose names break the naming rule
// (lost+found on a fresh file system, for instance) are skipped, as is <root>/tmp.
func (d *DirDrive) List(ctx context.Context, prefix string, fn func(name string, size int64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidatePrefix(prefix); err != nil {
		return err
	}
	start := d.path(prefix)
	tmpDir := filepath.Join(d.root, tmpFolder)
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil // removed while we walked, or the prefix is absent
			}
			return err
		}
		if p == start {
			return nil
		}
		if e.IsDir() {
			if p == tmpDir || validComponent(e.Name()) != nil {
				return filepath.SkipDir
			}
			return nil
		}
		if !e.Type().IsRegular() || validComponent(e.Name()) != nil {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		return fn(filepath.ToSlash(rel), info.Size())
	})
	if err != nil {
		return err
	}
	return nil
}

// Delete implements Drive.
func (d *DirDrive) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	p := d.path(name)
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(notFound(err), ErrNotFound) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", name, err)
	}
	if fi.IsDir() {
		return nil // a folder is not an object
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: fsync folder: %w", name, err)
	}
	d.removeEmptyParents(path.Dir(name))
	return nil
}

// DeletePrefix implements PrefixDeleter: it removes the folder <root>/<prefix>.
func (d *DirDrive) DeletePrefix(ctx context.Context, prefix string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if prefix == "" {
		return fmt.Errorf("%w: DeletePrefix needs a non-empty prefix", ErrInvalidName)
	}
	if err := ValidatePrefix(prefix); err != nil {
		return err
	}
	dir := strings.TrimSuffix(prefix, "/")
	p := d.path(dir)
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("delete prefix %s: %w", prefix, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete prefix %s: fsync folder: %w", prefix, err)
	}
	d.removeEmptyParents(path.Dir(dir))
	return nil
}

// removeEmptyParents removes dir and its parents while they are empty, stopping
// before the top-level folder. It is best effort: rmdir fails on a folder that is
// not empty, which is exactly when it must stop.
func (d *DirDrive) removeEmptyParents(dir string) {
	removed := false
	for strings.Contains(dir, "/") {
		if os.Remove(d.path(dir)) != nil {
			break
		}
		removed = true
		dir = path.Dir(dir)
	}
	if removed {
		syncDir(d.path(dir)) // best effort, like the removal itself
	}
}

// RemoveStaleTemp removes temporary files of interrupted puts last modified before
// the given time. Call it when no put can be in progress for that long, for
// instance at start-up with time.Now().Add(-time.Hour).
func (d *DirDrive) RemoveStaleTemp(ctx context.Context, before time.Time) error {
	return d.ListStaleTemp(ctx, before, func(name string, _ int64) error {
		if err := os.Remove(d.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale temporary file %s: %w", name, err)
		}
		return nil
	})
}

// notFound maps "no such file" (and "a parent is not a folder", and "is a folder")
// to ErrNotFound, keeping other errors as they are.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
		return fmt.Errorf("%w (%v)", ErrNotFound, err)
	}
	return err
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
