package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"coffer/chunk"
	"coffer/engine/fsmeta"
	"coffer/engine/source"
	"coffer/engine/tree"
	"coffer/index"
	"coffer/repo"
)

// BackupOptions configure a backup. Zero fields take defaults.
type BackupOptions struct {
	Host     string    // recorded host name; "" = this machine's
	Tags     []string  // recorded tags
	Excludes []string  // glob patterns: without "/" matched against base names, with "/" against absolute paths
	Time     time.Time // snapshot time; zero = now
	NoParent bool      // read every file even if a parent snapshot says it is unchanged
	Progress *Progress // updated while the backup runs; may be nil
}

// Progress counters of a running backup or restore, updated atomically. A
// reader (the CLI's progress line) may load them at any time.
type Progress struct {
	TotalFiles atomic.Int64 // found by the scan so far
	TotalBytes atomic.Int64
	ScanDone   atomic.Bool  // totals are final
	Files      atomic.Int64 // processed
	Bytes      atomic.Int64
	Errors     atomic.Int64
}

// future is a tree node whose content is still being computed.
type future struct {
	done chan struct{}
	node tree.Node
	skip bool // the entry could not be read and is left out
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func readyFuture(n tree.Node) *future { return &future{done: closedChan, node: n} }

type fileJob struct {
	path string
	f    *future
}

type sealJob struct {
	typ BlobType
	id  [32]byte
	buf *[]byte // pooled; returned after sealing
}

type dirTask struct {
	f        *future
	children []*future
}

type devIno struct{ dev, ino uint64 }

// backup is the state of one running backup. Pipeline (docs/design.md,
// "Backup pipeline"): the walker (one goroutine, deterministic order) stats
// entries and hands regular files to file workers; file workers read, chunk
// and hash, and hand new chunks to seal workers; seal workers compress, seal
// and append to a packer; full packs go to pack writers, which erasure-code,
// write shards and index the pack. A finisher builds each folder's tree once
// its entries are done (post-order). Every channel is bounded, so memory is
// bounded by the number of workers times the chunk size, not by the data.
type backup struct {
	t      *Tenant
	ctx    context.Context
	cancel context.CancelCauseFunc
	opts   BackupOptions
	prog   *Progress

	parentStart int64      // ns; files modified since the parent started are re-read
	parentRoot  *tree.Tree // root tree of the parent snapshot, or nil

	data, trees packer
	fileCh      chan fileJob
	sealCh      chan sealJob
	flushCh     chan *pendingPack
	dirCh       chan dirTask

	pendingMu sync.Mutex
	pending   map[[32]byte]struct{} // blobs claimed by this backup and not yet indexed

	chunkBufs chunkPool // new chunks on their way from file to seal workers

	hardlinks map[devIno]string // walker only

	warnMu   sync.Mutex
	warnings []string

	stats struct {
		files, dirs, bytes, unchanged, failed atomic.Int64
		blobs, added, stored                  atomic.Int64
	}

	quotaMu sync.Mutex // guards used and written
	quota   int64      // 0: none
	used    int64      // stored bytes of the tenant, including this backup's packs
	written []repo.PackInfo
	wblobs  [][]packBlob
}

// ErrQuotaExceeded: a backup would take the tenant over its quota.
var ErrQuotaExceeded = errors.New("engine: tenant quota exceeded")

// Backup backs up the given paths and records a snapshot. If some files could
// not be read, the snapshot is still recorded without them and the error
// wraps ErrPartialBackup (the CLI exits 3).
func (t *Tenant) Backup(ctx context.Context, paths []string, o BackupOptions) (*Snapshot, error) {
	if len(paths) == 0 {
		return nil, invalidf("nothing to back up: give at least one path")
	}
	var abs []string
	for _, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		if _, err := os.Lstat(a); err != nil {
			return nil, fmt.Errorf("%w: cannot back up %s: %v", ErrInvalid, p, errors.Unwrap(err))
		}
		abs = append(abs, a)
	}
	abs = source.DropNested(abs)
	return t.runBackup(ctx, abs, abs, o, func(b *backup) *future { return b.walkRoot(abs) })
}

