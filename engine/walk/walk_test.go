package walk

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"coffer/engine/tree"
)

// memSink stores blobs in memory under their SHA-256, and checks the
// walker's promise to PutTree: every blob a tree names was stored before
// (or is the parent's, reused unread).
type memSink struct {
	mu     sync.Mutex
	blobs  map[tree.ID][]byte // guarded by mu
	reads  atomic.Int64       // ReadFile calls
	trees  atomic.Int64       // PutTree calls
	failOn string             // a file whose ReadFile fails as a sink would
}

var errSink = errors.New("test: the sink failed")

func newMemSink() *memSink { return &memSink{blobs: map[tree.ID][]byte{}} }

func (s *memSink) put(data []byte) tree.ID {
	id := tree.ID(sha256.Sum256(data))
	s.mu.Lock()
	s.blobs[id] = append([]byte(nil), data...)
	s.mu.Unlock()
	return id
}

func (s *memSink) has(id tree.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blobs[id]
	return ok
}

func (s *memSink) LoadTree(_ context.Context, id tree.ID) *tree.Tree {
	s.mu.Lock()
	b := s.blobs[id]
	s.mu.Unlock()
	t, err := tree.Decode(b)
	if err != nil {
		return nil
	}
	return t
}

func (s *memSink) NewReader() FileReader { return memReader{s} }

func (s *memSink) PutTree(_ context.Context, enc []byte) (tree.ID, error) {
	s.trees.Add(1)
	t, err := tree.Decode(enc)
	if err != nil {
		return tree.ID{}, err
	}
	for _, n := range t.Nodes {
		ids := n.Content
		if n.Type == tree.Dir {
			ids = []tree.ID{n.Subtree}
		}
		for _, id := range ids {
			if !s.has(id) {
				return tree.ID{}, fmt.Errorf("tree names %q before its blob %x was stored", n.Name, id[:4])
			}
		}
	}
	return s.put(enc), nil
}

type memReader struct{ s *memSink }

func (r memReader) ReadFile(_ context.Context, rd io.Reader, n *tree.Node) error {
	r.s.reads.Add(1)
	data, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	if r.s.failOn != "" && n.Name == r.s.failOn {
		return errSink
	}
	n.Size = uint64(len(data))
	n.Content = nil
	for len(data) > 0 { // 1000-byte chunks
		c := data[:min(len(data), 1000)]
		n.Content = append(n.Content, r.s.put(c))
		data = data[len(c):]
	}
	return nil
}

// knowing is a memSink with the Knower ability.
type knowing struct {
	*memSink
	known bool
}

func (k knowing) Known([]tree.ID) bool { return k.known }

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// find follows the names of a slash-separated path down from the root
// tree and returns its node.
func find(t *testing.T, s *memSink, root tree.ID, p string) *tree.Node {
	t.Helper()
	tr := s.LoadTree(context.Background(), root)
	var n *tree.Node
	for _, name := range strings.Split(strings.Trim(p, "/"), "/") {
		if tr == nil {
			t.Fatalf("%s: no tree above %q", p, name)
		}
		if n = tr.Find(name); n == nil {
			t.Fatalf("%s: no %q", p, name)
		}
		tr = nil
		if n.Type == tree.Dir {
			tr = s.LoadTree(context.Background(), n.Subtree)
		}
	}
	return n
}

