package engine

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"coffer/engine/tree"
	"coffer/index"
)

// Random access to the files of snapshots (docs/design.md, "Random access
// and the mount"): an Opener over any SnapshotReader opens files by path,
// reading only the trees on the path, and a File reads only the blobs that
// cover a range, through the Opener's BlobCache, reading ahead for
// sequential readers.

// OpenerOptions configure an Opener. Zero fields take the defaults.
type OpenerOptions struct {
	// CacheSize bounds the blob cache shared by every file of the opener,
	// in bytes (0: DefaultBlobCacheSize; MinBlobCacheSize..MaxBlobCacheSize).
	CacheSize int64
	// ReadAhead is how far ahead of a sequential reader blobs are loaded, in
	// bytes: 0 is min(DefaultReadAhead, CacheSize/4); negative turns it off.
	ReadAhead int64
	// Check, when set, is asked whether reading may go on (a tenant that
	// was locked since the opener was made: ErrTenantLocked); it is called
	// at most once every CheckEvery (0: DefaultCheckEvery) by reads and
	// look-ups, and an ErrTenantLocked or ErrClientRefused answer stays.
	Check      func(context.Context) error
	CheckEvery time.Duration
}

// Defaults of an Opener.
const (
	DefaultReadAhead  = 16 << 20
	DefaultCheckEvery = 2 * time.Second
)

// Limits of an Opener: loads of read-ahead in flight at once (reads wait
// on drives or the network and the checks on a core: two per core of the
// 2-core machines of docs/benchmarks.md keep both busy), and the decoded
// trees it keeps, counted in bytes by treeCost.
const (
	prefetchLoads = 4
	treeCacheCost = 32 << 20
)

// Opener opens files of a tenant's snapshots for random access. It holds
// the blob cache of its files and a cache of decoded trees. It is itself
// a SnapshotReader whose trees come from its cache. Safe for concurrent
// use; Close stops its read-ahead.
type Opener struct {
	r         SnapshotReader
	cache     *BlobCache
	readAhead int64
	check     func(context.Context) error
	every     time.Duration

	ctx    context.Context // of loads: ended by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // read-ahead goroutines
	sem    chan struct{}  // read-ahead loads in flight

	chkMu     sync.Mutex
	lastCheck time.Time // guarded by chkMu
	stuck     error     // guarded by chkMu: a lasting answer of check

	treeMu   sync.Mutex
	trees    map[tree.ID]*list.Element // guarded by treeMu
	treeLRU  list.List                 // guarded by treeMu: *treeItem, most recent first
	treeUsed int64                     // guarded by treeMu
}

type treeItem struct {
	id   tree.ID
	t    *tree.Tree
	cost int64
}

var _ SnapshotReader = (*Opener)(nil)

