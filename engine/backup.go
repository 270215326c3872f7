package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"coffer/chunk"
	"coffer/engine/tree"
	"coffer/engine/walk"
	"coffer/index"
	"coffer/repo"
)

// BackupOptions configure a backup. Zero fields take defaults.
type BackupOptions struct {
	Host     string    // recorded host name; "" = this machine's
	Tags     []string  // recorded tags
	Excludes []string  // exclude patterns (walk.Match): "*.tmp", "adduser/examples", "/home/*/.cache"
	Time     time.Time // snapshot time; zero = now

	IExcludes         []string // exclude patterns matched without regard to case
	ExcludeIfPresent  []string // leave out folders holding an entry of one of these names
	ExcludeLargerThan int64    // leave out regular files larger than this, when above 0

	NoParent bool      // read every file even if a parent snapshot says it is unchanged
	Progress *Progress // updated while the backup runs; may be nil
}

// Rules returns the walk options that carry o's exclude rules; the caller
// adds the rest.
func (o *BackupOptions) Rules() walk.Options {
	return walk.Options{
		Excludes:          o.Excludes,
		IExcludes:         o.IExcludes,
		ExcludeIfPresent:  o.ExcludeIfPresent,
		ExcludeLargerThan: o.ExcludeLargerThan,
	}
}

// Sources checks paths and o's exclude patterns (walk.Sources): the paths
// to walk, and the warnings of those that cannot be found (for
// walk.Options.Skipped).
func (o *BackupOptions) Sources(paths []string) (abs, skipped []string, err error) {
	pats := append(append([]string(nil), o.Excludes...), o.IExcludes...)
	abs, skipped, err = walk.Sources(paths, pats)
	if err != nil {
		return nil, nil, walkError(err)
	}
	return abs, skipped, nil
}

// Progress counters of a running backup or restore, updated atomically. A
// reader (the CLI's progress line) may load them at any time.
type Progress = walk.Progress

type sealJob struct {
	typ BlobType
	id  [32]byte
	buf *[]byte // pooled; returned after sealing
}

// backup is the storing side of one running backup: the walk.Sink of a
// local backup. Pipeline (docs/design.md, "Backup pipeline"): package walk
// walks, stats and hands regular files to file workers and folders'
// trees, in post-order, to PutTree; here, the file workers chunk and hash
// (fileReader) and hand new chunks to seal workers; seal workers compress,
// seal and append to a packer; full packs go to the pack writer, which
// erasure-codes, writes shards and indexes the pack. Every channel is
// bounded, so memory is bounded by the number of workers times the chunk
// size, not by the data.
type backup struct {
	t      *Tenant
	ctx    context.Context
	cancel context.CancelCauseFunc

	data, trees packer
	sealCh      chan sealJob
	flushCh     chan *pendingPack

	pendingMu sync.Mutex
	pending   map[[32]byte]struct{} // blobs claimed by this backup and not yet indexed

	chunkBufs chunkPool // new chunks on their way from file to seal workers

	stats struct {
		blobs, added, stored atomic.Int64
	}

	quotaMu sync.Mutex // guards used and written
	quota   int64      // 0: none
	used    int64      // stored bytes of the tenant, including this backup's packs
	written []repo.PackInfo
	wblobs  [][]packBlob
}

var (
	_ walk.Sink   = (*backup)(nil)
	_ walk.Knower = (*backup)(nil)
)

// ErrQuotaExceeded: a backup would take the tenant over its quota.
var ErrQuotaExceeded = errors.New("engine: tenant quota exceeded")