// TestWalk: many files and folders through several workers reach the sink
// in post-order; excludes, hard links, a folder on the way reached through
// a symlink, and nested paths are recorded as documented; and the same
// source gives the same root tree.
func TestWalk(t *testing.T) {
	src := t.TempDir()
	for i := 0; i < 60; i++ {
		writeFile(t, filepath.Join(src, "real", "data", fmt.Sprintf("d%d", i%5), fmt.Sprintf("f%02d", i)), strings.Repeat("x", i*97))
	}
	writeFile(t, filepath.Join(src, "real", "data", "skip.tmp"), "excluded by base name")
	writeFile(t, filepath.Join(src, "real", "data", "cache", "a"), "excluded by path")
	if err := os.Link(filepath.Join(src, "real", "data", "d0", "f00"), filepath.Join(src, "real", "data", "hard")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(src, "via")); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(src, "via", "data")
	paths, skipped, err := Sources([]string{base, filepath.Join(base, "d1")}, []string{"*.tmp", filepath.Join(src, "via", "data", "cache")})
	if err != nil || skipped != nil {
		t.Fatal(err, skipped)
	}
	if len(paths) != 1 {
		t.Fatalf("nested path kept: %q", paths)
	}
	o := Options{Excludes: []string{"*.tmp", filepath.Join(base, "cache")}, Workers: 3, Progress: &Progress{}}
	s := newMemSink()
	res, err := Walk(context.Background(), paths, s, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Files != 61 || res.Stats.Unchanged != 0 || len(res.Warnings) != 0 || s.reads.Load() != 60 {
		t.Fatalf("stats %+v, warnings %q, %d reads", res.Stats, res.Warnings, s.reads.Load())
	}
	if got := o.Progress.Files.Load(); got != 61 || !o.Progress.ScanDone.Load() || o.Progress.TotalFiles.Load() != 61 {
		t.Errorf("progress: %d files, scan done %v, total %d", got, o.Progress.ScanDone.Load(), o.Progress.TotalFiles.Load())
	}
	via := find(t, s, res.Tree, filepath.Join(src, "via"))
	if via.Type != tree.Dir {
		t.Errorf("folder on the way through a symlink recorded as %v", via.Type)
	}
	hard := find(t, s, res.Tree, filepath.Join(base, "hard"))
	if want := strings.TrimPrefix(filepath.Join(base, "d0", "f00"), "/"); hard.Type != tree.Hardlink || hard.LinkTarget != want {
		t.Errorf("hard link: %v %q, want the first name %q", hard.Type, hard.LinkTarget, want)
	}
	data := s.LoadTree(context.Background(), find(t, s, res.Tree, base).Subtree)
	if data.Find("skip.tmp") != nil || data.Find("cache") != nil || data.Find("d4") == nil {
		t.Errorf("excludes not applied: %+v", data.Nodes)
	}
	again, err := Walk(context.Background(), paths, newMemSink(), Options{Excludes: o.Excludes, Workers: 1})
	if err != nil || again.Tree != res.Tree {
		t.Errorf("a second walk of the same source gives tree %x, %v (first %x)", again.Tree[:4], err, res.Tree[:4])
	}
}

// TestWalkExcludeRules: --exclude with a "/" inside matches anywhere
// below the root, --iexclude ignores case, a folder holding a marker file
// is left out whole, and files above the size limit are left out; the
// progress totals count what is backed up.
func TestWalkExcludeRules(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "doc", "adduser", "examples", "a"), "x")
	writeFile(t, filepath.Join(src, "doc", "adduser", "keep"), "x")
	writeFile(t, filepath.Join(src, "Photos", "IMG.JPG"), "x")
	writeFile(t, filepath.Join(src, "Photos", "note.txt"), "x")
	writeFile(t, filepath.Join(src, "cache", ".nobackup"), "")
	writeFile(t, filepath.Join(src, "cache", "big"), "x")
	writeFile(t, filepath.Join(src, "big"), strings.Repeat("b", 2000))
	writeFile(t, filepath.Join(src, "small"), strings.Repeat("s", 10))
	o := Options{
		Excludes: []string{"adduser/examples"}, IExcludes: []string{"*.jpg"},
		ExcludeIfPresent: []string{".nobackup"}, ExcludeLargerThan: 1000,
		Workers: 2, Progress: &Progress{},
	}
	s := newMemSink()
	res, err := Walk(context.Background(), []string{src}, s, o)
	if err != nil {
		t.Fatal(err)
	}
	root := s.LoadTree(context.Background(), find(t, s, res.Tree, src).Subtree)
	if root.Find("cache") != nil || root.Find("big") != nil || root.Find("small") == nil {
		t.Errorf("marker or size rule not applied: %+v", root.Nodes)
	}
	adduser := s.LoadTree(context.Background(), find(t, s, res.Tree, filepath.Join(src, "doc", "adduser")).Subtree)
	if adduser.Find("examples") != nil || adduser.Find("keep") == nil {
		t.Errorf("adduser/examples not excluded below the root: %+v", adduser.Nodes)
	}
	photos := s.LoadTree(context.Background(), find(t, s, res.Tree, filepath.Join(src, "Photos")).Subtree)
	if photos.Find("IMG.JPG") != nil || photos.Find("note.txt") == nil {
		t.Errorf("--iexclude not applied: %+v", photos.Nodes)
	}
	if res.Stats.Files != 3 || len(res.Warnings) != 0 || o.Progress.TotalFiles.Load() != 3 {
		t.Errorf("stats %+v, warnings %q, total files %d; want 3 files", res.Stats, res.Warnings, o.Progress.TotalFiles.Load())
	}
}