// NewOpener returns an Opener that reads through r.
func NewOpener(r SnapshotReader, o OpenerOptions) (*Opener, error) {
	cache, err := NewBlobCache(o.CacheSize)
	if err != nil {
		return nil, err
	}
	ra := o.ReadAhead
	if ra == 0 {
		ra = min(DefaultReadAhead, cache.Size()/4)
	}
	if ra > cache.Size()/2 {
		return nil, invalidf("read-ahead %d is more than half the blob cache (%d bytes)", ra, cache.Size())
	}
	every := o.CheckEvery
	if every <= 0 {
		every = DefaultCheckEvery
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Opener{
		r: r, cache: cache, readAhead: ra, check: o.Check, every: every,
		ctx: ctx, cancel: cancel, sem: make(chan struct{}, prefetchLoads),
		trees: map[tree.ID]*list.Element{},
	}, nil
}

// Cache returns the opener's blob cache (for its counters).
func (o *Opener) Cache() *BlobCache { return o.cache }

// Close stops the read-ahead and waits for its loads. Files of the opener
// read nothing more afterwards.
func (o *Opener) Close() error {
	o.cancel()
	o.wg.Wait()
	return nil
}

// Check asks OpenerOptions.Check, at most once every CheckEvery; between
// two asks it answers nil, or the lasting answer (ErrTenantLocked,
// ErrClientRefused) once there was one.
func (o *Opener) Check(ctx context.Context) error {
	if o.check == nil {
		return nil
	}
	o.chkMu.Lock()
	defer o.chkMu.Unlock()
	if o.stuck != nil {
		return o.stuck
	}
	now := time.Now()
	if now.Sub(o.lastCheck) < o.every {
		return nil
	}
	o.lastCheck = now
	err := o.check(ctx)
	if errors.Is(err, ErrTenantLocked) || errors.Is(err, ErrClientRefused) {
		o.stuck = err
	}
	return err
}

// Tree returns tree id, from the opener's cache or its reader.
func (o *Opener) Tree(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	if err := o.Check(ctx); err != nil {
		return nil, err
	}
	o.treeMu.Lock()
	if el, ok := o.trees[id]; ok {
		o.treeLRU.MoveToFront(el)
		t := el.Value.(*treeItem).t
		o.treeMu.Unlock()
		return t, nil
	}
	o.treeMu.Unlock()
	t, err := o.r.Tree(ctx, id)
	if err != nil {
		return nil, err
	}
	cost := treeCost(t)
	if cost > treeCacheCost/4 {
		return t, nil
	}
	o.treeMu.Lock()
	defer o.treeMu.Unlock()
	if _, ok := o.trees[id]; !ok {
		o.trees[id] = o.treeLRU.PushFront(&treeItem{id: id, t: t, cost: cost})
		o.treeUsed += cost
	}
	for o.treeUsed > treeCacheCost {
		back := o.treeLRU.Back()
		it := back.Value.(*treeItem)
		o.treeLRU.Remove(back)
		delete(o.trees, it.id)
		o.treeUsed -= it.cost
	}
	return t, nil
}

// treeCost estimates the memory of a decoded tree.
func treeCost(t *tree.Tree) int64 {
	c := int64(64)
	for i := range t.Nodes {
		n := &t.Nodes[i]
		c += 256 + int64(len(n.Name)+len(n.LinkTarget)+len(n.User)+len(n.Group)) + 32*int64(len(n.Content)) + 16*int64(len(n.Holes))
		for _, x := range n.Xattrs {
			c += 32 + int64(len(x.Name)+len(x.Value))
		}
	}
	return c
}

// Locate asks the opener's reader.
func (o *Opener) Locate(ctx context.Context, ids []tree.ID) ([]BlobPlace, error) {
	return o.r.Locate(ctx, ids)
}

// ReadGroup asks the opener's reader (the blob cache is not used).
func (o *Opener) ReadGroup(ctx context.Context, grp []BlobPlace, fn func(int, []byte) error) error {
	return o.r.ReadGroup(ctx, grp, fn)
}

// Lookup finds the node at p ("/"-separated, from the snapshot's root) in
// snapshot s, reading only the trees on the way; nil for the root.
func (o *Opener) Lookup(ctx context.Context, s *Snapshot, p string) (*tree.Node, error) {
	n, _, err := lookupIn(ctx, o, s, p)
	return n, err
}

// Open opens the file at p in snapshot s (a hard link opens its first
// name's file). Anything but a file is ErrInvalid.
func (o *Opener) Open(ctx context.Context, s *Snapshot, p string) (*File, error) {
	n, err := o.Lookup(ctx, s, p)
	if err != nil {
		return nil, err
	}
	if n != nil && n.Type == tree.Hardlink {
		if n, err = o.Lookup(ctx, s, n.LinkTarget); err != nil {
			return nil, err
		}
	}
	if n == nil || n.Type != tree.File {
		return nil, invalidf("%s in snapshot %s is not a file", shortPath(p, 200), s.ID[:min(8, len(s.ID))])
	}
	return o.OpenNode(n)
}

// OpenNode opens the file node n (of a tree the opener read). It reads
// nothing yet; the File keeps n.
func (o *Opener) OpenNode(n *tree.Node) (*File, error) {
	if n.Type != tree.File {
		return nil, invalidf("%q is a %s, not a file", shortPath(n.Name, 200), n.Type)
	}
	if n.Size > 1<<62 {
		return nil, fmt.Errorf("%w: %q is %d bytes", ErrDamage, shortPath(n.Name, 200), n.Size)
	}
	return &File{o: o, node: n, size: int64(n.Size), lastJ: -2}, nil
}

// File is a file of a snapshot opened for reading: io.ReaderAt,
// io.ReadSeeker. ReadAt reads only the blobs that cover the range (none for
// a range in a hole), through the opener's cache; two reads in a row of
// adjacent chunks make it read ahead. ReadAt is safe for concurrent use;
// Read and Seek share one offset.
type File struct {
	o    *Opener
	node *tree.Node
	size int64

	mu     sync.Mutex
	places []BlobPlace // guarded by mu: located chunks, in order
	offs   []int64     // guarded by mu: offs[i] is where chunk i starts
	next   int64       // guarded by mu: where the chunk after the located ones starts
	lastI  int         // guarded by mu: chunks of the last read
	lastJ  int
	ahead  int // guarded by mu: chunks below it were handed to the read-ahead

	posMu sync.Mutex
	pos   int64 // guarded by posMu
}

// Size returns the file's size in bytes.
func (f *File) Size() int64 { return f.size }

// Node returns the file's node. The caller must not change it.
func (f *File) Node() *tree.Node { return f.node }

// Close releases the file (the opener's cache keeps its blobs).
func (f *File) Close() error { return nil }

// ReadAt reads len(p) bytes at off (io.ReaderAt) under the opener's
// lifetime; see ReadAtContext.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(f.o.ctx, p, off)
}

