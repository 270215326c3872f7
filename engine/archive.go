package engine

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"cmp"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"coffer/engine/tree"
)

// Archive formats of WriteArchive.
const (
	ArchiveTar = "tar"
	ArchiveZip = "zip"
)

// ArchiveStats say what WriteArchive wrote.
type ArchiveStats struct {
	Entries int64 // headers written
	Files   int64 // regular files with content
	Bytes   int64 // content bytes
	Skipped int64 // entries the format cannot hold (zip: devices, fifos, sockets; tar: sockets)
}

// WriteArchive streams the folder at p of snapshot s (through r) to w as
// a tar (PAX: nanosecond times, long names, owners by number and name,
// xattrs as SCHILY.xattr records, symlinks, hard links, devices and fifos)
// or zip archive (modes, times and symlinks; hard links become copies).
// Entry names are relative to p's parent: dumping /srv/www gives "www/",
// "www/index.html", …; dumping the root gives the snapshot's top-level
// names. A file at p gives an archive of that one file. Content is read in
// groups of nearby blobs (as a restore reads), the next groups while the
// current one is written. Every blob is checked against its ID by r; a
// file whose content does not add up to its size is ErrDamage. The walk
// keeps to the tree limits (treeWalker). The stats returned are never nil,
// also with an error. It is not audited: Tenant.DumpArchive is.
func WriteArchive(ctx context.Context, r SnapshotReader, s *Snapshot, p, format string, w io.Writer) (*ArchiveStats, error) {
	if format != ArchiveTar && format != ArchiveZip {
		return &ArchiveStats{}, invalidf("archive format %q: use tar or zip", format)
	}
	n, rel, err := lookupIn(ctx, r, s, p)
	if err != nil {
		return &ArchiveStats{}, err
	}
	a := &archiver{ctx: ctx, r: r, s: s, st: &ArchiveStats{}, links: map[string]string{}}
	// base is what the entries' snapshot paths lose: p's parent.
	if rel != "" {
		if i := strings.LastIndexByte(rel, '/'); i >= 0 {
			a.base = rel[:i+1]
		}
	}
	switch format {
	case ArchiveTar:
		a.tw = tar.NewWriter(w)
	default:
		a.zw = zip.NewWriter(w)
		// Deflate at its fastest: backups hold much that does not
		// compress, and the default level costs several times the time.
		a.zw.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
			return flate.NewWriter(out, flate.BestSpeed)
		})
	}
	err = a.run(n, rel)
	if err == nil {
		if a.tw != nil {
			err = a.tw.Close()
		} else {
			err = a.zw.Close()
		}
	}
	if errors.Is(err, syscall.EPIPE) {
		err = fmt.Errorf("write output: the reader closed it after %d content bytes", a.st.Bytes)
	}
	return a.st, err
}

type archiver struct {
	ctx  context.Context
	r    SnapshotReader
	s    *Snapshot
	st   *ArchiveStats
	base string
	tw   *tar.Writer
	zw   *zip.Writer
	// links maps the snapshot path of a file with several names, once
	// written, to its name in the archive: its later names link to it.
	links map[string]string
}

func (a *archiver) run(n *tree.Node, rel string) error {
	var root tree.ID
	if n != nil {
		if err := a.entry(rel, n); err != nil {
			return err
		}
		if n.Type != tree.Dir {
			return nil
		}
		root = n.Subtree
	} else {
		var err error
		if root, err = parseTreeID(a.s.Tree); err != nil {
			return err
		}
	}
	w := &treeWalker{r: a.r, s: a.s, visit: func(rel string, c *tree.Node) (bool, error) {
		return true, a.entry(rel, c)
	}}
	return w.walk(a.ctx, root, rel)
}

// name is the archive name of the snapshot path rel.
func (a *archiver) name(rel string) string { return strings.TrimPrefix(rel, a.base) }

