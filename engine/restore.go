package engine

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"coffer/engine/fsmeta"
	"coffer/engine/tree"
)

// RestoreOptions configure a restore.
type RestoreOptions struct {
	// Includes limits the restore to these snapshot paths and what is below
	// them ("/srv/www" or "srv/www"); empty restores everything.
	Includes []string
	// Progress is updated while the restore runs; may be nil.
	Progress *Progress
}

// RestoreStats summarise a restore.
type RestoreStats struct {
	Snapshot           string // the snapshot's ID
	Files, Dirs, Other int64
	Bytes              int64
	Warnings           []string // metadata that could not be applied (not data)
}

type restoreFile struct {
	path string
	node *tree.Node
}

type restoreDir struct {
	path string
	node *tree.Node
}

// Restore writes snapshot s below target. Every chunk's content ID is
// verified before it is written. Files are written in parallel; folder
// metadata is applied last, deepest first, so their times stick.
func (t *Tenant) Restore(ctx context.Context, s *Snapshot, target string, o RestoreOptions) (st *RestoreStats, err error) {
	defer t.emitRestoreStats(t.e.now(), &st, &err)
	defer func() {
		detail := "snapshot=" + s.ID
		if st != nil {
			detail += fmt.Sprintf(" files=%d bytes=%d", st.Files, st.Bytes)
		}
		err = t.e.audited(ctx, "restore", t.id, detail, err)
	}()
	return t.restore(ctx, s, target, o)
}

func (t *Tenant) restore(ctx context.Context, s *Snapshot, target string, o RestoreOptions) (*RestoreStats, error) {
	return RestoreFrom(ctx, t.Reader(), s, target, o)
}