// Read reads at the file's offset and moves it (io.Reader).
func (f *File) Read(p []byte) (int, error) {
	f.posMu.Lock()
	defer f.posMu.Unlock()
	n, err := f.ReadAt(p, f.pos)
	f.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek sets the offset of Read (io.Seeker).
func (f *File) Seek(offset int64, whence int) (int64, error) {
	f.posMu.Lock()
	defer f.posMu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += f.size
	default:
		return 0, invalidf("seek: whence %d", whence)
	}
	if offset < 0 {
		return 0, invalidf("seek to %d: before the start", offset)
	}
	f.pos = offset
	return offset, nil
}

// ReadAtContext reads len(p) bytes at off into p, like io.ReaderAt: fewer
// only at the end of the file, with io.EOF. Every blob it returns was
// checked against its content ID by the reader; a blob of another length
// than its place says is ErrDamage. It fails once the opener's Check
// fails (a locked tenant), also for blobs in the cache.
func (f *File) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, invalidf("read at %d: before the start", off)
	}
	if err := f.o.Check(ctx); err != nil {
		return 0, err
	}
	if off >= f.size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), f.size)
	if end == off {
		return 0, nil
	}
	places, offs, ahead, err := f.plan(ctx, off, end)
	if err != nil {
		return 0, err
	}
	// The chunks that hold data in [off, end); a chunk in a hole reads as
	// zeros without being read.
	var need []BlobPlace
	var at []int
	for k, pl := range places {
		cs, ce := max(offs[k], off), min(offs[k]+int64(pl.Size), end)
		if !inHoles(f.node.Holes, cs, ce) {
			need = append(need, pl)
			at = append(at, k)
		}
	}
	entries, mine := f.o.cache.claim(need)
	f.o.loadClaimed(need, entries, mine)
	if len(ahead) > 0 {
		f.o.prefetch(ahead)
	}
	clear(p[:end-off])
	for x, k := range at {
		data, err := entries[x].wait(ctx)
		if err != nil {
			return 0, fmt.Errorf("read %s at %d: %w", shortPath(f.node.Name, 200), offs[k], err)
		}
		cs, ce := max(offs[k], off), min(offs[k]+int64(len(data)), end)
		copy(p[cs-off:ce-off], data[cs-offs[k]:ce-offs[k]])
	}
	n := int(end - off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// plan returns the places and offsets of the chunks of [off, end), and
// the chunks to read ahead.
func (f *File) plan(ctx context.Context, off, end int64) (places []BlobPlace, offs []int64, ahead []BlobPlace, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, j, err := f.chunksLocked(ctx, off, end)
	if err != nil {
		return nil, nil, nil, err
	}
	places = append([]BlobPlace(nil), f.places[i:j+1]...)
	offs = append([]int64(nil), f.offs[i:j+1]...)
	// A failed read-ahead plan fails nothing: the read goes on.
	ahead, _ = f.aheadLocked(ctx, off, i, j)
	return places, offs, ahead, nil
}

// inHoles reports whether [start, end) lies inside one hole.
func inHoles(holes []tree.Extent, start, end int64) bool {
	k := sort.Search(len(holes), func(k int) bool { return int64(holes[k].Off+holes[k].Len) > start })
	return k < len(holes) && int64(holes[k].Off) <= start && int64(holes[k].Off+holes[k].Len) >= end
}

// chunksLocked returns the first and last chunk of [off, end), locating
// chunks as far as needed.
func (f *File) chunksLocked(ctx context.Context, off, end int64) (int, int, error) {
	if err := f.locateLocked(ctx, end); err != nil {
		return 0, 0, err
	}
	at := func(x int64) int { return sort.Search(len(f.offs), func(k int) bool { return f.offs[k] > x }) - 1 }
	return at(off), at(end - 1), nil
}

// locateLocked locates chunks, MaxReadGroup at a time, until those
// located reach upto (or the file's end).
func (f *File) locateLocked(ctx context.Context, upto int64) error {
	content := f.node.Content
	for f.next < upto && len(f.places) < len(content) {
		k := min(len(content)-len(f.places), MaxReadGroup)
		ids := content[len(f.places) : len(f.places)+k]
		got, err := f.o.r.Locate(ctx, ids)
		if err != nil {
			return errNotData(shortPath(f.node.Name, 200), err)
		}
		if len(got) != k {
			return fmt.Errorf("%w: %s: %d places for %d chunks", ErrDamage, shortPath(f.node.Name, 200), len(got), k)
		}
		for x, pl := range got {
			if pl.ID != ids[x] || pl.Size == 0 || f.next+int64(pl.Size) > f.size {
				return fmt.Errorf("%w: %s: chunk %d does not fit the file's %d bytes", ErrDamage, shortPath(f.node.Name, 200), len(f.places), f.size)
			}
			f.places = append(f.places, pl)
			f.offs = append(f.offs, f.next)
			f.next += int64(pl.Size)
		}
	}
	if f.next < upto || (len(f.places) == len(content) && f.next != f.size) {
		return fmt.Errorf("%w: %s: content is %d bytes, the snapshot says %d", ErrDamage, shortPath(f.node.Name, 200), f.next, f.size)
	}
	return nil
}

// aheadLocked notes a read of chunks i..j and, when it follows the last
// one (or starts the file), returns the chunks to read ahead that were not
// handed to the read-ahead yet: those starting within ReadAhead bytes
// after chunk j.
func (f *File) aheadLocked(ctx context.Context, off int64, i, j int) ([]BlobPlace, error) {
	seq := off == 0 || (i >= f.lastI && i <= f.lastJ+1)
	f.lastI, f.lastJ = i, j
	if !seq || f.o.readAhead <= 0 {
		return nil, nil
	}
	limit := f.offs[j] + int64(f.places[j].Size) + f.o.readAhead
	if err := f.locateLocked(ctx, min(limit, f.size)); err != nil {
		return nil, err
	}
	var out []BlobPlace
	for k := max(j+1, f.ahead); k < len(f.places) && f.offs[k] < limit; k++ {
		if !inHoles(f.node.Holes, f.offs[k], f.offs[k]+int64(f.places[k].Size)) {
			out = append(out, f.places[k])
		}
		f.ahead = k + 1
	}
	return out, nil
}

// loadClaimed loads the entries the caller claimed (mine: indexes into
// places and entries), in groups of nearby blobs, each in a goroutine of
// its own under the opener's lifetime: a reader that gives up does not
// fail the others waiting for the same blobs.
func (o *Opener) loadClaimed(places []BlobPlace, entries []*cacheEntry, mine []int) {
	for _, grp := range groupPlaces(mine, places) {
		gp := make([]BlobPlace, len(grp))
		ge := make([]*cacheEntry, len(grp))
		for x, k := range grp {
			gp[x], ge[x] = places[k], entries[k]
		}
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			o.load(gp, ge)
		}()
	}
}