func (a *archiver) entry(rel string, n *tree.Node) error {
	name := a.name(rel)
	if n.Type == tree.Hardlink {
		if first, ok := a.links[n.LinkTarget]; ok && a.tw != nil {
			h := a.tarHeader(name, n)
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			a.st.Entries++
			return a.tw.WriteHeader(h)
		}
		// The first name is outside the archive (or zip has no links):
		// this name gets the content, and later names link to it.
		f, _, err := lookupIn(a.ctx, a.r, a.s, n.LinkTarget)
		if err != nil || f == nil || f.Type != tree.File {
			return fmt.Errorf("%w: hard link /%s: its first name /%s is not a file in the snapshot", ErrDamage, shortPath(rel, 200), shortPath(n.LinkTarget, 200))
		}
		c := *f
		c.Name, c.Mode, c.UID, c.GID, c.User, c.Group, c.MTime, c.Xattrs = n.Name, n.Mode, n.UID, n.GID, n.User, n.Group, n.MTime, n.Xattrs
		if err := a.file(name, &c); err != nil {
			return err
		}
		a.links[n.LinkTarget] = name
		return nil
	}
	if a.zw != nil {
		return a.zipEntry(name, n)
	}
	h := a.tarHeader(name, n)
	switch n.Type {
	case tree.File:
		if err := a.file(name, n); err != nil {
			return err
		}
		if n.Links > 1 {
			a.links[rel] = name
		}
		return nil
	case tree.Dir:
		h.Typeflag, h.Name = tar.TypeDir, name+"/"
	case tree.Symlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, n.LinkTarget
	case tree.FIFO:
		h.Typeflag = tar.TypeFifo
	case tree.CharDev, tree.BlockDev:
		h.Typeflag = tar.TypeChar
		if n.Type == tree.BlockDev {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(devMajor(n.Rdev)), int64(devMinor(n.Rdev))
	default: // sockets: tar has no type for them
		a.st.Skipped++
		return nil
	}
	a.st.Entries++
	return a.tw.WriteHeader(h)
}

func (a *archiver) tarHeader(name string, n *tree.Node) *tar.Header {
	h := &tar.Header{
		Name: name, Mode: int64(n.Mode & tree.ModeMask), Uid: int(n.UID), Gid: int(n.GID),
		Uname: n.User, Gname: n.Group, ModTime: time.Unix(0, n.MTime), Format: tar.FormatPAX,
	}
	if len(n.Xattrs) > 0 {
		h.PAXRecords = map[string]string{}
		for _, x := range n.Xattrs {
			h.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
		}
	}
	return h
}

// file writes a regular file's header and content.
func (a *archiver) file(name string, n *tree.Node) error {
	var w io.Writer
	if a.tw != nil {
		h := a.tarHeader(name, n)
		h.Typeflag, h.Size = tar.TypeReg, int64(n.Size)
		if err := a.tw.WriteHeader(h); err != nil {
			return err
		}
		w = a.tw
	} else {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: time.Unix(0, n.MTime)}
		h.SetMode(fileMode(n))
		h.UncompressedSize64 = n.Size
		zf, err := a.zw.CreateHeader(h)
		if err != nil {
			return err
		}
		w = zf
	}
	a.st.Entries++
	written, err := copyContent(a.ctx, a.r, "/"+a.base+name, n, w)
	a.st.Bytes += written
	if err != nil {
		return err
	}
	a.st.Files++
	return nil
}

func (a *archiver) zipEntry(name string, n *tree.Node) error {
	switch n.Type {
	case tree.File:
		return a.file(name, n)
	case tree.Dir:
		h := &zip.FileHeader{Name: name + "/", Modified: time.Unix(0, n.MTime)}
		h.SetMode(fileMode(n))
		a.st.Entries++
		_, err := a.zw.CreateHeader(h)
		return err
	case tree.Symlink:
		h := &zip.FileHeader{Name: name, Method: zip.Store, Modified: time.Unix(0, n.MTime)}
		h.SetMode(fileMode(n))
		zf, err := a.zw.CreateHeader(h)
		if err != nil {
			return err
		}
		a.st.Entries++
		_, err = io.WriteString(zf, n.LinkTarget)
		return err
	}
	a.st.Skipped++
	return nil
}

// fileMode is n's type and mode as an fs.FileMode.
func fileMode(n *tree.Node) fs.FileMode {
	m := fs.FileMode(n.Mode & 0o777)
	if n.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch n.Type {
	case tree.Dir:
		m |= fs.ModeDir
	case tree.Symlink:
		m |= fs.ModeSymlink
	}
	return m
}

// devMajor and devMinor split a Linux device number (as unix.Major and
// unix.Minor do).
func devMajor(dev uint64) uint32 {
	return uint32(((dev & 0x00000000000fff00) >> 8) | ((dev & 0xfffff00000000000) >> 32))
}

func devMinor(dev uint64) uint32 {
	return uint32(((dev & 0x00000000000000ff) >> 0) | ((dev & 0x00000ffffff00000) >> 12))
}

// Read-ahead of copyContent: a window is consecutive blobs of a file of at
// most contentWindow bytes of plaintext (at least one blob); up to
// contentAhead windows are read at once (opening blobs costs a core each:
// one per core, at least 2) and wait for the writer in order, so a dump
// holds about (contentAhead+1) × contentWindow bytes.
const contentWindow = 8 << 20

var contentAhead = max(2, runtime.GOMAXPROCS(0))