// TestWalkUnchanged: a file unchanged since the parent keeps its content
// unread, unless the sink's Knower says the content is gone; a changed one
// is read.
func TestWalkUnchanged(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "a"), "unchanged")
	writeFile(t, filepath.Join(src, "b"), "will change")
	time.Sleep(10 * time.Millisecond) // the parent starts after every mtime
	s := newMemSink()
	parentStart := time.Now().UnixNano()
	first, err := Walk(context.Background(), []string{src}, s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "b"), "has changed")
	parent := s.LoadTree(context.Background(), first.Tree)
	for _, c := range []struct {
		name      string
		sink      Sink
		reads     int64
		unchanged int64
	}{
		{"no Knower", s, 1, 1},
		{"Knower: stored", knowing{s, true}, 1, 1},
		{"Knower: gone", knowing{s, false}, 2, 0},
	} {
		before := s.reads.Load()
		res, err := Walk(context.Background(), []string{src}, c.sink, Options{Parent: parent, ParentStart: parentStart})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.reads.Load() - before; got != c.reads || res.Stats.Unchanged != c.unchanged {
			t.Errorf("%s: %d reads, %d unchanged; want %d, %d", c.name, got, res.Stats.Unchanged, c.reads, c.unchanged)
		}
		if a := find(t, s, res.Tree, filepath.Join(src, "a")); a.Size != 9 || len(a.Content) != 1 {
			t.Errorf("%s: unchanged file %+v", c.name, a)
		}
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		k := min(r.n, len(p))
		r.n -= k
		return k, nil
	}
	return 0, errors.New("test: device gone")
}

// TestWalkFailures: an unreadable source is a warning and the entry is
// left out; a failing sink fails the walk with its error; a folder on the
// way that is not one is ErrInvalid.
func TestWalkFailures(t *testing.T) {
	ctx := context.Background()
	s := newMemSink()
	res, err := Stream(ctx, &failingReader{n: 5000}, "db.sql", time.Now(), s, Options{})
	if err != nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "db.sql: test: device gone") || res.Stats.Files != 0 {
		t.Fatalf("unreadable stream: %+v, %v", res, err)
	}
	if root := s.LoadTree(ctx, res.Tree); root == nil || len(root.Nodes) != 0 {
		t.Fatalf("the snapshot of an unreadable stream: %+v", root)
	}

	src := t.TempDir()
	writeFile(t, filepath.Join(src, "a"), "a")
	writeFile(t, filepath.Join(src, "boom"), "b")
	s = newMemSink()
	s.failOn = "boom"
	if _, err := Walk(ctx, []string{src}, s, Options{}); !errors.Is(err, errSink) {
		t.Errorf("failing sink: %v", err)
	}
	if _, err := Walk(ctx, []string{filepath.Join(src, "a", "x")}, newMemSink(), Options{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a file on the way: %v", err)
	}
	if os.Geteuid() != 0 { // root reads any folder
		locked := filepath.Join(src, "locked")
		writeFile(t, filepath.Join(locked, "x"), "x")
		if err := os.Chmod(locked, 0); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(locked, 0o755)
		res, err := Walk(ctx, []string{src}, newMemSink(), Options{})
		if err != nil || len(res.Warnings) != 1 {
			t.Errorf("unreadable folder: %+v, %v", res, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Walk(cctx, []string{src}, newMemSink(), Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	for _, c := range []struct {
		paths, excludes []string
	}{
		{nil, nil},
		{[]string{filepath.Join(src, "missing")}, nil},
		{[]string{src}, []string{"["}},
	} {
		if _, _, err := Sources(c.paths, c.excludes); !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "walk:") {
			t.Errorf("Sources(%q, %q): %v", c.paths, c.excludes, err)
		}
	}
	// A missing path among others is left out with a warning, and the
	// walk goes on with the rest.
	missing := filepath.Join(src, "missing", "deeper")
	paths, skipped, err := Sources([]string{missing, src}, nil)
	if err != nil || len(paths) != 1 || len(skipped) != 1 || !strings.Contains(skipped[0], missing) {
		t.Fatalf("Sources with one missing path: %q, %q, %v", paths, skipped, err)
	}
	res, err = Walk(ctx, paths, newMemSink(), Options{Skipped: skipped, Progress: &Progress{}})
	if err != nil || len(res.Warnings) == 0 || res.Warnings[0] != skipped[0] {
		t.Errorf("walk with a skipped source: %+v, %v", res, err)
	}
	for _, name := range []string{"", ".", "..", "a/b", "a\x00"} {
		if _, err := Stream(ctx, strings.NewReader("x"), name, time.Now(), newMemSink(), Options{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("stream name %q: %v", name, err)
		}
	}
}