// RestoreFrom writes snapshot s, whose trees and data blobs r reads, below
// target: the one restore pipeline of a local restore (Tenant.Reader) and a
// remote one (engine/remote). Every blob is checked against its content ID
// by r before it is written. Files are written in parallel; folder metadata
// is applied last, deepest first, so their times stick. The walk keeps to
// the tree limits (treeWalker). It is not audited; Tenant.Restore is.
func RestoreFrom(ctx context.Context, r SnapshotReader, s *Snapshot, target string, o RestoreOptions) (*RestoreStats, error) {
	target, err := filepath.Abs(target)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return nil, fmt.Errorf("create restore target: %w", err)
	}
	rootID, err := parseTreeID(s.Tree)
	if err != nil {
		return nil, err
	}
	var includes []string
	for _, inc := range o.Includes {
		inc = strings.Trim(path.Clean("/"+inc), "/")
		includes = append(includes, inc)
	}
	prog := o.Progress
	if prog == nil {
		prog = &Progress{}
	}
	st := &RestoreStats{Snapshot: s.ID}
	var stMu sync.Mutex // guards st.Warnings
	warn := func(p string, err error) {
		stMu.Lock()
		st.Warnings = append(st.Warnings, fmt.Sprintf("%s: %v", p, err))
		stMu.Unlock()
	}
	applyOpts := fsmeta.ApplyOptions{Owner: fsmeta.IsRoot(), Xattrs: true}

	// Restore works chunk by chunk, not file by file, so one large file is
	// read, verified and written by every worker at once (WriteAt at the
	// chunk's offset). Reads wait on drives (or the network) and writes on
	// the target disk: twice as many workers as cores keep both busy.
	g, gctx := errgroup.WithContext(ctx)
	chunks := make(chan restoreChunk, 256)
	groups := make(chan []restoreChunk, 16)
	// wrote finishes a chunk: write it, and finish its file after its last.
	wrote := func(c restoreChunk, data []byte) error {
		if uint32(len(data)) != c.place.Size {
			return fmt.Errorf("%w: %s: a chunk is %d bytes, its place says %d", ErrDamage, c.f.path, len(data), c.place.Size)
		}
		if err := writeSparse(c.f.fd, data, c.off, c.f.node.Holes); err != nil {
			return fmt.Errorf("write %s: %w", c.f.path, err)
		}
		prog.Bytes.Add(int64(len(data)))
		if c.f.left.Add(-1) == 0 {
			if err := c.f.finish(applyOpts, warn); err != nil {
				return err
			}
			stMu.Lock()
			st.Files++
			st.Bytes += int64(c.f.node.Size)
			stMu.Unlock()
			prog.Files.Add(1)
		}
		return nil
	}
	// The batcher gathers chunks and hands them to the workers in groups of
	// blobs that lie close together in one pack, so a group is one read.
	g.Go(func() error {
		defer close(groups)
		return batchChunks(gctx, chunks, groups)
	})
	for i := 0; i < 2*runtime.GOMAXPROCS(0); i++ {
		g.Go(func() error {
			for grp := range groups {
				if err := restoreGroup(gctx, r, grp, wrote); err != nil {
					return err
				}
			}
			return nil
		})
	}
	var opened []*openFile // guarded by stMu; closed on failure
	// startFile creates a file and queues its chunks; the last chunk written
	// finishes it. A file without content is finished at once.
	startFile := func(p string, n *tree.Node) error {
		_ = os.Remove(p) // never write through an existing link
		fd, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("create file: %w", err)
		}
		rf := &openFile{fd: fd, path: p, node: n}
		stMu.Lock()
		opened = append(opened, rf)
		stMu.Unlock()
		if len(n.Content) == 0 {
			if err := rf.finish(applyOpts, warn); err != nil {
				return err
			}
			stMu.Lock()
			st.Files++
			stMu.Unlock()
			return nil
		}
		rf.left.Store(int32(len(n.Content)))
		var off uint64
		// The chunk sizes are not in the tree; the reader's places tell
		// each chunk's offset without reading it.
		for ids := n.Content; len(ids) > 0; {
			k := min(len(ids), MaxReadGroup)
			places, err := r.Locate(gctx, ids[:k])
			if err != nil {
				return errNotData(p, err)
			}
			if len(places) != k {
				return fmt.Errorf("%w: %s: %d places for %d chunks", ErrDamage, p, len(places), k)
			}
			for _, pl := range places {
				select {
				case chunks <- restoreChunk{f: rf, place: pl, off: off}:
				case <-gctx.Done():
					return gctx.Err()
				}
				off += uint64(pl.Size)
			}
			ids = ids[k:]
		}
		if off != n.Size {
			return fmt.Errorf("%w: %s: content is %d bytes, the snapshot says %d", ErrDamage, p, off, n.Size)
		}
		return nil
	}
	// Creating a file costs the kernel more than writing a small one (a
	// quarter of a millisecond on the 2-core VM of docs/benchmarks.md), so
	// the walker hands files to creators on every core, which create them
	// and queue their chunks; it makes the folders itself, before their
	// files.
	files := make(chan restoreFile, 64)
	var creators sync.WaitGroup
	for i := 0; i < 2*runtime.GOMAXPROCS(0); i++ {
		creators.Add(1)
		g.Go(func() error {
			defer creators.Done()
			for f := range files {
				if err := startFile(f.path, f.node); err != nil {
					return err
				}
			}
			return nil
		})
	}
	var dirs []restoreDir
	var links []restoreFile
	// linked holds the files of several names restored by the walk: a hard
	// link's first name must be one of them (or, outside the includes, a
	// file found in the snapshot), so a link never leads out of target,
	// whatever the trees say.
	linked := map[string]bool{}
	// One walker for every front end (treeWalker): it keeps to the tree
	// limits, so a snapshot whose folders repeat shared subtrees stops with
	// one sentence instead of filling the target without end.
	w := &treeWalker{r: r, s: s, checkAfter: restoreCheckAfter, visit: func(rel string, n *tree.Node) (bool, error) {
		in, need := selected(includes, rel)
		if !in && !need {
			return false, nil
		}
		p := filepath.Join(target, filepath.FromSlash(rel))
		switch n.Type {
		case tree.Dir:
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return false, fmt.Errorf("create folder: %w", err)
			}
			// Applied at the end in reverse, so deepest first.
			dirs = append(dirs, restoreDir{path: p, node: n})
			return true, nil
		case tree.File:
			if !in {
				return false, nil
			}
			if n.Links > 1 {
				linked[rel] = true
			}
			select {
			case files <- restoreFile{path: p, node: n}:
			case <-gctx.Done():
				return false, gctx.Err()
			}
		case tree.Hardlink:
			if in {
				links = append(links, restoreFile{path: p, node: n})
			}
		default:
			if !in {
				return false, nil
			}
			_ = os.Remove(p)
			if err := fsmeta.Create(p, n); err != nil {
				if errors.Is(err, fsmeta.ErrSkipped) || errors.Is(err, fsmeta.ErrNeedRoot) {
					warn(p, err)
					return false, nil
				}
				return false, fmt.Errorf("create %s: %w", p, err)
			}
			if err := fsmeta.Apply(p, n, applyOpts); err != nil {
				warn(p, err)
			}
			st.Other++
		}
		return false, nil
	}}
	g.Go(func() error {
		defer close(files)
		return w.walk(gctx, rootID, "")
	})
	g.Go(func() error {
		creators.Wait()
		close(chunks)
		return nil
	})
	if err := g.Wait(); err != nil {
		for _, f := range opened {
			f.fd.Close() // a finished file is closed already; that error is moot
		}
		return st, fmt.Errorf("restore snapshot %s: %w", s.ID[:8], err)
	}
	if err := restoreLinks(ctx, r, s, target, links, linked, prog, applyOpts, warn, st); err != nil {
		return st, err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := fsmeta.Apply(dirs[i].path, dirs[i].node, applyOpts); err != nil {
			warn(dirs[i].path, err)
		}
		st.Dirs++
	}
	return st, nil
}