// BackupStream backs up one stream (for example standard input) as a file
// called name in the snapshot's root.
func (t *Tenant) BackupStream(ctx context.Context, r io.Reader, name string, o BackupOptions) (*Snapshot, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, invalidf("stdin file name %q must be a plain file name", name)
	}
	return t.runBackup(ctx, []string{"/" + name}, nil, o, func(b *backup) *future {
		now := b.t.e.now().UnixNano()
		n := tree.Node{Name: name, Type: tree.File, Mode: 0o644, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), MTime: now, CTime: now}
		f := &future{done: make(chan struct{}), node: n}
		b.readFile(newReader(), f, name, r)
		close(f.done)
		root := &future{done: make(chan struct{}), node: tree.Node{Type: tree.Dir, Mode: 0o755, MTime: now, CTime: now}}
		b.sendDir(dirTask{f: root, children: []*future{f}})
		return root
	})
}

// runBackup runs the pipeline around walk, which produces the root folder.
// scanPaths are counted for progress totals (nil: nothing to scan).
func (t *Tenant) runBackup(ctx context.Context, paths, scanPaths []string, o BackupOptions, walk func(*backup) *future) (s *Snapshot, err error) {
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
	start := t.e.now()
	if o.Time.IsZero() {
		o.Time = start
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	for _, pat := range o.Excludes {
		if _, err := filepath.Match(pat, ""); err != nil {
			return nil, invalidf("exclude pattern %q: %v", pat, err)
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := runtime.GOMAXPROCS(0)
	cfg := t.e.conf()
	b := &backup{
		t: t, ctx: ctx, cancel: cancel, opts: o, prog: o.Progress,
		data:      packer{size: cfg.PackSize, k: cfg.K, m: cfg.M, parityApart: true, slots: make(chan struct{}, 2), done: ctx.Done()},
		trees:     packer{size: cfg.PackSize, k: cfg.K, m: cfg.M, grow: true},
		fileCh:    make(chan fileJob, 4*workers),
		sealCh:    make(chan sealJob, 2*workers),
		flushCh:   make(chan *pendingPack),
		dirCh:     make(chan dirTask, 256),
		pending:   map[[32]byte]struct{}{},
		hardlinks: map[devIno]string{},
		chunkBufs: chunkPool{max: 4 * workers}, // file workers + sealCh + seal workers
	}
	if b.prog == nil {
		b.prog = &Progress{}
	}

	parent, parentTree, err := t.findParent(ctx, paths, o)
	if err != nil {
		return nil, err
	}
	if parent != nil {
		b.parentStart = parent.Stats.Start.UnixNano()
	}
	if b.quota = t.quota; b.quota > 0 {
		if b.used, err = t.storedBytes(); err != nil {
			return nil, err
		}
		if b.used >= b.quota {
			return nil, fmt.Errorf("%w: tenant %q stores %s, its quota is %s", ErrQuotaExceeded, t.name, humanBytes(b.used), humanBytes(b.quota))
		}
	}
	b.parentRoot = parentTree
	if o.Progress != nil && scanPaths != nil {
		go b.scan(scanPaths)
	}

	// Stage goroutines. Worker counts: file and seal workers are CPU-bound
	// (chunking, hashing, compressing, sealing), one per core each, so a
	// stage waiting on I/O leaves the other stage the cores. (On a cold page
	// cache the file workers wait for the disk too; the walker's prefetch
	// covers that better than more file workers, which hold more chunk
	// buffers: docs/benchmarks.md, profile 6, L.)
	var fileWG, sealWG, flushWG, dirWG sync.WaitGroup
	for i := 0; i < workers; i++ {
		fileWG.Add(1)
		go func() { defer fileWG.Done(); b.fileWorker() }()
		sealWG.Add(1)
		go func() { defer sealWG.Done(); b.sealWorker() }()
	}
	// One pack writer: it writes a pack's k+m shards to their drives in
	// parallel while the packer fills the next; a second writer would hold
	// another pack buffer (1.5 × pack size) for little gain.
	flushWG.Add(1)
	go func() { defer flushWG.Done(); b.packWriter() }()
	dirWG.Add(1)
	go func() { defer dirWG.Done(); b.finisher() }()

	root := walk(b)
	close(b.dirCh)
	dirWG.Wait()
	close(b.fileCh)
	fileWG.Wait()
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
		return nil, err
	}
	select {
	case <-root.done:
	default:
		return nil, errors.New("engine: backup pipeline ended before the root tree was stored")
	}

	s = &Snapshot{
		Time: o.Time, Host: o.Host, Paths: paths, Tags: o.Tags, Excludes: o.Excludes,
		Username: osUser(), Tree: fmt.Sprintf("%x", root.node.Subtree[:]), Program: ProgramVersion,
	}
	if parent != nil {
		s.Parent = parent.ID
	}
	s.Stats = SnapshotStats{
		Start: start, End: t.e.now(),
		Files: b.stats.files.Load(), Dirs: b.stats.dirs.Load(), Bytes: b.stats.bytes.Load(),
		FilesUnchanged: b.stats.unchanged.Load(), FilesFailed: b.stats.failed.Load(),
		BlobsAdded: b.stats.blobs.Load(), BytesAdded: b.stats.added.Load(), BytesStored: b.stats.stored.Load(),
	}
	var partial error
	if len(b.warnings) > 0 {
		partial = ErrPartialBackup
	}
	if audited, err = t.commitAudited(ctx, s, partial, ""); err != nil {
		return nil, err
	}
	if b.quota > 0 {
		used = b.used
	}
	if n := len(b.warnings); n > 0 {
		return s, fmt.Errorf("%w: %d of them (first: %s); snapshot %s was saved without them", ErrPartialBackup, n, b.warnings[0], s.ID[:8])
	}
	return s, nil
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
	for i := len(all) - 1; i >= 0; i-- {
		s := all[i]
		if s.Host == o.Host && sameStrings(s.Paths, paths) {
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
	}
	return nil, nil, nil
}

func (b *backup) fail(err error) {
	b.cancel(err)
}

func (b *backup) warn(path string, err error) {
	b.warnMu.Lock()
	b.warnings = append(b.warnings, fmt.Sprintf("%s: %v", path, errors.Unwrap(err)))
	b.warnMu.Unlock()
	b.stats.failed.Add(1)
	b.prog.Errors.Add(1)
}

func (b *backup) sendDir(d dirTask) {
	select {
	case b.dirCh <- d:
	case <-b.ctx.Done():
	}
}

func (b *backup) sendFlush(pp *pendingPack) {
	select {
	case b.flushCh <- pp:
	case <-b.ctx.Done():
	}
}

// walkRoot builds the root tree: the backed-up paths keep their absolute
// location, as in restic (backing up /srv/www gives srv/www in the snapshot).
func (b *backup) walkRoot(paths []string) *future {
	root := source.Roots(paths)
	if root.Target { // backing up "/" itself
		n, _, err := fsmeta.Stat("/")
		if err != nil {
			b.fail(fmt.Errorf("stat /: %w", err))
			return readyFuture(tree.Node{})
		}
		return b.walkDir("/", "", n, b.parentRoot)
	}
	return b.walkVirtual(root, "/", "", b.parentRoot)
}

// walkVirtual handles a folder on the way to the backed-up paths; own is the
// parent snapshot's tree of this folder, or nil.
func (b *backup) walkVirtual(v *source.Dir, abs, rel string, own *tree.Tree) *future {
	n, _, err := fsmeta.Stat(abs)
	if err != nil {
		b.fail(fmt.Errorf("stat %s: %w", abs, err))
		return readyFuture(tree.Node{})
	}
	if n.Type != tree.Dir {
		// A folder on the way reached through a symlink (/var/run → /run):
		// the snapshot records it as the folder it leads to.
		fi, err := os.Stat(abs)
		if err != nil || !fi.IsDir() {
			b.fail(fmt.Errorf("%w: %s is not a folder", ErrInvalid, abs))
			return readyFuture(tree.Node{})
		}
		n = tree.Node{Type: tree.Dir, Mode: uint32(fi.Mode().Perm()), UID: n.UID, GID: n.GID, User: n.User, Group: n.Group, MTime: fi.ModTime().UnixNano(), CTime: n.CTime}
	}
	n.Name = filepath.Base(abs)
	f := &future{done: make(chan struct{}), node: n}
	var children []*future
	for _, name := range v.Names() {
		cabs, crel := filepath.Join(abs, name), source.JoinRel(rel, name)
		if c := v.Children[name]; c.Target {
			children = append(children, b.walkPath(cabs, crel, own))
		} else {
			children = append(children, b.walkVirtual(c, cabs, crel, b.subtree(own, name)))
		}
	}
	b.stats.dirs.Add(1)
	b.sendDir(dirTask{f: f, children: children})
	return f
}

// subtree loads the parent snapshot's tree of the folder name in parent, or
// nil when there is none.
func (b *backup) subtree(parent *tree.Tree, name string) *tree.Tree {
	if parent == nil {
		return nil
	}
	n := parent.Find(name)
	if n == nil || n.Type != tree.Dir {
		return nil
	}
	t, err := b.t.loadTree(b.ctx, n.Subtree)
	if err != nil {
		return nil // a damaged parent only costs re-reading
	}
	return t
}

// walkPath handles one real file-system entry.
func (b *backup) walkPath(abs, rel string, parent *tree.Tree) *future {
	if b.ctx.Err() != nil {
		return readyFuture(tree.Node{})
	}
	n, info, err := fsmeta.Stat(abs)
	if err != nil {
		b.warn(abs, err)
		return &future{done: closedChan, skip: true}
	}
	n.Name = filepath.Base(abs)
	var prev *tree.Node
	if parent != nil {
		prev = parent.Find(n.Name)
	}
	switch n.Type {
	case tree.Dir:
		var prevTree *tree.Tree
		if prev != nil && prev.Type == tree.Dir {
			prevTree, _ = b.t.loadTree(b.ctx, prev.Subtree) // a damaged parent only costs re-reading
		}
		return b.walkDir(abs, rel, n, prevTree)
	case tree.File:
		if n.Links > 1 {
			key := devIno{info.Dev, n.Inode}
			if first, ok := b.hardlinks[key]; ok {
				n.MakeHardlink(first)
				b.stats.files.Add(1)
				b.prog.Files.Add(1)
				return readyFuture(n)
			}
			b.hardlinks[key] = rel
		}
		if b.unchanged(&n, prev) {
			n.Content = prev.Content
			b.stats.files.Add(1)
			b.stats.unchanged.Add(1)
			b.stats.bytes.Add(int64(n.Size))
			b.prog.Files.Add(1)
			b.prog.Bytes.Add(int64(n.Size))
			return readyFuture(n)
		}
		f := &future{done: make(chan struct{}), node: n}
		prefetch(abs, n.Size)
		select {
		case b.fileCh <- fileJob{path: abs, f: f}:
		case <-b.ctx.Done():
			return readyFuture(tree.Node{})
		}
		return f
	default:
		return readyFuture(n)
	}
}

// walkDir handles a real folder; parentTree is the parent snapshot's tree of
// the same folder, or nil.
func (b *backup) walkDir(abs, rel string, n tree.Node, parentTree *tree.Tree) *future {
	f := &future{done: make(chan struct{}), node: n}
	b.stats.dirs.Add(1)
	entries, err := readDirNames(abs)
	if err != nil {
		b.warn(abs, err)
	}
	var children []*future
	for _, name := range entries {
		p := filepath.Join(abs, name)
		if source.Excluded(b.opts.Excludes, p) {
			continue
		}
		children = append(children, b.walkPath(p, source.JoinRel(rel, name), parentTree))
	}
	b.sendDir(dirTask{f: f, children: children})
	return f
}

// prefetch asks the kernel to start reading (the first chunk.MaxSize bytes
// of) a file queued for the file workers, so that reads from a cold page
// cache overlap: the walker runs up to len(fileCh) files ahead of the
// workers, and each read then finds its data on the way or there. Errors
// are left for the file worker to meet.
func prefetch(path string, size uint64) {
	if size == 0 {
		return
	}
	// O_NONBLOCK: should the file have become a FIFO since its stat, the
	// open must not wait for a writer. (No O_NOATIME needed: readahead does
	// not touch the access time, reads do.)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	_ = unix.Fadvise(fd, 0, int64(min(size, chunk.MaxSize)), unix.FADV_WILLNEED)
	unix.Close(fd)
}

// readDirNames returns the names in a folder, sorted bytewise.
func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// unchanged reports whether the parent snapshot's node can be reused: same
// size, mtime, ctime and inode, an mtime older than the start of the parent
// backup (so a write during that backup is not missed), and every content
// blob still indexed.
func (b *backup) unchanged(n, prev *tree.Node) bool {
	if !source.Unchanged(n, prev, b.parentStart) {
		return false
	}
	for _, id := range prev.Content {
		if _, ok, err := b.t.e.db.Blob(b.t.id, index.BlobID(id)); err != nil || !ok {
			return false
		}
	}
	return true
}

// reader is one file worker's reusable chunker (allocating one per file
// would cost its read buffer for every small file). Chunks are cut straight
// into buffers of the backup's chunkPool, so a new chunk goes on to be
// sealed without a copy and no file worker holds a buffer of chunk.MaxSize.
type reader struct {
	c *chunk.Chunker
}

func newReader() *reader { return &reader{} }

func (b *backup) fileWorker() {
	rd := newReader()
	for job := range b.fileCh {
		if b.ctx.Err() != nil {
			close(job.f.done)
			continue
		}
		b.backupFile(rd, job)
		close(job.f.done)
	}
}

func (b *backup) backupFile(rd *reader, job fileJob) {
	fd, err := os.OpenFile(job.path, os.O_RDONLY|unix.O_NOATIME, 0)
	if errors.Is(err, os.ErrPermission) {
		fd, err = os.Open(job.path) // O_NOATIME needs ownership
	}
	if err != nil {
		b.warn(job.path, err)
		job.f.skip = true
		return
	}
	defer fd.Close()
	b.readFile(rd, job.f, job.path, fd)
}

// readFile chunks r into f.node's content, with rd's chunker. path names r
// in warnings.
func (b *backup) readFile(rd *reader, f *future, path string, r io.Reader) {
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
			b.warn(path, err)
			f.skip = true
			return
		}
		*cur = data
		id := b.t.keys.ids.Sum(data)
		ids = append(ids, tree.ID(id))
		size += uint64(len(data))
		b.prog.Bytes.Add(int64(len(data)))
		isNew, err := b.claim(id)
		if err != nil {
			b.fail(err)
			return
		}
		if isNew {
			p := cur
			cur = nil // the seal worker returns it to the pool
			select {
			case b.sealCh <- sealJob{typ: DataBlob, id: id, buf: p}:
			case <-b.ctx.Done():
				return
			}
		}
	}
	f.node.Content = ids
	f.node.Size = size
	f.node.Holes = source.ClipHoles(f.node.Holes, size)
	b.stats.files.Add(1)
	b.stats.bytes.Add(int64(size))
	b.prog.Files.Add(1)
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

// finisher completes folders in post-order: it waits for every entry, encodes
// the tree and stores it as a tree blob.
func (b *backup) finisher() {
	for d := range b.dirCh {
		var bld tree.Builder
		for _, c := range d.children {
			select {
			case <-c.done:
			case <-b.ctx.Done():
			}
			if b.ctx.Err() != nil {
				break
			}
			if !c.skip && c.node.Name != "" {
				bld.Add(c.node)
			}
		}
		if b.ctx.Err() != nil {
			continue
		}
		t, err := bld.Tree()
		if err == nil {
			var enc []byte
			enc, err = t.Encode()
			if err == nil {
				id := b.t.keys.ids.Sum(enc)
				var isNew bool
				isNew, err = b.claim(id)
				if isNew {
					b.store(TreeBlob, id, enc, nil)
				}
				d.f.node.Subtree = tree.ID(id)
			}
		}
		if err != nil {
			b.fail(fmt.Errorf("store tree of %q: %w", d.f.node.Name, err))
			continue
		}
		close(d.f.done)
	}
}

// scan counts files and bytes for the progress display's totals.
func (b *backup) scan(paths []string) {
	for _, p := range paths {
		_ = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if b.ctx.Err() != nil {
				return b.ctx.Err()
			}
			if err != nil {
				return nil
			}
			if path != p && source.Excluded(b.opts.Excludes, path) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.Type().IsRegular() {
				b.prog.TotalFiles.Add(1)
				if fi, err := d.Info(); err == nil {
					b.prog.TotalBytes.Add(fi.Size())
				}
			}
			return nil
		})
	}
	b.prog.ScanDone.Store(true)
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
