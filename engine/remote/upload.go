package remote

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"coffer/chunk"
	"coffer/engine"
	"coffer/engine/fsmeta"
	"coffer/engine/source"
	"coffer/engine/tree"
)

// BackupOptions configure a remote backup: the local backup's options
// (Host "" is this machine's name, as locally).
type BackupOptions = engine.BackupOptions

// Upload batching: blobs are queued until batchTarget bytes, then the
// server is asked which it lacks and those are sent in puts of at most
// batchTarget bytes each (one blob larger than that goes alone). The client
// holds at most about two batches and one chunk buffer in memory.
const batchTarget = 8 << 20

// maxKnown bounds the client's set of blob IDs the server has (about 80
// bytes each).
const maxKnown = 1 << 20

// Backup backs up paths through the server into a new snapshot of the key's
// tenant. It walks and chunks locally with the tenant's chunker polynomial
// and ID key (given by the server), skips files unchanged since the parent
// snapshot (same host and paths) without reading them, sends only the blobs
// the server lacks, and commits. Nothing is recorded unless the commit
// succeeds; after a failure, a rerun sends only what the server still
// lacks. Files that cannot be read are left out and the error wraps
// engine.ErrPartialBackup, with the snapshot returned. The connection is
// held for the whole backup; ctx ending closes it.
func (cl *Client) Backup(ctx context.Context, paths []string, o BackupOptions) (*engine.Snapshot, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: nothing to back up: give at least one path", engine.ErrInvalid)
	}
	var abs []string
	for _, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		if _, err := os.Lstat(a); err != nil {
			return nil, fmt.Errorf("%w: cannot back up %s: %v", engine.ErrInvalid, p, errors.Unwrap(err))
		}
		abs = append(abs, a)
	}
	for _, pat := range o.Excludes {
		if _, err := filepath.Match(pat, ""); err != nil {
			return nil, fmt.Errorf("%w: exclude pattern %q: %v", engine.ErrInvalid, pat, err)
		}
	}
	abs = source.DropNested(abs)
	return cl.backup(ctx, abs, o, func(w *walker) (tree.Node, error) { return w.walkRoot(abs) })
}

// BackupStream backs up one stream (for example standard input) as a file
// called name in the snapshot's root, as engine.Tenant.BackupStream does.
func (cl *Client) BackupStream(ctx context.Context, r io.Reader, name string, o BackupOptions) (*engine.Snapshot, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("%w: stdin file name %q must be a plain file name", engine.ErrInvalid, name)
	}
	o.NoParent = true // nothing to compare a stream with
	return cl.backup(ctx, []string{"/" + name}, o, func(w *walker) (tree.Node, error) {
		now := time.Now().UnixNano()
		n := tree.Node{Name: name, Type: tree.File, Mode: 0o644, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), MTime: now, CTime: now}
		if err := w.readFile(&n, name, r); err != nil {
			return tree.Node{}, err
		}
		root := tree.Node{Type: tree.Dir, Mode: 0o755, MTime: now, CTime: now}
		return w.finishDir(root, []tree.Node{n})
	})
}