// restoreLinks makes the hard links, last, once every file is in place. A
// link whose first name was not restored (outside the includes) gets the
// content itself, and the other names of the inode link to it.
func restoreLinks(ctx context.Context, r SnapshotReader, s *Snapshot, target string, links []restoreFile, linked map[string]bool,
	prog *Progress, applyOpts fsmeta.ApplyOptions, warn func(string, error), st *RestoreStats) error {
	restored := map[string]string{} // LinkTarget → path restored for that inode
	for _, l := range links {
		first, ok := restored[l.node.LinkTarget]
		if !ok {
			first = filepath.Join(target, filepath.FromSlash(l.node.LinkTarget))
			if !linked[l.node.LinkTarget] {
				n, _, err := lookupIn(ctx, r, s, l.node.LinkTarget)
				if err != nil || n == nil || n.Type != tree.File {
					return fmt.Errorf("restore hard link %s: its first name %s is not a file in the snapshot", l.path, l.node.LinkTarget)
				}
				sz, err := restoreWhole(ctx, r, l.path, n, prog)
				if err != nil {
					return err
				}
				if err := fsmeta.Apply(l.path, n, applyOpts); err != nil {
					warn(l.path, err)
				}
				restored[l.node.LinkTarget] = l.path
				st.Files++
				st.Bytes += sz
				continue
			}
			restored[l.node.LinkTarget] = first
		}
		_ = os.Remove(l.path)
		if err := os.Link(first, l.path); err != nil {
			return fmt.Errorf("restore hard link %s: %w", l.path, err)
		}
		st.Files++
	}
	return nil
}

// restoreCheckAfter is the entries after which a restore's walk may check
// the shape of the snapshot's tree (treeWalker.checkAfter): each entry
// costs a file or folder on the target.
const restoreCheckAfter = 1 << 12

// Limits of a restore read group: blobs of one pack, at most restoreGap
// bytes apart, spanning at most restoreSpan bytes; a batch sorts up to
// restoreBatch chunks before grouping them.
const (
	restoreGap   = 64 << 10
	restoreSpan  = 4 << 20
	restoreBatch = 512
)

