package remote

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"sync"
	"time"

	"coffer/chunk"
	"coffer/engine"
	"coffer/engine/tree"
	"coffer/engine/walk"
)

// BackupOptions configure a remote backup: the local backup's options
// (Host "" is this machine's name, as locally).
type BackupOptions = engine.BackupOptions

// Upload batching: blobs are queued until batchTarget bytes, then the
// server is asked which it lacks and those are sent in puts of at most
// batchTarget bytes each (one blob larger than that goes alone). The client
// holds at most about two batches (one being sent, one waiting for it),
// the put payload of the one being sent, and one chunk buffer per file
// worker in memory.
const batchTarget = 8 << 20

// maxKnown bounds the client's set of blob IDs the server has (about 80
// bytes each).
const maxKnown = 1 << 20

// Backup backs up paths through the server into a new snapshot of the key's
// tenant. It walks with the local backup's walker (engine/walk), chunks
// locally with the tenant's chunker polynomial and ID key (given by the
// server), skips files unchanged since the parent snapshot (same host and
// paths) without reading them, sends only the blobs the server lacks, and
// commits. Nothing is recorded unless the commit succeeds; after a
// failure, a rerun sends only what the server still lacks. Files that
// cannot be read are left out and the error wraps engine.ErrPartialBackup,
// with the snapshot returned. The connection is held for the whole backup;
// ctx ending closes it.
func (cl *Client) Backup(ctx context.Context, paths []string, o BackupOptions) (*engine.Snapshot, error) {
	abs, skipped, err := o.Sources(paths)
	if err != nil {
		return nil, err
	}
	return cl.backup(ctx, abs, o, func(ctx context.Context, u *uploader, wo walk.Options) (*walk.Result, error) {
		wo.Skipped = skipped
		return walk.Walk(ctx, abs, u, wo)
	})
}

// BackupStream backs up one stream (for example standard input) as a file
// called name in the snapshot's root, as engine.Tenant.BackupStream does.
func (cl *Client) BackupStream(ctx context.Context, r io.Reader, name string, o BackupOptions) (*engine.Snapshot, error) {
	if err := walk.CheckStreamName(name); err != nil {
		return nil, walkError(err)
	}
	o.NoParent = true // nothing to compare a stream with
	return cl.backup(ctx, []string{"/" + name}, o, func(ctx context.Context, u *uploader, wo walk.Options) (*walk.Result, error) {
		return walk.Stream(ctx, r, name, time.Now(), u, wo)
	})
}

// walkError gives an error of package walk about the source the engine's
// class for bad arguments.
func walkError(err error) error {
	if errors.Is(err, walk.ErrInvalid) {
		return fmt.Errorf("%w: %v", engine.ErrInvalid, err)
	}
	return err
}