func (cl *Client) backup(ctx context.Context, paths []string, o BackupOptions, walk func(*walker) (tree.Node, error)) (*engine.Snapshot, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { cl.c.Close() })
	defer stop()
	start := time.Now()
	if o.Time.IsZero() {
		o.Time = start
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if o.Progress == nil {
		o.Progress = &engine.Progress{}
	}
	w := &walker{cl: cl, ctx: ctx, o: o, hardlinks: map[devIno]string{}, known: map[[32]byte]struct{}{}}
	parent, err := w.findParent(paths)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if err := w.begin(); err != nil {
		return nil, ctxErr(ctx, err)
	}
	root, err := walk(w)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	desc := &engine.Snapshot{
		Time: o.Time, Host: o.Host, Paths: paths, Tags: o.Tags, Excludes: o.Excludes,
		Tree: fmt.Sprintf("%x", root.Subtree[:]), Program: engine.ProgramVersion,
		Stats: engine.SnapshotStats{
			Start: start, End: time.Now(), Files: w.files, Dirs: w.dirs, Bytes: w.bytes,
			FilesUnchanged: w.unchangedN, FilesFailed: int64(len(w.warnings)),
		},
	}
	if u, err := user.Current(); err == nil {
		desc.Username = u.Username
	}
	if parent != nil {
		desc.Parent = parent.ID
	}
	s, err := w.commit(desc)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if n := len(w.warnings); n > 0 {
		return s, fmt.Errorf("%w: %d of them (first: %s); snapshot %s was saved without them", engine.ErrPartialBackup, n, w.warnings[0], s.ID[:min(8, len(s.ID))])
	}
	return s, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

type devIno struct{ dev, ino uint64 }

// walker is one remote backup on the client: a sequential walk that builds
// trees bottom-up and queues blobs for upload. Not safe for concurrent use.
type walker struct {
	cl  *Client
	ctx context.Context
	o   BackupOptions

	hasher *chunk.Hasher
	pol    chunk.Pol

	parent      *engine.Snapshot
	parentStart int64      // ns; files modified since the parent started are re-read
	parentRoot  *tree.Tree // nil: no parent

	hardlinks map[devIno]string

	queue  []putBlob             // blobs not yet offered to the server, in order
	queued int                   // bytes in queue
	known  map[[32]byte]struct{} // blobs the server has or was sent this session (32 bytes per blob)
	buf    []byte                // chunk buffer
	ch     *chunk.Chunker
	pay    []byte // put payload buffer

	files, dirs, bytes, unchangedN int64
	warnings                       []string
}

// findParent finds the newest snapshot of the same host and paths and loads
// its root tree.
func (w *walker) findParent(paths []string) (*engine.Snapshot, error) {
	if w.o.NoParent {
		return nil, nil
	}
	all, err := w.cl.snapshots(w.ctx)
	if err != nil {
		return nil, err
	}
	want := slices.Clone(paths)
	sort.Strings(want)
	for i := len(all) - 1; i >= 0; i-- {
		s := all[i]
		got := slices.Clone(s.Paths)
		sort.Strings(got)
		if s.Host == w.o.Host && slices.Equal(got, want) {
			w.parent = s
			return s, nil
		}
	}
	return nil, nil
}

// begin opens the server's ingest session and loads the parent's root tree.
func (w *walker) begin() error {
	cl := w.cl
	if err := cl.send(w.ctx, request{Op: opBegin}); err != nil {
		return err
	}
	var r response
	if _, err := cl.next(&r); err != nil {
		return err
	}
	if r.Kind != kindParams || len(r.IDKey) != 32 {
		return fmt.Errorf("%w: unexpected %q frame", ErrProtocol, r.Kind)
	}
	var key [32]byte
	copy(key[:], r.IDKey)
	w.hasher = chunk.NewHasher(key)
	w.pol = chunk.Pol(r.Pol)
	if err := cl.expectEnd(); err != nil {
		return err
	}
	if w.parent != nil {
		if id, err := parseID(w.parent.Tree); err == nil {
			w.parentRoot = w.loadTree(id)
		}
		if w.parentRoot != nil {
			w.parentStart = w.parent.Stats.Start.UnixNano()
		}
	}
	return nil
}

func parseID(s string) (tree.ID, error) {
	var id tree.ID
	if len(s) != 64 {
		return id, ErrProtocol
	}
	_, err := hex.Decode(id[:], []byte(s))
	return id, err
}

func (cl *Client) expectEnd() error {
	var r response
	if _, err := cl.next(&r); err != nil {
		return err
	}
	if r.Kind != kindEnd {
		return fmt.Errorf("%w: unexpected %q frame", ErrProtocol, r.Kind)
	}
	return nil
}

// loadTree fetches and decodes one of the tenant's trees, or returns nil:
// a missing or damaged parent tree only costs re-reading files.
func (w *walker) loadTree(id tree.ID) *tree.Tree {
	cl := w.cl
	if err := cl.send(w.ctx, request{Op: opTree, ID: fmt.Sprintf("%x", id[:])}); err != nil {
		return nil
	}
	var data []byte
	for {
		var r response
		body, err := cl.next(&r)
		if err != nil {
			return nil
		}
		if r.Kind == kindEnd {
			break
		}
		if r.Kind != kindData || len(data)+len(body) > 64<<20 {
			cl.c.Close()
			return nil
		}
		data = append(data, body...)
	}
	if tree.ID(w.hasher.Sum(data)) != id {
		return nil
	}
	t, err := tree.Decode(data)
	if err != nil {
		return nil
	}
	return t
}

// walkRoot returns the root folder's node; its Subtree is the snapshot's
// tree. Backed-up paths keep their absolute location, as in a local backup.
func (w *walker) walkRoot(paths []string) (tree.Node, error) {
	root := source.Roots(paths)
	if root.Target {
		n, _, err := fsmeta.Stat("/")
		if err != nil {
			return tree.Node{}, fmt.Errorf("stat /: %w", err)
		}
		return w.walkDir("/", "", n, w.parentRoot)
	}
	return w.walkVirtual(root, "/", "", w.parentRoot)
}

func (w *walker) walkVirtual(v *source.Dir, abs, rel string, own *tree.Tree) (tree.Node, error) {
	n, _, err := fsmeta.Stat(abs)
	if err != nil {
		return tree.Node{}, fmt.Errorf("stat %s: %w", abs, err)
	}
	if n.Type != tree.Dir {
		fi, err := os.Stat(abs)
		if err != nil || !fi.IsDir() {
			return tree.Node{}, fmt.Errorf("%w: %s is not a folder", engine.ErrInvalid, abs)
		}
		n = tree.Node{Type: tree.Dir, Mode: uint32(fi.Mode().Perm()), UID: n.UID, GID: n.GID, User: n.User, Group: n.Group, MTime: fi.ModTime().UnixNano(), CTime: n.CTime}
	}
	n.Name = filepath.Base(abs)
	var nodes []tree.Node
	for _, name := range v.Names() {
		cabs, crel := filepath.Join(abs, name), source.JoinRel(rel, name)
		var c tree.Node
		var skip bool
		if v.Children[name].Target {
			c, skip, err = w.walkPath(cabs, crel, own)
		} else {
			c, err = w.walkVirtual(v.Children[name], cabs, crel, w.subtree(own, name))
		}
		if err != nil {
			return tree.Node{}, err
		}
		if !skip {
			nodes = append(nodes, c)
		}
	}
	return w.finishDir(n, nodes)
}

func (w *walker) subtree(parent *tree.Tree, name string) *tree.Tree {
	if parent == nil {
		return nil
	}
	n := parent.Find(name)
	if n == nil || n.Type != tree.Dir {
		return nil
	}
	return w.loadTree(n.Subtree)
}

func (w *walker) warn(path string, err error) {
	if u := errors.Unwrap(err); u != nil {
		err = u
	}
	w.warnings = append(w.warnings, fmt.Sprintf("%s: %v", path, err))
	w.o.Progress.Errors.Add(1)
}

// walkPath handles one real file-system entry; skip means it could not be
// read and is left out. An error is fatal (the connection failed).
func (w *walker) walkPath(abs, rel string, parent *tree.Tree) (tree.Node, bool, error) {
	if err := w.ctx.Err(); err != nil {
		return tree.Node{}, false, err
	}
	n, info, err := fsmeta.Stat(abs)
	if err != nil {
		w.warn(abs, err)
		return n, true, nil
	}
	n.Name = filepath.Base(abs)
	var prev *tree.Node
	if parent != nil {
		prev = parent.Find(n.Name)
	}
	switch n.Type {
	case tree.Dir:
		var pt *tree.Tree
		if prev != nil && prev.Type == tree.Dir {
			pt = w.loadTree(prev.Subtree)
		}
		n, err := w.walkDir(abs, rel, n, pt)
		return n, false, err
	case tree.File:
		if n.Links > 1 {
			key := devIno{info.Dev, n.Inode}
			if first, ok := w.hardlinks[key]; ok {
				n.MakeHardlink(first)
				w.files++
				w.o.Progress.Files.Add(1)
				return n, false, nil
			}
			w.hardlinks[key] = rel
		}
		if source.Unchanged(&n, prev, w.parentStart) {
			n.Content = prev.Content
			w.files++
			w.unchangedN++
			w.bytes += int64(n.Size)
			w.o.Progress.Files.Add(1)
			w.o.Progress.Bytes.Add(int64(n.Size))
			return n, false, nil
		}
		fd, err := os.OpenFile(abs, os.O_RDONLY|unix.O_NOATIME, 0)
		if errors.Is(err, os.ErrPermission) {
			fd, err = os.Open(abs) // O_NOATIME needs ownership
		}
		if err != nil {
			w.warn(abs, err)
			return n, true, nil
		}
		defer fd.Close()
		if err := w.readFile(&n, abs, fd); err != nil {
			var rerr *readError
			if errors.As(err, &rerr) {
				w.warn(abs, rerr.err)
				return n, true, nil
			}
			return n, false, err
		}
		return n, false, nil
	default:
		return n, false, nil
	}
}

func (w *walker) walkDir(abs, rel string, n tree.Node, parentTree *tree.Tree) (tree.Node, error) {
	d, err := os.Open(abs)
	var names []string
	if err == nil {
		names, err = d.Readdirnames(-1)
		d.Close()
	}
	if err != nil {
		w.warn(abs, err)
	}
	sort.Strings(names)
	var nodes []tree.Node
	for _, name := range names {
		p := filepath.Join(abs, name)
		if source.Excluded(w.o.Excludes, p) {
			continue
		}
		c, skip, err := w.walkPath(p, source.JoinRel(rel, name), parentTree)
		if err != nil {
			return tree.Node{}, err
		}
		if !skip {
			nodes = append(nodes, c)
		}
	}
	return w.finishDir(n, nodes)
}

// finishDir encodes a folder's tree, queues it and sets n.Subtree.
func (w *walker) finishDir(n tree.Node, nodes []tree.Node) (tree.Node, error) {
	var b tree.Builder
	for _, c := range nodes {
		b.Add(c)
	}
	t, err := b.Tree()
	if err != nil {
		return tree.Node{}, fmt.Errorf("tree of %q: %w", n.Name, err)
	}
	enc, err := t.Encode()
	if err != nil {
		return tree.Node{}, fmt.Errorf("tree of %q: %w", n.Name, err)
	}
	id := w.hasher.Sum(enc)
	if err := w.add(engine.TreeBlob, id, enc); err != nil {
		return tree.Node{}, err
	}
	n.Subtree = tree.ID(id)
	w.dirs++
	return n, nil
}

// readError is a failure to read the source file (a warning, not fatal).
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }

// readFile chunks r into n's content and queues its chunks.
func (w *walker) readFile(n *tree.Node, path string, r io.Reader) error {
	if w.ch == nil {
		w.ch = chunk.New(r, w.pol)
		w.buf = make([]byte, chunk.MaxSize)
	} else {
		w.ch.Reset(r, w.pol)
	}
	var ids []tree.ID
	var size uint64
	for {
		data, err := w.ch.Next(w.buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return &readError{err}
		}
		id := w.hasher.Sum(data)
		ids = append(ids, tree.ID(id))
		size += uint64(len(data))
		w.o.Progress.Bytes.Add(int64(len(data)))
		if err := w.add(engine.DataBlob, id, data); err != nil {
			return err
		}
	}
	n.Content, n.Size = ids, size
	n.Holes = source.ClipHoles(n.Holes, size)
	w.files++
	w.bytes += int64(size)
	w.o.Progress.Files.Add(1)
	return nil
}

// add queues a copy of a blob, unless the server already has it, and
// flushes the queue when it is full.
func (w *walker) add(typ engine.BlobType, id [32]byte, data []byte) error {
	if _, ok := w.known[id]; ok {
		return nil
	}
	if len(w.known) >= maxKnown {
		// Bounded memory: forgetting only costs asking the server again.
		clear(w.known)
	}
	w.known[id] = struct{}{} // a later copy in the same queue is not queued again
	w.queue = append(w.queue, putBlob{typ: typ, id: id, data: slices.Clone(data)})
	w.queued += len(data)
	if w.queued >= batchTarget {
		return w.flush()
	}
	return nil
}