// prefetch loads the blobs of places that the cache does not hold, at most
// prefetchLoads groups at once.
func (o *Opener) prefetch(places []BlobPlace) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		all := make([]int, len(places))
		for k := range all {
			all[k] = k
		}
		for _, grp := range groupPlaces(all, places) {
			select {
			case o.sem <- struct{}{}:
			case <-o.ctx.Done():
				return
			}
			gp := make([]BlobPlace, len(grp))
			for x, k := range grp {
				gp[x] = places[k]
			}
			entries, mine := o.cache.claim(gp)
			var lp []BlobPlace
			var le []*cacheEntry
			for _, k := range mine {
				lp, le = append(lp, gp[k]), append(le, entries[k])
			}
			o.wg.Add(1)
			go func() {
				defer o.wg.Done()
				defer func() { <-o.sem }()
				if len(lp) > 0 {
					o.load(lp, le)
				}
			}()
		}
	}()
}

// groupPlaces splits places[idx...] (in file order) into groups of blobs
// of one pack that lie close together, as a restore groups them (at most
// restoreGap bytes apart, spanning at most restoreSpan bytes).
func groupPlaces(idx []int, places []BlobPlace) [][]int {
	var out [][]int
	for len(idx) > 0 {
		first := places[idx[0]]
		start, end := first.Offset, first.Offset+first.Length
		n := 1
		for n < len(idx) {
			c := places[idx[n]]
			if c.Pack != first.Pack || c.Offset < start || c.Offset > end+restoreGap || c.Offset+c.Length-start > restoreSpan {
				break
			}
			end = max(end, c.Offset+c.Length)
			n++
		}
		out = append(out, idx[:n:n])
		idx = idx[n:]
	}
	return out
}

