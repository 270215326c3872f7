package engine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"coffer/engine/tree"
)

// blobCountingReader counts the data blobs a SnapshotReader hands out.
type blobCountingReader struct {
	SnapshotReader
	blobs atomic.Int64
}

func (c *blobCountingReader) ReadGroup(ctx context.Context, grp []BlobPlace, fn func(int, []byte) error) error {
	return c.SnapshotReader.ReadGroup(ctx, grp, func(i int, b []byte) error {
		c.blobs.Add(1)
		return fn(i, b)
	})
}

// openFixture is a backed-up folder with a multi-chunk file, a small one,
// an empty one, a sparse one and a hard link.
type openFixture struct {
	e     *Engine
	tn    *Tenant
	s     *Snapshot
	src   string
	files map[string][]byte // path in the snapshot → content
}

const (
	sparseHead = 3 << 20
	sparseHole = 24 << 20
	sparseTail = 2 << 20
)

func newOpenFixture(t *testing.T) *openFixture {
	t.Helper()
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "acme")
	src := filepath.Join(t.TempDir(), "src")
	fx := &openFixture{e: e, tn: tn, src: src, files: map[string][]byte{}}
	put := func(name string, data []byte) {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		fx.files[src+"/"+name] = data
	}
	put("big.bin", itRandBytes(1, 18<<20+12345))
	put("sub/small.txt", []byte("hello, random access\n"))
	put("empty", nil)
	// A sparse file: data, a hole, data.
	sp := filepath.Join(src, "sparse.img")
	f, err := os.Create(sp)
	if err != nil {
		t.Fatal(err)
	}
	head, tail := itRandBytes(2, sparseHead), itRandBytes(3, sparseTail)
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(tail, sparseHead+sparseHole); err != nil {
		t.Fatal(err)
	}
	f.Close()
	whole := make([]byte, sparseHead+sparseHole+sparseTail)
	copy(whole, head)
	copy(whole[sparseHead+sparseHole:], tail)
	fx.files[src+"/sparse.img"] = whole
	if err := os.Link(filepath.Join(src, "big.bin"), filepath.Join(src, "big.link")); err != nil {
		t.Fatal(err)
	}
	fx.files[src+"/big.link"] = fx.files[src+"/big.bin"]
	fx.s = itBackup(t, tn, src)
	return fx
}

func (fx *openFixture) opener(t *testing.T, o OpenerOptions) (*Opener, *blobCountingReader) {
	t.Helper()
	cr := &blobCountingReader{SnapshotReader: fx.tn.Reader()}
	op, err := NewOpener(cr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Close() })
	return op, cr
}

// readAtWant is what ReadAt of n bytes at off must give for want.
func readAtWant(want []byte, off int64, n int) ([]byte, error) {
	if off >= int64(len(want)) {
		return nil, io.EOF
	}
	end := min(off+int64(n), int64(len(want)))
	if int(end-off) < n {
		return want[off:end], io.EOF
	}
	return want[off:end], nil
}

func checkReadAt(t *testing.T, f *File, want []byte, off int64, n int) {
	t.Helper()
	buf := make([]byte, n)
	got, err := f.ReadAt(buf, off)
	w, werr := readAtWant(want, off, n)
	if err != werr || got != len(w) || !bytes.Equal(buf[:got], w) {
		t.Fatalf("ReadAt(%d bytes at %d) = %d, %v; want %d, %v (content equal: %v)", n, off, got, err, len(w), werr, bytes.Equal(buf[:got], w))
	}
}