// batchChunks reads chunks until in is closed, sorts each batch by pack and
// offset, and sends groups of nearby blobs of one pack to out.
func batchChunks(ctx context.Context, in <-chan restoreChunk, out chan<- []restoreChunk) error {
	var batch []restoreChunk
	flush := func() error {
		slices.SortFunc(batch, func(a, b restoreChunk) int {
			if c := bytes.Compare(a.place.Pack[:], b.place.Pack[:]); c != 0 {
				return c
			}
			return cmp.Compare(a.place.Offset, b.place.Offset)
		})
		for len(batch) > 0 {
			n := 1
			start := batch[0].place.Offset
			end := start + batch[0].place.Length
			for n < len(batch) {
				c := batch[n]
				if c.place.Pack != batch[0].place.Pack || c.place.Offset > end+restoreGap || c.place.Offset+c.place.Length-start > restoreSpan {
					break
				}
				end = max(end, c.place.Offset+c.place.Length)
				n++
			}
			select {
			case out <- batch[:n:n]:
			case <-ctx.Done():
				return ctx.Err()
			}
			batch = batch[n:]
		}
		batch = nil
		return nil
	}
	for c := range in {
		batch = append(batch, c)
		if len(batch) >= restoreBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// restoreGroup reads a group of chunks through r and hands each one to
// wrote.
func restoreGroup(ctx context.Context, r SnapshotReader, grp []restoreChunk, wrote func(restoreChunk, []byte) error) error {
	places := make([]BlobPlace, len(grp))
	for i, c := range grp {
		places[i] = c.place
	}
	next := 0
	var werr error
	err := r.ReadGroup(ctx, places, func(i int, data []byte) error {
		if i < 0 || i >= len(grp) {
			return fmt.Errorf("%w: a reader gave blob %d of a group of %d", ErrDamage, i, len(grp))
		}
		next = i + 1
		if err := wrote(grp[i], data); err != nil {
			werr = err
			return err
		}
		return nil
	})
	if werr != nil {
		return werr
	}
	if err != nil {
		return errNotData(grp[min(next, len(grp)-1)].f.path, err)
	}
	return nil
}

// openFile is a file being restored; its chunks are written concurrently.
type openFile struct {
	fd   *os.File
	path string
	node *tree.Node
	left atomic.Int32 // chunks not yet written
}

// finish truncates the file to its size (holes at the end stay holes),
// closes it and applies its metadata.
func (f *openFile) finish(opts fsmeta.ApplyOptions, warn func(string, error)) error {
	if err := f.fd.Truncate(int64(f.node.Size)); err != nil {
		f.fd.Close()
		return fmt.Errorf("restore %s: %w", f.path, err)
	}
	if err := f.fd.Close(); err != nil {
		return fmt.Errorf("restore %s: %w", f.path, err)
	}
	if err := fsmeta.Apply(f.path, f.node, opts); err != nil {
		warn(f.path, err)
	}
	return nil
}

type restoreChunk struct {
	f     *openFile
	place BlobPlace
	off   uint64
}

// selected reports whether rel is included (in) or is a folder on the way to
// an included path (need).
func selected(includes []string, rel string) (in, need bool) {
	if len(includes) == 0 {
		return true, false
	}
	for _, inc := range includes {
		if inc == "" || rel == inc || strings.HasPrefix(rel, inc+"/") {
			return true, false
		}
		if strings.HasPrefix(inc, rel+"/") {
			need = true
		}
	}
	return false, need
}

// restoreWhole writes one file's content through r, leaving holes
// unwritten so sparse files stay sparse. It returns the bytes written.
func restoreWhole(ctx context.Context, r SnapshotReader, p string, n *tree.Node, prog *Progress) (int64, error) {
	_ = os.Remove(p) // never write through an existing link
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("create file: %w", err)
	}
	var off uint64
	err = readContent(ctx, r, n, func(data []byte) error {
		if off+uint64(len(data)) > n.Size {
			return fmt.Errorf("%w: %s: content is more than the %d bytes the snapshot says", ErrDamage, p, n.Size)
		}
		if err := writeSparse(f, data, off, n.Holes); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		off += uint64(len(data))
		prog.Bytes.Add(int64(len(data)))
		return nil
	})
	if err != nil {
		f.Close()
		return 0, errNotData(p, err)
	}
	if off != n.Size {
		f.Close()
		return 0, fmt.Errorf("%w: %s: content is %d bytes, the snapshot says %d", ErrDamage, p, off, n.Size)
	}
	if err := f.Truncate(int64(n.Size)); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	prog.Files.Add(1)
	return int64(off), nil
}

// writeSparse writes data at off, skipping the parts that fall in holes.
func writeSparse(f *os.File, data []byte, off uint64, holes []tree.Extent) error {
	end := off + uint64(len(data))
	pos := off
	for _, h := range holes {
		hEnd := h.Off + h.Len
		if hEnd <= pos || h.Off >= end {
			continue
		}
		if h.Off > pos {
			if _, err := f.WriteAt(data[pos-off:h.Off-off], int64(pos)); err != nil {
				return err
			}
		}
		pos = min(hEnd, end)
	}
	if pos < end {
		_, err := f.WriteAt(data[pos-off:], int64(pos))
		return err
	}
	return nil
}

// Entry is one node of a snapshot listing.
type Entry struct {
	Path   string    `json:"path"` // "/"-separated, from the snapshot root, with a leading "/"
	Name   string    `json:"name"`
	Type   string    `json:"type"`
	Mode   uint32    `json:"mode"`
	Size   uint64    `json:"size"`
	MTime  time.Time `json:"mtime"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	Target string    `json:"link_target,omitempty"`
}

// List calls fn for every node at or below dir ("/" for everything) in the
// snapshot, in depth-first order with folders before their entries. The
// walk keeps to the tree limits (ErrTreeLimit, see treeWalker): a snapshot
// whose folders repeat shared subtrees into more than MaxSnapshotNodes
// entries stops with one sentence instead of listing without end.
func (t *Tenant) List(ctx context.Context, s *Snapshot, dir string, fn func(Entry) error) error {
	n, rel, err := t.lookup(ctx, s, dir)
	if err != nil {
		return err
	}
	var rootID tree.ID
	if n != nil {
		if err := fn(entry(rel, n)); err != nil {
			return err
		}
		if n.Type != tree.Dir {
			return nil
		}
		rootID = n.Subtree
	} else if rootID, err = parseTreeID(s.Tree); err != nil {
		return err
	}
	w := &treeWalker{r: t.Reader(), s: s, visit: func(r string, c *tree.Node) (bool, error) {
		return true, fn(entry(r, c))
	}}
	return w.walk(ctx, rootID, rel)
}

func entry(rel string, n *tree.Node) Entry {
	return Entry{
		Path: "/" + rel, Name: n.Name, Type: n.Type.String(), Mode: n.Mode, Size: n.Size,
		MTime: time.Unix(0, n.MTime), UID: n.UID, GID: n.GID, Target: n.LinkTarget,
	}
}

// lookup finds the node at p in the snapshot; for the root it returns nil.
func (t *Tenant) lookup(ctx context.Context, s *Snapshot, p string) (*tree.Node, string, error) {
	return lookupIn(ctx, t.Reader(), s, p)
}

// Dump writes the content of the file at p in snapshot s to w. It is
// audited before the first byte is written ("dump", detail "snapshot=ID
// bytes=SIZE"): if that entry cannot be written, nothing is, and a process
// that dies while writing (a reader that closed the pipe: SIGPIPE) has left
// its entry. A dump that fails after the entry, or whose reader closed the
// output early, gets a second entry with its outcome and the bytes written.
func (t *Tenant) Dump(ctx context.Context, s *Snapshot, p string, w io.Writer) error {
	n, err := t.dumpNode(ctx, s, p)
	if err != nil {
		return t.e.audited(ctx, "dump", t.id, "snapshot="+s.ID, err)
	}
	if err := t.e.logAudit(ctx, "dump", t.id, nil, fmt.Sprintf("snapshot=%s bytes=%d", s.ID, n.Size)); err != nil {
		return fmt.Errorf("nothing was written, as the audit entry of the dump could not be written: %w", err)
	}
	written, err := t.dumpContent(ctx, n, w)
	if err != nil {
		if aerr := t.e.logAudit(context.WithoutCancel(ctx), "dump", t.id, err, fmt.Sprintf("snapshot=%s bytes=%d", s.ID, written)); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}
	return err
}

// dumpNode finds the file at p in s (following a hard link).
func (t *Tenant) dumpNode(ctx context.Context, s *Snapshot, p string) (*tree.Node, error) {
	return fileNode(ctx, t.Reader(), s, p)
}

// fileNode finds the file at p in s through r (following a hard link).
func fileNode(ctx context.Context, r SnapshotReader, s *Snapshot, p string) (*tree.Node, error) {
	n, _, err := lookupIn(ctx, r, s, p)
	if err != nil {
		return nil, err
	}
	if n != nil && n.Type == tree.Hardlink {
		n, _, err = lookupIn(ctx, r, s, n.LinkTarget)
		if err != nil {
			return nil, err
		}
	}
	if n == nil || n.Type != tree.File {
		return nil, invalidf("%s in snapshot %s is not a file", shortPath(p, 200), s.ID[:8])
	}
	return n, nil
}

// dumpContent writes n's content to w and returns the bytes written: read
// through the tenant's reader in groups of nearby blobs (copyContent).
func (t *Tenant) dumpContent(ctx context.Context, n *tree.Node, w io.Writer) (int64, error) {
	return dumpTo(ctx, t.Reader(), n, w)
}

// dumpTo is copyContent with a broken pipe said in one sentence.
func dumpTo(ctx context.Context, r SnapshotReader, n *tree.Node, w io.Writer) (int64, error) {
	written, err := copyContent(ctx, r, n.Name, n, w)
	if errors.Is(err, syscall.EPIPE) {
		return written, fmt.Errorf("write output: the reader closed it after %d of %d bytes", written, n.Size)
	}
	return written, err
}

// DumpFrom writes the content of the file at p in snapshot s, read
// through r, to w (a hard link's content is its first name's), and
// returns the bytes written: Tenant.Dump without the audit, for a remote
// reader. A path that is not a file is an error wrapping ErrInvalid.
func DumpFrom(ctx context.Context, r SnapshotReader, s *Snapshot, p string, w io.Writer) (int64, error) {
	n, err := fileNode(ctx, r, s, p)
	if err != nil {
		return 0, err
	}
	return dumpTo(ctx, r, n, w)
}