// backup opens an ingest session, runs walkFn (which reads the source into
// the uploader) beside the upload goroutine, and commits the snapshot.
func (cl *Client) backup(ctx context.Context, paths []string, o BackupOptions,
	walkFn func(context.Context, *uploader, walk.Options) (*walk.Result, error)) (*engine.Snapshot, error) {
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
	u := &uploader{cl: cl, known: map[[32]byte]struct{}{}}
	parent, err := findParent(ctx, cl, o, paths)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if err := u.begin(ctx); err != nil {
		return nil, ctxErr(ctx, err)
	}
	wo := o.Rules()
	wo.Progress = o.Progress
	if parent != nil {
		if id, err := parseID(parent.Tree); err == nil {
			wo.Parent = u.LoadTree(ctx, id)
		}
		if wo.Parent != nil {
			wo.ParentStart = parent.Stats.Start.UnixNano()
		}
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	u.start(wctx, cancel)
	res, err := walkFn(wctx, u, wo)
	if err = u.finish(wctx, err); err != nil {
		return nil, ctxErr(ctx, walkError(err))
	}
	desc := &engine.Snapshot{
		Time: o.Time, Host: o.Host, Paths: paths, Tags: o.Tags, Excludes: o.Excludes,
		Tree: fmt.Sprintf("%x", res.Tree[:]), Program: engine.ProgramVersion,
		Stats: engine.SnapshotStats{
			Start: start, End: time.Now(), Files: res.Stats.Files, Dirs: res.Stats.Dirs, Bytes: res.Stats.Bytes,
			FilesUnchanged: res.Stats.Unchanged, FilesFailed: int64(len(res.Warnings)),
		},
	}
	if usr, err := user.Current(); err == nil {
		desc.Username = usr.Username
	}
	if parent != nil {
		desc.Parent = parent.ID
	}
	s, err := u.commit(ctx, desc)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if err := engine.NewPartialError(s.ID, res.Warnings); err != nil {
		return s, err
	}
	return s, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// findParent finds the newest snapshot of the same host and paths.
func findParent(ctx context.Context, cl *Client, o BackupOptions, paths []string) (*engine.Snapshot, error) {
	if o.NoParent {
		return nil, nil
	}
	all, err := cl.snapshots(ctx)
	if err != nil {
		return nil, err
	}
	return engine.ParentSnapshot(all, o.Host, paths), nil
}

// uploader is the storing side of one remote backup on the client: the
// walk.Sink of a remote backup. The file workers chunk and hash (fileReader)
// and the finisher hashes trees, and both queue blobs in the order they
// come; full queues go, in that order, to one upload goroutine, which asks
// the server which blobs it lacks and sends those. A tree is queued only
// after every blob it names (the walker's post-order), and batches are
// sent in queue order, so the server meets every blob before a tree that
// names it (docs/design.md chapter 15, "Backup over the wire").
type uploader struct {
	cl     *Client
	hasher *chunk.Hasher
	pol    chunk.Pol

	// connMu guards the connection's request and response stream while the
	// backup runs (cl.mu is held throughout): the upload goroutine and
	// LoadTree on the walker goroutine take turns. It also guards pay.
	connMu sync.Mutex
	pay    []byte // put payload buffer

	mu     sync.Mutex            // guards queue, queued and known, and the order of batches
	queue  []putBlob             // blobs not yet handed to the upload goroutine, in order
	queued int                   // bytes in queue
	known  map[[32]byte]struct{} // blobs the server has or was sent this session (32 bytes per blob)

	batches chan []putBlob // to the upload goroutine
	done    chan struct{}  // closed when the upload goroutine has ended
}

var _ walk.Sink = (*uploader)(nil)

// begin opens the server's ingest session.
func (u *uploader) begin(ctx context.Context) error {
	cl := u.cl
	if err := cl.send(ctx, request{Op: opBegin}); err != nil {
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
	u.hasher = chunk.NewHasher(key)
	u.pol = chunk.Pol(r.Pol)
	return cl.expectEnd()
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

// LoadTree fetches and decodes one of the tenant's trees, or returns nil:
// a missing or damaged parent tree only costs re-reading files
// (walk.Sink).
func (u *uploader) LoadTree(ctx context.Context, id tree.ID) *tree.Tree {
	u.connMu.Lock()
	defer u.connMu.Unlock()
	t, err := u.cl.fetchTree(ctx, u.hasher, id)
	if err != nil {
		return nil
	}
	return t
}

// PutTree hashes a folder's tree and queues it (walk.Sink).
func (u *uploader) PutTree(ctx context.Context, enc []byte) (tree.ID, error) {
	id := u.hasher.Sum(enc)
	return tree.ID(id), u.add(ctx, engine.TreeBlob, id, enc)
}

// NewReader returns a file worker's reader (walk.Sink).
func (u *uploader) NewReader() walk.FileReader { return &fileReader{u: u} }

// fileReader is one file worker's reusable chunker and chunk buffer.
type fileReader struct {
	u   *uploader
	ch  *chunk.Chunker
	buf []byte
}

// ReadFile chunks r into n's content and queues its chunks
// (walk.FileReader).
func (rd *fileReader) ReadFile(ctx context.Context, r io.Reader, n *tree.Node) error {
	u := rd.u
	if rd.ch == nil {
		rd.ch = chunk.New(r, u.pol)
	} else {
		rd.ch.Reset(r, u.pol)
	}
	var ids []tree.ID
	var size uint64
	for {
		data, err := rd.ch.NextTo(rd.buf[:0], nil)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		rd.buf = data // keep a grown buffer
		id := u.hasher.Sum(data)
		ids = append(ids, tree.ID(id))
		size += uint64(len(data))
		if err := u.add(ctx, engine.DataBlob, id, data); err != nil {
			return err
		}
	}
	n.Content, n.Size = ids, size
	return nil
}

// add queues a copy of a blob, unless the server already has it or it is
// queued already, and hands a full queue to the upload goroutine.
func (u *uploader) add(ctx context.Context, typ engine.BlobType, id [32]byte, data []byte) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.known[id]; ok {
		return nil
	}
	if len(u.known) >= maxKnown {
		// Bounded memory: forgetting only costs asking the server again.
		clear(u.known)
	}
	u.known[id] = struct{}{} // a later copy in the same queue is not queued again
	u.queue = append(u.queue, putBlob{typ: typ, id: id, data: slices.Clone(data)})
	u.queued += len(data)
	if u.queued < batchTarget {
		return nil
	}
	return u.handOn(ctx)
}

// handOn gives the queue to the upload goroutine, waiting while it sends
// the batch before. The caller holds u.mu, so batches go in queue order.
func (u *uploader) handOn(ctx context.Context) error {
	q := u.queue
	u.queue, u.queued = nil, 0
	select {
	case u.batches <- q:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// start starts the upload goroutine; an upload that fails ends ctx with
// cancel.
func (u *uploader) start(ctx context.Context, cancel context.CancelCauseFunc) {
	u.batches = make(chan []putBlob)
	u.done = make(chan struct{})
	go func() {
		defer close(u.done)
		for q := range u.batches {
			if ctx.Err() != nil {
				continue
			}
			if err := u.flush(ctx, q); err != nil {
				cancel(err)
			}
		}
	}()
}

// finish sends what is still queued once the walk ended with walkErr
// (nil: it succeeded), stops the upload goroutine and returns the first
// error of the walk or of the uploads.
func (u *uploader) finish(ctx context.Context, walkErr error) error {
	if walkErr == nil {
		u.mu.Lock()
		if len(u.queue) > 0 {
			walkErr = u.handOn(ctx)
		}
		u.mu.Unlock()
	}
	close(u.batches)
	<-u.done
	if walkErr != nil {
		return walkErr
	}
	return context.Cause(ctx)
}

// flush asks the server which of the blobs of q it lacks and sends those,
// in queue order (trees after the blobs they reference).
func (u *uploader) flush(ctx context.Context, q []putBlob) error {
	u.connMu.Lock()
	defer u.connMu.Unlock()
	have, err := u.have(ctx, q)
	if err != nil {
		return err
	}
	var batch []putBlob
	size := 4 // the payload's count
	for i, b := range q {
		if have[i] {
			continue
		}
		// A full batch fills its padded size exactly, table included.
		if len(batch) > 0 && size+putEntryLen+len(b.data) > batchTarget {
			if err := u.put(ctx, batch); err != nil {
				return err
			}
			batch, size = batch[:0], 4
		}
		batch = append(batch, b)
		size += putEntryLen + len(b.data)
	}
	if len(batch) > 0 {
		return u.put(ctx, batch)
	}
	return nil
}

// have asks the server which blobs it has. The caller holds u.connMu (or
// the connection alone).
func (u *uploader) have(ctx context.Context, blobs []putBlob) ([]bool, error) {
	cl := u.cl
	out := make([]bool, 0, len(blobs))
	for len(blobs) > 0 {
		n := min(len(blobs), maxHaveIDs)
		body := make([]byte, 0, 32*n)
		for _, b := range blobs[:n] {
			body = append(body, b.id[:]...)
		}
		if err := cl.sendBody(ctx, request{Op: opHave}, body); err != nil {
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

// put sends one batch of blobs, padded to its size class. The caller holds
// u.connMu (or the connection alone).
func (u *uploader) put(ctx context.Context, blobs []putBlob) error {
	cl := u.cl
	u.pay = appendPutPayload(u.pay, blobs)
	frames := (len(u.pay) + MaxBody - 1) / MaxBody
	if frames > maxPutFrames {
		return fmt.Errorf("%w: a blob of %d bytes is too large to upload", engine.ErrInvalid, len(u.pay))
	}
	if dl, ok := ctx.Deadline(); ok {
		cl.c.SetDeadline(dl)
	}
	if err := writeFrame(cl.bw, request{Op: opPut, Frames: frames}, nil); err != nil {
		return err
	}
	for p := u.pay; len(p) > 0; {
		c := min(len(p), MaxBody)
		if err := writeFrame(cl.bw, request{Op: kindData}, p[:c]); err != nil {
			return err
		}
		p = p[c:]
	}
	if err := cl.bw.Flush(); err != nil {
		return err
	}
	if cap(u.pay) > 2*batchTarget+MaxBody {
		u.pay = nil // a rare large tree: do not keep its buffer
	}
	return cl.expectEnd()
}

// commit records the snapshot.
func (u *uploader) commit(ctx context.Context, desc *engine.Snapshot) (*engine.Snapshot, error) {
	cl := u.cl
	if err := cl.send(ctx, request{Op: opCommit, Commit: desc}); err != nil {
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