// TestOpenReadAt: ReadAt of a table of ranges and of random ones equals
// the source, for every kind of file, and Read after Seek too.
func TestOpenReadAt(t *testing.T) {
	fx := newOpenFixture(t)
	ctx := context.Background()
	big := fx.src + "/big.bin"
	cases := []struct {
		path string
		off  int64
		n    int
	}{
		{big, 0, 1},
		{big, 0, 128 << 10},
		{big, 1 << 20, 3 << 20}, // several chunks
		{big, int64(len(fx.files[big])) - 10, 10},
		{big, int64(len(fx.files[big])) - 10, 100}, // past the end: EOF
		{big, int64(len(fx.files[big])), 1},        // at the end: EOF
		{big, 1 << 30, 5},
		{fx.src + "/big.link", 4 << 20, 1 << 20},
		{fx.src + "/sub/small.txt", 0, 4096},
		{fx.src + "/sub/small.txt", 7, 6},
		{fx.src + "/empty", 0, 10},
		{fx.src + "/sparse.img", 0, 64 << 10},
		{fx.src + "/sparse.img", sparseHead - 100, 200},                   // data into the hole
		{fx.src + "/sparse.img", sparseHead + 5<<20, 1 << 20},             // inside the hole
		{fx.src + "/sparse.img", sparseHead + sparseHole - 100, 1 << 20},  // hole into data
		{fx.src + "/sparse.img", 0, sparseHead + sparseHole + sparseTail}, // all of it
	}
	for _, c := range cases {
		op, _ := fx.opener(t, OpenerOptions{})
		f, err := op.Open(ctx, fx.s, c.path)
		if err != nil {
			t.Fatalf("Open %s: %v", c.path, err)
		}
		if f.Size() != int64(len(fx.files[c.path])) {
			t.Fatalf("%s: size %d, want %d", c.path, f.Size(), len(fx.files[c.path]))
		}
		checkReadAt(t, f, fx.files[c.path], c.off, c.n)
	}

	// Random ranges through one opener with a small cache, and Tenant.Open.
	op, _ := fx.opener(t, OpenerOptions{CacheSize: MinBlobCacheSize})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		p := []string{big, fx.src + "/sparse.img", fx.src + "/sub/small.txt"}[rng.IntN(3)]
		want := fx.files[p]
		f, err := op.Open(ctx, fx.s, p)
		if err != nil {
			t.Fatal(err)
		}
		checkReadAt(t, f, want, rng.Int64N(int64(len(want))+10), 1+rng.IntN(3<<20))
	}
	f, err := fx.tn.Open(ctx, fx.s, big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(5<<20, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(rest, fx.files[big][5<<20:]) {
		t.Fatalf("Read after Seek: %d bytes, %v", len(rest), err)
	}
	if pos, err := f.Seek(-10, io.SeekEnd); err != nil || pos != f.Size()-10 {
		t.Fatalf("Seek from the end: %d, %v", pos, err)
	}

	for _, bad := range []struct {
		path string
		want error
	}{
		{fx.src + "/sub", ErrInvalid},
		{fx.src + "/nothing", ErrPathNotFound},
		{fx.src + "/big.bin/x", ErrPathNotFound},
	} {
		if _, err := op.Open(ctx, fx.s, bad.path); !errors.Is(err, bad.want) {
			t.Errorf("Open %s: %v, want %v", bad.path, err, bad.want)
		}
	}
}

// TestOpenReadsOnlyCover: a read reads only the blobs that cover its
// range, none inside a hole, and a repeated read none at all (the cache).
func TestOpenReadsOnlyCover(t *testing.T) {
	fx := newOpenFixture(t)
	ctx := context.Background()
	op, cr := fx.opener(t, OpenerOptions{ReadAhead: -1})
	f, err := op.Open(ctx, fx.s, fx.src+"/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Node().Content) < 4 {
		t.Fatalf("big.bin has %d chunks; the test needs several", len(f.Node().Content))
	}
	checkReadAt(t, f, fx.files[fx.src+"/big.bin"], 5<<20, 10)
	if n := cr.blobs.Load(); n != 1 {
		t.Errorf("a 10-byte read read %d blobs, want 1", n)
	}
	checkReadAt(t, f, fx.files[fx.src+"/big.bin"], 5<<20, 10)
	if n := cr.blobs.Load(); n != 1 {
		t.Errorf("a repeated read read %d blobs in all, want 1", n)
	}
	sp, err := op.Open(ctx, fx.s, fx.src+"/sparse.img")
	if err != nil {
		t.Fatal(err)
	}
	if len(sp.Node().Holes) == 0 {
		t.Skip("the file system of the test folder keeps no holes")
	}
	before := cr.blobs.Load()
	checkReadAt(t, sp, fx.files[fx.src+"/sparse.img"], sparseHead+8<<20, 4<<20)
	if n := cr.blobs.Load() - before; n != 0 {
		t.Errorf("a read inside a hole read %d blobs", n)
	}
}

// TestOpenReadAhead: a sequential reader finds the next blobs loaded (or
// loading) before it asks, and reads the file once.
func TestOpenReadAhead(t *testing.T) {
	fx := newOpenFixture(t)
	ctx := context.Background()
	op, cr := fx.opener(t, OpenerOptions{CacheSize: 128 << 20, ReadAhead: 32 << 20})
	f, err := op.Open(ctx, fx.s, fx.src+"/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	// The first read of the file starts the read-ahead of the next 32 MiB:
	// all of big.bin's blobs arrive without another read.
	n := len(f.Node().Content)
	deadline := time.Now().Add(30 * time.Second)
	for cr.blobs.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := cr.blobs.Load(); got != int64(n) {
		t.Fatalf("after the first read, %d of %d blobs were read ahead", got, n)
	}
	got, err := io.ReadAll(io.NewSectionReader(f, 0, f.Size()))
	if err != nil || !bytes.Equal(got, fx.files[fx.src+"/big.bin"]) {
		t.Fatalf("sequential read: %d bytes, %v", len(got), err)
	}
	if got := cr.blobs.Load(); got != int64(n) {
		t.Errorf("a sequential read of %d chunks read %d blobs", n, got)
	}
	// Without read-ahead, nothing is read before it is asked for.
	op2, cr2 := fx.opener(t, OpenerOptions{ReadAhead: -1})
	f2, _ := op2.Open(ctx, fx.s, fx.src+"/big.bin")
	f2.ReadAt(make([]byte, 10), 0)
	time.Sleep(50 * time.Millisecond)
	if got := cr2.blobs.Load(); got != 1 {
		t.Errorf("without read-ahead, the first read read %d blobs", got)
	}
}

// TestOpenConcurrent: many readers of several files at once through one
// opener with a small cache get the source's bytes (run with -race).
func TestOpenConcurrent(t *testing.T) {
	fx := newOpenFixture(t)
	ctx := context.Background()
	op, _ := fx.opener(t, OpenerOptions{CacheSize: MinBlobCacheSize})
	paths := []string{fx.src + "/big.bin", fx.src + "/big.link", fx.src + "/sparse.img"}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			p := paths[g%len(paths)]
			f, err := op.Open(ctx, fx.s, p)
			if err != nil {
				errs <- err
				return
			}
			want := fx.files[p]
			for i := 0; i < 40; i++ {
				off := rng.Int64N(int64(len(want)))
				if g%2 == 0 { // sequential readers
					off = int64(i) * (256 << 10) % int64(len(want))
				}
				buf := make([]byte, 1+rng.IntN(1<<20))
				n, err := f.ReadAt(buf, off)
				w, werr := readAtWant(want, off, len(buf))
				if err != werr || !bytes.Equal(buf[:n], w) {
					errs <- errors.New("a concurrent read differs from the source")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := op.Cache().Stats(); st.Used > op.Cache().Size() {
		t.Errorf("cache holds %d bytes, more than its %d", st.Used, op.Cache().Size())
	}
}

// TestOpenCacheBound: reading more than the cache holds keeps it within
// its bound once the loads are done, evicting the least recently used.
func TestOpenCacheBound(t *testing.T) {
	fx := newOpenFixture(t)
	ctx := context.Background()
	op, cr := fx.opener(t, OpenerOptions{CacheSize: MinBlobCacheSize, ReadAhead: -1})
	for _, p := range []string{fx.src + "/big.bin", fx.src + "/sparse.img"} {
		f, err := op.Open(ctx, fx.s, p)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		for off := int64(0); off < f.Size(); off += int64(len(buf)) {
			if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if st := op.Cache().Stats(); st.Used > MinBlobCacheSize {
				t.Fatalf("cache holds %d bytes, bound %d", st.Used, MinBlobCacheSize)
			}
		}
	}
	st := op.Cache().Stats()
	if st.Evictions == 0 || st.Peak > MinBlobCacheSize+8<<20 {
		t.Errorf("cache stats %+v: want evictions and a peak within the bound plus one load", st)
	}
	// The first blob of big.bin was evicted: reading it again reads it.
	before := cr.blobs.Load()
	f, _ := op.Open(ctx, fx.s, fx.src+"/big.bin")
	checkReadAt(t, f, fx.files[fx.src+"/big.bin"], 0, 10)
	if cr.blobs.Load() != before+1 {
		t.Errorf("an evicted blob was not read again")
	}
}

// TestBlobCacheLRU: the cache keeps the recently used blobs within its
// bound, drops failed loads, and hands a blob larger than itself to its
// readers without keeping it.
func TestBlobCacheLRU(t *testing.T) {
	c, err := NewBlobCache(MinBlobCacheSize)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewBlobCache(1 << 20); !errors.Is(err, ErrInvalid) {
		t.Errorf("a 1 MiB cache: %v", err)
	}
	const blob = 4 << 20
	place := func(i byte) BlobPlace { return BlobPlace{ID: tree.ID{i}, Size: blob} }
	load := func(i byte) {
		ents, mine := c.claim([]BlobPlace{place(i)})
		if len(mine) == 1 {
			c.complete(ents[0], make([]byte, blob), nil)
		}
	}
	for i := byte(1); i <= 4; i++ {
		load(i)
	}
	load(1) // 1 is now the most recent
	load(5) // evicts 2
	if !c.has(tree.ID{1}) || c.has(tree.ID{2}) || !c.has(tree.ID{5}) {
		t.Errorf("LRU order not kept")
	}
	if st := c.Stats(); st.Used > MinBlobCacheSize || st.Evictions != 1 || st.Hits != 1 {
		t.Errorf("stats %+v", st)
	}
	ents, mine := c.claim([]BlobPlace{place(9)})
	c.complete(ents[mine[0]], nil, io.ErrUnexpectedEOF)
	if _, err := ents[0].wait(context.Background()); err != io.ErrUnexpectedEOF || c.has(tree.ID{9}) {
		t.Errorf("a failed load: %v, kept %v", err, c.has(tree.ID{9}))
	}
	huge := BlobPlace{ID: tree.ID{10}, Size: 2 * MinBlobCacheSize}
	ents, _ = c.claim([]BlobPlace{huge})
	c.complete(ents[0], make([]byte, huge.Size), nil)
	if d, err := ents[0].wait(context.Background()); err != nil || len(d) != int(huge.Size) || c.has(huge.ID) {
		t.Errorf("a blob larger than the cache: %d bytes, %v, kept %v", len(d), err, c.has(huge.ID))
	}
	if st := c.Stats(); st.Used > MinBlobCacheSize {
		t.Errorf("used %d after a huge blob", st.Used)
	}
}

// TestOpenLockedTenant: once the tenant is locked, reads of an open file
// fail, also of blobs in the cache.
func TestOpenLockedTenant(t *testing.T) {
	fx := newOpenFixture(t)
	ctx := context.Background()
	op, err := fx.tn.Opener(ctx, OpenerOptions{CheckEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	f, err := op.Open(ctx, fx.s, fx.src+"/sub/small.txt")
	if err != nil {
		t.Fatal(err)
	}
	checkReadAt(t, f, fx.files[fx.src+"/sub/small.txt"], 0, 5)
	if _, err := fx.e.LockTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if _, err := f.ReadAt(make([]byte, 5), 0); !errors.Is(err, ErrTenantLocked) {
		t.Fatalf("read after the lock: %v", err)
	}
	if _, err := op.Open(ctx, fx.s, fx.src+"/big.bin"); !errors.Is(err, ErrTenantLocked) {
		t.Fatalf("open after the lock: %v", err)
	}
}

// memBlobs is a SnapshotReader of data blobs in memory (no trees).
type memBlobs struct {
	memReader
	blobs map[tree.ID][]byte
}

func (m memBlobs) Locate(_ context.Context, ids []tree.ID) ([]BlobPlace, error) {
	out := make([]BlobPlace, len(ids))
	for i, id := range ids {
		b, ok := m.blobs[id]
		if !ok {
			return nil, ErrBlobNotFound
		}
		out[i] = BlobPlace{ID: id, Offset: uint32(id[1]) << 16, Length: uint32(len(b)), Size: uint32(len(b))}
	}
	return out, nil
}

func (m memBlobs) ReadGroup(_ context.Context, grp []BlobPlace, fn func(int, []byte) error) error {
	for i, p := range grp {
		if err := fn(i, m.blobs[p.ID]); err != nil {
			return err
		}
	}
	return nil
}

// FuzzOpenReadAt: ReadAt of any range of a file of chunks of any sizes,
// with a hole anywhere, equals its content, with or without read-ahead.
func FuzzOpenReadAt(f *testing.F) {
	f.Add(uint64(1), int64(0), uint16(100), uint16(10), uint16(50), false)
	f.Add(uint64(2), int64(999), uint16(4000), uint16(0), uint16(0), true)
	f.Add(uint64(3), int64(-1), uint16(1), uint16(300), uint16(2000), true)
	f.Fuzz(func(t *testing.T, seed uint64, off int64, n, holeAt, holeLen uint16, ahead bool) {
		rng := rand.New(rand.NewPCG(seed, 7))
		m := memBlobs{blobs: map[tree.ID][]byte{}}
		var content []byte
		node := &tree.Node{Name: "f", Type: tree.File}
		for k := 0; k < 1+rng.IntN(20); k++ {
			b := make([]byte, 1+rng.IntN(700))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			content = append(content, b...)
		}
		if int(holeAt)+int(holeLen) <= len(content) && holeLen > 0 {
			clear(content[holeAt : int(holeAt)+int(holeLen)])
			node.Holes = []tree.Extent{{Off: uint64(holeAt), Len: uint64(holeLen)}}
		}
		// Cut content into chunks again at random, so holes and chunk
		// borders fall anywhere.
		for rest := content; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(500))
			var id tree.ID
			id[0], id[1], id[2] = byte(len(node.Content)), byte(len(node.Content)>>8), 1
			m.blobs[id] = rest[:k]
			node.Content = append(node.Content, id)
			rest = rest[k:]
		}
		node.Size = uint64(len(content))
		ra := int64(-1)
		if ahead {
			ra = 4096
		}
		op, err := NewOpener(m, OpenerOptions{ReadAhead: ra})
		if err != nil {
			t.Fatal(err)
		}
		defer op.Close()
		fl, err := op.OpenNode(node)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, n)
		got, err := fl.ReadAt(buf, off)
		if off < 0 {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ReadAt at %d: %v", off, err)
			}
			return
		}
		w, werr := readAtWant(content, off, int(n))
		if n == 0 && off < int64(len(content)) {
			w, werr = nil, nil
		}
		if err != werr || !bytes.Equal(buf[:got], w) {
			t.Fatalf("ReadAt(%d at %d) of %d bytes = %d, %v; want %d, %v", n, off, len(content), got, err, len(w), werr)
		}
		// A second, sequential read finds what the read-ahead loaded.
		if got > 0 {
			got2, err := fl.ReadAt(buf, off+int64(got))
			w, werr := readAtWant(content, off+int64(got), int(n))
			if err != werr || !bytes.Equal(buf[:got2], w) {
				t.Fatalf("second ReadAt: %d, %v; want %d, %v", got2, err, len(w), werr)
			}
		}
	})
}

// failingLocate fails its first Locate.
type failingLocate struct {
	SnapshotReader
	failed atomic.Bool
}

func (f *failingLocate) Locate(ctx context.Context, ids []tree.ID) ([]BlobPlace, error) {
	if !f.failed.Swap(true) {
		return nil, errors.New("the server closed the connection")
	}
	return f.SnapshotReader.Locate(ctx, ids)
}

// TestOpenLocateFails: a read whose Locate fails returns the error and
// leaves the file usable (a failed read once left it locked for good).
func TestOpenLocateFails(t *testing.T) {
	fx := newOpenFixture(t)
	ctx := context.Background()
	op, err := NewOpener(&failingLocate{SnapshotReader: fx.tn.Reader()}, OpenerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	f, err := op.Open(ctx, fx.s, fx.src+"/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 10), 0); err == nil {
		t.Fatal("a read whose Locate failed succeeded")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		checkReadAt(t, f, fx.files[fx.src+"/big.bin"], 0, 1<<20)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the read after a failed one hangs")
	}
}