// copyContent writes the content of file n (at path p, for errors) to w,
// reading it through r as a restore does: window by window, each window's
// blobs sorted by pack and offset and read in groups of nearby blobs of one
// pack (restoreGap, restoreSpan), then written in file order, with up to
// contentAhead windows read at once ahead of w. It returns the bytes
// written; a content that is not n.Size bytes is ErrDamage.
func copyContent(ctx context.Context, r SnapshotReader, p string, n *tree.Node, w io.Writer) (int64, error) {
	type window struct {
		done chan struct{} // closed when out or err is set
		out  [][]byte
		err  error
	}
	g, gctx := errgroup.WithContext(ctx)
	queue := make(chan *window, contentAhead) // in file order
	g.Go(func() error {
		defer close(queue)
		for ids := n.Content; len(ids) > 0; {
			k := min(len(ids), MaxReadGroup)
			places, err := r.Locate(gctx, ids[:k])
			if err != nil {
				return errNotData(p, err)
			}
			if len(places) != k {
				return fmt.Errorf("%w: %s: %d places for %d chunks", ErrDamage, p, len(places), k)
			}
			for len(places) > 0 {
				m, size := 1, uint64(places[0].Size)
				for m < len(places) && size+uint64(places[m].Size) <= contentWindow {
					size += uint64(places[m].Size)
					m++
				}
				win, wp := &window{done: make(chan struct{})}, places[:m]
				places = places[m:]
				select {
				case queue <- win: // a place in the queue bounds the windows in flight
				case <-gctx.Done():
					return gctx.Err()
				}
				g.Go(func() error {
					defer close(win.done)
					win.out, win.err = readWindow(gctx, r, wp)
					if win.err != nil {
						win.err = errNotData(p, win.err)
					}
					return win.err
				})
			}
			ids = ids[k:]
		}
		return nil
	})
	var written int64
	g.Go(func() error {
		for win := range queue {
			select {
			case <-win.done:
			case <-gctx.Done():
				return gctx.Err()
			}
			if win.err != nil {
				return win.err
			}
			for _, data := range win.out {
				if data == nil || uint64(written)+uint64(len(data)) > n.Size {
					return fmt.Errorf("%w: %s: content is more than the %d bytes the snapshot says", ErrDamage, p, n.Size)
				}
				k, err := w.Write(data)
				written += int64(k)
				if err != nil {
					return fmt.Errorf("write output: %w", err)
				}
			}
			win.out = nil
		}
		if uint64(written) != n.Size && gctx.Err() == nil {
			return fmt.Errorf("%w: %s: content is %d bytes, the snapshot says %d", ErrDamage, p, written, n.Size)
		}
		return nil
	})
	err := g.Wait()
	return written, err
}

// readWindow reads the blobs of places (a window of a file, in file order)
// and returns their plaintexts in that order: sorted by pack and offset,
// and read in groups of nearby blobs of one pack, as batchChunks groups a
// restore's chunks.
func readWindow(ctx context.Context, r SnapshotReader, places []BlobPlace) ([][]byte, error) {
	order := make([]int, len(places))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		if c := bytes.Compare(places[a].Pack[:], places[b].Pack[:]); c != 0 {
			return c
		}
		return cmp.Compare(places[a].Offset, places[b].Offset)
	})
	out := make([][]byte, len(places))
	for len(order) > 0 {
		first := places[order[0]]
		k, end := 1, first.Offset+first.Length
		for k < len(order) && k < MaxReadGroup {
			c := places[order[k]]
			if c.Pack != first.Pack || c.Offset > end+restoreGap || c.Offset+c.Length-first.Offset > restoreSpan {
				break
			}
			end = max(end, c.Offset+c.Length)
			k++
		}
		idx := order[:k]
		grp := make([]BlobPlace, k)
		for i, j := range idx {
			grp[i] = places[j]
		}
		err := r.ReadGroup(ctx, grp, func(i int, data []byte) error {
			if i < 0 || i >= len(idx) {
				return fmt.Errorf("%w: a reader gave blob %d of a group of %d", ErrDamage, i, len(idx))
			}
			out[idx[i]] = append([]byte(nil), data...)
			return nil
		})
		if err != nil {
			return nil, err
		}
		order = order[k:]
	}
	return out, nil
}

// DumpArchive writes the folder (or file) at p of snapshot s to w as an
// archive (WriteArchive). Like Dump it is audited before the first byte is
// written ("dump", detail "snapshot=ID archive=1" for tar, "archive=2"
// for zip): if that entry cannot be written, nothing is. One that fails
// after the entry gets a second entry with its outcome and the content
// bytes written.
func (t *Tenant) DumpArchive(ctx context.Context, s *Snapshot, p, format string, w io.Writer) (*ArchiveStats, error) {
	kind := 1
	switch format {
	case ArchiveTar:
	case ArchiveZip:
		kind = 2
	default:
		return nil, invalidf("archive format %q: use tar or zip", format)
	}
	if _, _, err := t.lookup(ctx, s, p); err != nil {
		return nil, t.e.audited(ctx, "dump", t.id, fmt.Sprintf("snapshot=%s archive=%d", s.ID, kind), err)
	}
	detail := fmt.Sprintf("snapshot=%s archive=%d", s.ID, kind)
	if err := t.e.logAudit(ctx, "dump", t.id, nil, detail); err != nil {
		return nil, fmt.Errorf("nothing was written, as the audit entry of the dump could not be written: %w", err)
	}
	st, err := WriteArchive(ctx, t.Reader(), s, p, format, w)
	if err != nil {
		if aerr := t.e.logAudit(context.WithoutCancel(ctx), "dump", t.id, err, fmt.Sprintf("%s bytes=%d", detail, st.Bytes)); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}
	return st, err
}