// flush asks the server which queued blobs it lacks and sends those, in
// queue order (trees after the blobs they reference).
func (w *walker) flush() error {
	if len(w.queue) == 0 {
		return nil
	}
	have, err := w.have(w.queue)
	if err != nil {
		return err
	}
	var batch []putBlob
	size := 4 // the payload's count
	for i, b := range w.queue {
		if have[i] {
			continue
		}
		// A full batch fills its padded size exactly, table included.
		if len(batch) > 0 && size+putEntryLen+len(b.data) > batchTarget {
			if err := w.put(batch); err != nil {
				return err
			}
			batch, size = batch[:0], 4
		}
		batch = append(batch, b)
		size += putEntryLen + len(b.data)
	}
	if len(batch) > 0 {
		if err := w.put(batch); err != nil {
			return err
		}
	}
	clear(w.queue)
	w.queue, w.queued = w.queue[:0], 0
	return nil
}

// have asks the server which blobs it has.
func (w *walker) have(blobs []putBlob) ([]bool, error) {
	cl := w.cl
	out := make([]bool, 0, len(blobs))
	for len(blobs) > 0 {
		n := min(len(blobs), maxHaveIDs)
		body := make([]byte, 0, 32*n)
		for _, b := range blobs[:n] {
			body = append(body, b.id[:]...)
		}
		if err := cl.sendBody(w.ctx, request{Op: opHave}, body); err != nil {
			return nil, err
		}
		var r response
		bits, err := cl.next(&r)
		if err != nil {
			return nil, err
		}
		if r.Kind != kindHave || len(bits) != (n+7)/8 {
			return nil, fmt.Errorf("%w: unexpected %q frame", ErrProtocol, r.Kind)
		}
		if err := cl.expectEnd(); err != nil {
			return nil, err
		}
		for i := 0; i < n; i++ {
			out = append(out, bits[i/8]&(1<<(i%8)) != 0)
		}
		blobs = blobs[n:]
	}
	return out, nil
}