// walkError gives an error of package walk about the source the engine's
// class for bad arguments.
func walkError(err error) error {
	if errors.Is(err, walk.ErrInvalid) {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return err
}

// Backup backs up the given paths and records a snapshot. If some files could
// not be read, or some of the paths do not exist, the snapshot is still
// recorded without them and the error wraps ErrPartialBackup (the CLI exits
// 3); when none of the paths exists, the backup is refused (ErrInvalid).
func (t *Tenant) Backup(ctx context.Context, paths []string, o BackupOptions) (*Snapshot, error) {
	abs, skipped, err := o.Sources(paths)
	if err != nil {
		return nil, err
	}
	return t.runBackup(ctx, abs, o, func(ctx context.Context, b *backup, wo walk.Options) (*walk.Result, error) {
		wo.Skipped = skipped
		return walk.Walk(ctx, abs, b, wo)
	})
}

// BackupStream backs up one stream (for example standard input) as a file
// called name in the snapshot's root.
func (t *Tenant) BackupStream(ctx context.Context, r io.Reader, name string, o BackupOptions) (*Snapshot, error) {
	if err := walk.CheckStreamName(name); err != nil {
		return nil, walkError(err)
	}
	return t.runBackup(ctx, []string{"/" + name}, o, func(ctx context.Context, b *backup, wo walk.Options) (*walk.Result, error) {
		return walk.Stream(ctx, r, name, t.e.now(), b, wo)
	})
}

// runBackup runs the storing pipeline around walk, which reads the source
// into the backup, and records the snapshot.
func (t *Tenant) runBackup(ctx context.Context, paths []string, o BackupOptions,
	walkFn func(context.Context, *backup, walk.Options) (*walk.Result, error)) (s *Snapshot, err error) {
	used := int64(-1) // the tenant's stored bytes after the backup, counted when it has a quota
	defer func() { t.emitBackup(s, err, used) }()
	audited := false // commitAudited wrote the entries
	defer func() {
		if !audited {
			err = t.e.audited(ctx, "backup", t.id, "", err)
		}
	}()
	unlock := t.e.lockTenant(t.id)
	defer unlock()
	if err := t.requireInStep(ctx); err != nil {
		return nil, err
	}
	start := t.e.now()
	if o.Time.IsZero() {
		o.Time = start
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := runtime.GOMAXPROCS(0)
	cfg := t.e.conf()
	b := &backup{
		t: t, ctx: ctx, cancel: cancel,
		data:      packer{size: cfg.PackSize, k: cfg.K, m: cfg.M, parityApart: true, slots: make(chan struct{}, 2), done: ctx.Done()},
		trees:     packer{size: cfg.PackSize, k: cfg.K, m: cfg.M, grow: true},
		sealCh:    make(chan sealJob, 2*workers),
		flushCh:   make(chan *pendingPack),
		pending:   map[[32]byte]struct{}{},
		chunkBufs: chunkPool{max: 4 * workers}, // file workers + sealCh + seal workers
	}

	parent, parentTree, err := t.findParent(ctx, paths, o)
	if err != nil {
		return nil, err
	}
	wo := o.Rules()
	wo.Parent, wo.Progress, wo.Workers = parentTree, o.Progress, workers
	if parent != nil {
		wo.ParentStart = parent.Stats.Start.UnixNano()
	}
	if b.quota = t.quota; b.quota > 0 {
		if b.used, err = t.storedBytes(); err != nil {
			return nil, err
		}
		if b.used >= b.quota {
			return nil, fmt.Errorf("%w: tenant %q stores %s, its quota is %s", ErrQuotaExceeded, t.name, humanBytes(b.used), humanBytes(b.quota))
		}
	}

	// Stage goroutines. Seal workers are CPU-bound (compressing, sealing),
	// one per core, as the walk's file workers (chunking, hashing), so a
	// stage waiting on I/O leaves the other stage the cores.
	var sealWG, flushWG sync.WaitGroup
	for i := 0; i < workers; i++ {
		sealWG.Add(1)
		go func() { defer sealWG.Done(); b.sealWorker() }()
	}
	// One pack writer: it writes a pack's k+m shards to their drives in
	// parallel while the packer fills the next; a second writer would hold
	// another pack buffer (1.5 × pack size) for little gain.
	flushWG.Add(1)
	go func() { defer flushWG.Done(); b.packWriter() }()

	res, werr := walkFn(ctx, b, wo)
	if werr != nil {
		cancel(werr) // the seal workers and the pack writer drop the rest
	}
	close(b.sealCh)
	sealWG.Wait()
	for _, p := range []*packer{&b.data, &b.trees} {
		if pp := p.take(); pp != nil {
			b.sendFlush(pp)
		}
	}
	close(b.flushCh)
	flushWG.Wait()
	if err := context.Cause(ctx); err != nil {
		if errors.Is(err, ErrQuotaExceeded) {
			// Leave the repository as it was: drop this backup's packs.
			if derr := t.dropPacks(context.WithoutCancel(ctx), b.written, b.wblobs); derr != nil {
				return nil, fmt.Errorf("%w (removing its partial packs failed: %v; scrub --repair removes them)", err, derr)
			}
		}
		return nil, walkError(err)
	}

	s = &Snapshot{
		Time: o.Time, Host: o.Host, Paths: paths, Tags: o.Tags, Excludes: o.Excludes,
		Username: osUser(), Tree: fmt.Sprintf("%x", res.Tree[:]), Program: ProgramVersion,
	}
	if parent != nil {
		s.Parent = parent.ID
	}
	s.Stats = SnapshotStats{
		Start: start, End: t.e.now(),
		Files: res.Stats.Files, Dirs: res.Stats.Dirs, Bytes: res.Stats.Bytes,
		FilesUnchanged: res.Stats.Unchanged, FilesFailed: int64(len(res.Warnings)),
		BlobsAdded: b.stats.blobs.Load(), BytesAdded: b.stats.added.Load(), BytesStored: b.stats.stored.Load(),
	}
	var partial error
	if len(res.Warnings) > 0 {
		partial = ErrPartialBackup
	}
	if audited, err = t.commitAudited(ctx, s, partial, ""); err != nil {
		return nil, err
	}
	if b.quota > 0 {
		used = b.used
	}
	return s, NewPartialError(s.ID, res.Warnings)
}

// findParent returns the newest snapshot of the same host and paths, and its
// root tree, or nil.
func (t *Tenant) findParent(ctx context.Context, paths []string, o BackupOptions) (*Snapshot, *tree.Tree, error) {
	if o.NoParent {
		return nil, nil, nil
	}
	all, err := t.Snapshots(ctx)
	if err != nil {
		return nil, nil, err
	}
	s := ParentSnapshot(all, o.Host, paths)
	if s == nil {
		return nil, nil, nil
	}
	id, err := parseTreeID(s.Tree)
	if err != nil {
		return nil, nil, err
	}
	root, err := t.loadTree(ctx, id)
	if err != nil {
		return nil, nil, fmt.Errorf("load parent snapshot %s: %w", s.ID[:8], err)
	}
	return s, root, nil
}

// ParentSnapshot returns the parent of a backup of paths from host: the
// newest of snaps (oldest first, as Tenant.Snapshots lists them) with the
// same host and the same paths in any order, or nil.
func ParentSnapshot(snaps []*Snapshot, host string, paths []string) *Snapshot {
	for i := len(snaps) - 1; i >= 0; i-- {
		if s := snaps[i]; s.Host == host && sameStrings(s.Paths, paths) {
			return s
		}
	}
	return nil
}

func (b *backup) fail(err error) {
	b.cancel(err)
}

func (b *backup) sendFlush(pp *pendingPack) {
	select {
	case b.flushCh <- pp:
	case <-b.ctx.Done():
	}
}

// LoadTree loads a tree of the parent snapshot (walk.Sink).
func (b *backup) LoadTree(ctx context.Context, id tree.ID) *tree.Tree {
	t, err := b.t.loadTree(ctx, id)
	if err != nil {
		return nil // a damaged parent only costs re-reading
	}
	return t
}

// Known reports whether every content blob of an unchanged file is still
// indexed (walk.Knower).
func (b *backup) Known(ids []tree.ID) bool {
	for _, id := range ids {
		if _, ok, err := b.t.e.db.Blob(b.t.id, index.BlobID(id)); err != nil || !ok {
			return false
		}
	}
	return true
}

// PutTree stores a folder's tree as a tree blob (walk.Sink): claimed, then
// sealed into the tree packer on the finisher's goroutine.
func (b *backup) PutTree(_ context.Context, enc []byte) (tree.ID, error) {
	id := b.t.keys.ids.Sum(enc)
	isNew, err := b.claim(id)
	if err != nil {
		return tree.ID{}, err
	}
	if isNew {
		b.store(TreeBlob, id, enc, nil)
	}
	return tree.ID(id), nil
}

// NewReader returns a file worker's reader (walk.Sink).
func (b *backup) NewReader() walk.FileReader { return &fileReader{b: b} }

// fileReader is one file worker's reusable chunker (allocating one per
// file would cost its read buffer for every small file). Chunks are cut
// straight into buffers of the backup's chunkPool, so a new chunk goes on
// to be sealed without a copy and no file worker holds a buffer of
// chunk.MaxSize.
type fileReader struct {
	b *backup
	c *chunk.Chunker
}

// ReadFile chunks r into n's content, claims each chunk and hands the new
// ones to the seal workers (walk.FileReader).
func (rd *fileReader) ReadFile(ctx context.Context, r io.Reader, n *tree.Node) error {
	b := rd.b
	if rd.c == nil {
		rd.c = chunk.New(r, b.t.keys.pol)
	} else {
		rd.c.Reset(r, b.t.keys.pol)
	}
	c := rd.c
	// Each chunk is cut into a pooled buffer of 1 MiB, moved to one of the
	// next size class whenever it outgrows it (copying is cheap next to
	// hashing and compressing; holding more than the chunk is not).
	var cur *[]byte // the buffer the chunker fills
	defer func() {
		if cur != nil {
			b.chunkBufs.put(cur)
		}
	}()
	grow := func(old []byte, n int) []byte {
		np := b.chunkBufs.get(len(old) + n)
		if cap(*np) < len(old)+n {
			*np = make([]byte, 0, len(old)+n)
		}
		*np = append(*np, old...)
		*cur = old
		b.chunkBufs.put(cur)
		cur = np
		return *np
	}
	var ids []tree.ID
	var size uint64
	for {
		if cur == nil {
			cur = b.chunkBufs.get(1 << 20)
		}
		data, err := c.NextTo((*cur)[:0], grow)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		*cur = data
		id := b.t.keys.ids.Sum(data)
		ids = append(ids, tree.ID(id))
		size += uint64(len(data))
		isNew, err := b.claim(id)
		if err != nil {
			return err
		}
		if isNew {
			p := cur
			cur = nil // the seal worker returns it to the pool
			select {
			case b.sealCh <- sealJob{typ: DataBlob, id: id, buf: p}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
	n.Content = ids
	n.Size = size
	return nil
}

// claim reports whether id is new to the tenant: neither indexed nor claimed
// by this backup. A true result obliges the caller to store the blob.
func (b *backup) claim(id [32]byte) (bool, error) {
	b.pendingMu.Lock()
	_, ok := b.pending[id]
	b.pendingMu.Unlock()
	if ok {
		return false, nil
	}
	_, found, err := b.t.e.db.Blob(b.t.id, id)
	if err != nil {
		return false, fmt.Errorf("dedup lookup: %w", err)
	}
	if found {
		return false, nil
	}
	b.pendingMu.Lock()
	defer b.pendingMu.Unlock()
	if _, ok := b.pending[id]; ok {
		return false, nil
	}
	b.pending[id] = struct{}{}
	return true, nil
}

func (b *backup) sealWorker() {
	var comp []byte // this worker's compression output, reused
	for job := range b.sealCh {
		if b.ctx.Err() != nil {
			b.chunkBufs.put(job.buf)
			continue
		}
		b.store(job.typ, job.id, *job.buf, &comp)
		b.chunkBufs.put(job.buf)
	}
}

// store compresses a claimed blob into *comp (nil: a pooled scratch buffer)
// and seals it into its packer.
func (b *backup) store(typ BlobType, id [32]byte, plain []byte, comp *[]byte) {
	c := comp
	if c == nil {
		c = getScratch()
		defer putScratch(c)
	}
	*c = compressTo(sizeScratch(*c, len(plain)), plain)
	p := &b.data
	if typ == TreeBlob {
		p = &b.trees
	}
	full, n := p.addSealed(typ, id, b.t.sealKey(typ), blobAD(b.t.id, typ, id), *c, len(plain))
	b.stats.blobs.Add(1)
	b.stats.added.Add(int64(len(plain)))
	b.stats.stored.Add(int64(n))
	if full != nil {
		b.sendFlush(full)
	}
}

// reserve accounts a pack against the tenant's quota before it is written.
func (b *backup) reserve(pp *pendingPack) error {
	if b.quota == 0 {
		return nil
	}
	b.quotaMu.Lock()
	defer b.quotaMu.Unlock()
	if b.used+int64(len(pp.data)) > b.quota {
		return fmt.Errorf("%w: tenant %q stores %s of its %s quota and this backup needs more; nothing of it was kept",
			ErrQuotaExceeded, b.t.name, humanBytes(b.used), humanBytes(b.quota))
	}
	b.used += int64(len(pp.data))
	return nil
}

func (b *backup) packWriter() {
	// The parity shards of the pack being written, reused: room for those of
	// a full pack from the start (a larger pack grows it).
	k, m, size := b.data.k, b.data.m, b.data.size
	parity := make([]byte, repo.EncodedCap(k, m, size)-repo.DataShardsCap(k, size))
	for pp := range b.flushCh {
		if b.ctx.Err() != nil {
			continue
		}
		if err := b.reserve(pp); err != nil {
			b.fail(err)
			continue
		}
		// Backups leave every drive's reserve for prune, repair and shred (as writePack).
		wo := repo.WriteOptions{ReservePercent: b.t.e.reservePercent()}
		p, err := b.t.writePackParity(b.ctx, pp, wo, &parity)
		if err != nil {
			b.fail(err)
			continue
		}
		b.quotaMu.Lock()
		b.written = append(b.written, p)
		b.wblobs = append(b.wblobs, pp.blobs)
		b.quotaMu.Unlock()
		pp.recycle()
		b.pendingMu.Lock()
		for _, bl := range pp.blobs {
			delete(b.pending, bl.ID)
		}
		b.pendingMu.Unlock()
	}
}

// chunkPool holds the chunk buffers of one backup: the file workers cut
// chunks into them and the seal workers return them once sealed. Buffers
// come in 1 MiB size classes up to chunk.MaxSize, and a chunk starts in one
// of 1 MiB and moves up a class when it outgrows it, so memory follows the
// chunks' real sizes. At most (file workers + len(sealCh) + seal workers)
// buffers are in use, and as many idle ones are kept (max), so in a steady
// flow every chunk reuses buffers. A free list rather than a sync.Pool: a
// seal worker returns a buffer on one P and a file worker wants it on the
// other, and a sync.Pool's per-P private slot hides the buffer from the
// other P, which then allocates anew.
type chunkPool struct {
	max  int
	mu   sync.Mutex                       // guards free and idle
	free [chunk.MaxSize>>20 + 1][]*[]byte // idle buffers by size class
	idle int
}

func chunkClass(n int) int { return (n + 1<<20 - 1) >> 20 }

// get returns an empty buffer with room for n bytes: an idle one of n's
// size class or the next, else a new one of n's class.
func (cp *chunkPool) get(n int) *[]byte {
	c := chunkClass(max(n, 1))
	cp.mu.Lock()
	for k := c; k <= c+1 && k < len(cp.free); k++ {
		if l := len(cp.free[k]); l > 0 {
			p := cp.free[k][l-1]
			cp.free[k] = cp.free[k][:l-1]
			cp.idle--
			cp.mu.Unlock()
			*p = (*p)[:0]
			return p
		}
	}
	if cp.idle > cp.max/2 {
		// A miss while many buffers of other sizes sit idle: let one of the
		// most common class go, so the idle set follows the sizes in use.
		most := 0
		for k := range cp.free {
			if len(cp.free[k]) >= len(cp.free[most]) {
				most = k
			}
		}
		cp.free[most] = cp.free[most][:len(cp.free[most])-1]
		cp.idle--
	}
	cp.mu.Unlock()
	b := make([]byte, 0, c<<20)
	return &b
}

// put takes a buffer back; one beyond max idle buffers, or not of a size
// class, is left to the garbage collector.
func (cp *chunkPool) put(p *[]byte) {
	c := cap(*p) >> 20
	if cap(*p)&(1<<20-1) != 0 || c == 0 || c >= len(cp.free) {
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.idle < cp.max {
		cp.free[c] = append(cp.free[c], p)
		cp.idle++
	}
}