// load reads the blobs of grp and completes their entries: each with a
// copy of its data (the reader's fn must not retain it), or the error.
func (o *Opener) load(grp []BlobPlace, entries []*cacheEntry) {
	done := make([]bool, len(grp))
	err := o.r.ReadGroup(o.ctx, grp, func(i int, data []byte) error {
		if i < 0 || i >= len(grp) || done[i] {
			return fmt.Errorf("%w: a reader gave blob %d of a group of %d", ErrDamage, i, len(grp))
		}
		if len(data) != int(grp[i].Size) {
			return fmt.Errorf("%w: blob %x is %d bytes, its place says %d", ErrDamage, grp[i].ID[:8], len(data), grp[i].Size)
		}
		done[i] = true
		o.cache.complete(entries[i], append([]byte(nil), data...), nil)
		return nil
	})
	if errors.Is(err, ErrBlobNotFound) {
		err = fmt.Errorf("%w: %v", ErrDamage, err)
	}
	for i, e := range entries {
		if !done[i] {
			if err == nil {
				err = fmt.Errorf("%w: a reader left out blob %x of a group", ErrDamage, grp[i].ID[:8])
			}
			o.cache.complete(e, nil, err)
		}
	}
}

// tenantFiles is the opener of Tenant.Open, made on first use.
type tenantFiles struct {
	mu sync.Mutex
	o  *Opener // guarded by mu
}

// Opener returns a new opener of t's snapshots over its local reader
// (Tenant.Reader). Unless o.Check is set, reads fail once the tenant is
// locked (CheckActive). It is audited as "open" (detail empty) before it
// is returned: if the entry cannot be written, nothing can be read. The
// caller closes it.
func (t *Tenant) Opener(ctx context.Context, o OpenerOptions) (*Opener, error) {
	if o.Check == nil {
		o.Check = t.CheckActive
	}
	op, err := NewOpener(t.Reader(), o)
	if err != nil {
		return nil, err
	}
	if err := t.e.logAudit(ctx, "open", t.id, nil, ""); err != nil {
		op.Close()
		return nil, fmt.Errorf("nothing can be read, as the audit entry could not be written: %w", err)
	}
	return op, nil
}

// Open opens the file at p in snapshot s for random access, through the
// tenant handle's one opener (made, and audited as "open", on the first
// call; its blob cache is DefaultBlobCacheSize bytes, shared by every file
// opened through t). See Opener.Open.
func (t *Tenant) Open(ctx context.Context, s *Snapshot, p string) (*File, error) {
	t.files.mu.Lock()
	if t.files.o == nil {
		o, err := t.Opener(ctx, OpenerOptions{})
		if err != nil {
			t.files.mu.Unlock()
			return nil, err
		}
		t.files.o = o
	}
	o := t.files.o
	t.files.mu.Unlock()
	return o.Open(ctx, s, p)
}

// CheckActive returns ErrTenantLocked when the tenant's record in the
// index is no longer active (locked or shredded since t was opened).
func (t *Tenant) CheckActive(ctx context.Context) error {
	rec, err := t.e.db.Tenant(t.id)
	if errors.Is(err, index.ErrNotFound) {
		return fmt.Errorf("%w: tenant %q is gone", ErrTenantLocked, t.name)
	}
	if err != nil {
		return fmt.Errorf("read tenant record: %w", err)
	}
	te, err := t.e.openTenantRec(rec)
	if err != nil {
		return err
	}
	if te.meta.State != StateActive {
		return fmt.Errorf("%w: tenant %q was locked; no data can go in or out until an operator unlocks it", ErrTenantLocked, t.name)
	}
	return nil
}