// put sends one batch of blobs, padded to its size class.
func (w *walker) put(blobs []putBlob) error {
	cl := w.cl
	w.pay = appendPutPayload(w.pay, blobs)
	frames := (len(w.pay) + MaxBody - 1) / MaxBody
	if frames > maxPutFrames {
		return fmt.Errorf("%w: a blob of %d bytes is too large to upload", engine.ErrInvalid, len(w.pay))
	}
	if dl, ok := w.ctx.Deadline(); ok {
		cl.c.SetDeadline(dl)
	}
	if err := writeFrame(cl.bw, request{Op: opPut, Frames: frames}, nil); err != nil {
		return err
	}
	for p := w.pay; len(p) > 0; {
		c := min(len(p), MaxBody)
		if err := writeFrame(cl.bw, request{Op: kindData}, p[:c]); err != nil {
			return err
		}
		p = p[c:]
	}
	if err := cl.bw.Flush(); err != nil {
		return err
	}
	if cap(w.pay) > 2*batchTarget+MaxBody {
		w.pay = nil // a rare large tree: do not keep its buffer
	}
	return cl.expectEnd()
}

// commit records the snapshot.
func (w *walker) commit(desc *engine.Snapshot) (*engine.Snapshot, error) {
	cl := w.cl
	if err := cl.send(w.ctx, request{Op: opCommit, Commit: desc}); err != nil {
		return nil, err
	}
	var r response
	if _, err := cl.next(&r); err != nil {
		return nil, err
	}
	if r.Kind != kindSnapshots || r.Snapshot == nil {
		return nil, fmt.Errorf("%w: unexpected %q frame", ErrProtocol, r.Kind)
	}
	if err := cl.expectEnd(); err != nil {
		return nil, err
	}
	return r.Snapshot, nil
}
