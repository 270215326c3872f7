package drivetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"coffer/repo"
)

// Run is the conformance suite every repo.Drive implementation must pass. open
// returns a new, empty drive for each subtest (use t.TempDir for a folder).
// Drives that implement repo.PrefixDeleter are tested for it too.
func Run(t *testing.T, open func(t *testing.T) repo.Drive) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, d repo.Drive)
	}{
		{"PutRead", testPutRead},
		{"Overwrite", testOverwrite},
		{"EmptyObject", testEmptyObject},
		{"ReadRanges", testReadRanges},
		{"NotFound", testNotFound},
		{"List", testList},
		{"Delete", testDelete},
		{"Names", testNames},
		{"PutDoesNotRetain", testPutDoesNotRetain},
		{"ConcurrentPuts", testConcurrentPuts},
		{"ContextCancelled", testContextCancelled},
		{"DeletePrefix", testDeletePrefix},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func put(t *testing.T, d repo.Drive, name string, data []byte) {
	t.Helper()
	if err := d.Put(context.Background(), name, data); err != nil {
		t.Fatalf("Put(%q): %v", name, err)
	}
}

func read(t *testing.T, d repo.Drive, name string) []byte {
	t.Helper()
	ctx := context.Background()
	n, err := d.Size(ctx, name)
	if err != nil {
		t.Fatalf("Size(%q): %v", name, err)
	}
	b := make([]byte, n)
	if err := d.ReadAt(ctx, name, b, 0); err != nil {
		t.Fatalf("ReadAt(%q): %v", name, err)
	}
	return b
}

func list(t *testing.T, d repo.Drive, prefix string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	var mu sync.Mutex
	err := d.List(context.Background(), prefix, func(name string, size int64) error {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := got[name]; dup {
			t.Errorf("List(%q) gave %q twice", prefix, name)
		}
		got[name] = size
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func testPutRead(t *testing.T, d repo.Drive) {
	for _, name := range []string{"top", "a/b/c", "t/0123/p/ab/ab01.3", "x-y_z.1/Q"} {
		data := pattern(1000+len(name), byte(len(name)))
		put(t, d, name, data)
		if got := read(t, d, name); !bytes.Equal(got, data) {
			t.Errorf("%q: read back %d bytes that differ from the %d put", name, len(got), len(data))
		}
	}
}

func testOverwrite(t *testing.T, d repo.Drive) {
	put(t, d, "o/x", pattern(5000, 1))
	put(t, d, "o/x", pattern(300, 2))
	if got := read(t, d, "o/x"); !bytes.Equal(got, pattern(300, 2)) {
		t.Errorf("after overwrite read %d bytes, want the 300 of the second put", len(got))
	}
	if l := list(t, d, "o/"); len(l) != 1 || l["o/x"] != 300 {
		t.Errorf("List after overwrite = %v, want o/x of 300 bytes", l)
	}
}

func testEmptyObject(t *testing.T, d repo.Drive) {
	put(t, d, "e/empty", nil)
	if n, err := d.Size(context.Background(), "e/empty"); err != nil || n != 0 {
		t.Errorf("Size = %d, %v; want 0, nil", n, err)
	}
	if err := d.ReadAt(context.Background(), "e/empty", []byte{}, 0); err != nil {
		t.Errorf("zero-length ReadAt of empty object: %v", err)
	}
	if l := list(t, d, ""); l["e/empty"] != 0 || len(l) != 1 {
		t.Errorf("List = %v, want e/empty of 0 bytes", l)
	}
}

func testReadRanges(t *testing.T, d repo.Drive) {
	data := pattern(10000, 3)
	put(t, d, "r/obj", data)
	tests := []struct {
		off, n  int64
		wantEOF bool
	}{
		{0, 1, false}, {0, 10000, false}, {9999, 1, false}, {4096, 4096, false},
		{123, 0, false}, {10000, 0, false}, {1, 9999, false},
		{9999, 2, true}, {0, 10001, true}, {10000, 1, true}, {20000, 5, true},
	}
	for _, tc := range tests {
		p := make([]byte, tc.n)
		err := d.ReadAt(context.Background(), "r/obj", p, tc.off)
		if tc.wantEOF {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("ReadAt(off=%d, n=%d) = %v, want io.ErrUnexpectedEOF", tc.off, tc.n, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ReadAt(off=%d, n=%d): %v", tc.off, tc.n, err)
		} else if !bytes.Equal(p, data[tc.off:tc.off+tc.n]) {
			t.Errorf("ReadAt(off=%d, n=%d) returned wrong bytes", tc.off, tc.n)
		}
	}
	if err := d.ReadAt(context.Background(), "r/obj", make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at offset -1 succeeded")
	}
}

func testNotFound(t *testing.T, d repo.Drive) {
	ctx := context.Background()
	put(t, d, "n/file", []byte("x"))
	for _, name := range []string{"missing", "n/missing", "n/file/below", "n2/deep/er"} {
		if err := d.ReadAt(ctx, name, make([]byte, 1), 0); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("ReadAt(%q) = %v, want ErrNotFound", name, err)
		}
		if _, err := d.Size(ctx, name); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("Size(%q) = %v, want ErrNotFound", name, err)
		}
	}
	// A folder prefix is not an object.
	put(t, d, "f/g/h", []byte("y"))
	if _, err := d.Size(ctx, "f/g"); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("Size of folder f/g = %v, want ErrNotFound", err)
	}
	if err := d.ReadAt(ctx, "f/g", make([]byte, 1), 0); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("ReadAt of folder f/g = %v, want ErrNotFound", err)
	}
}

func testList(t *testing.T, d repo.Drive) {
	objs := map[string]int64{"x/1": 1, "x/y/2": 2, "x/y/z/3": 3, "w/4": 4, "top": 5, "xx/6": 6}
	for name, size := range objs {
		put(t, d, name, pattern(int(size), 0))
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"top", "w/4", "x/1", "x/y/2", "x/y/z/3", "xx/6"}},
		{"x/", []string{"x/1", "x/y/2", "x/y/z/3"}},
		{"x/y/", []string{"x/y/2", "x/y/z/3"}},
		{"x/y/z/", []string{"x/y/z/3"}},
		{"nothing/", nil},
		{"x/1/", nil},
	}
	for _, tc := range tests {
		got := list(t, d, tc.prefix)
		names := slices.Sorted(maps.Keys(got))
		if !slices.Equal(names, tc.want) {
			t.Errorf("List(%q) = %v, want %v", tc.prefix, names, tc.want)
		}
		for n, size := range got {
			if size != objs[n] {
				t.Errorf("List(%q): %q has size %d, want %d", tc.prefix, n, size, objs[n])
			}
		}
	}
	for _, bad := range []string{"x", "/x/", "x//", "../", "tmp/"} {
		err := d.List(context.Background(), bad, func(string, int64) error { return nil })
		if !errors.Is(err, repo.ErrInvalidName) {
			t.Errorf("List(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
	stop := errors.New("stop")
	calls := 0
	err := d.List(context.Background(), "", func(string, int64) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("List with failing fn = %v after %d calls, want the fn's error after 1", err, calls)
	}
}

func testDelete(t *testing.T, d repo.Drive) {
	ctx := context.Background()
	put(t, d, "d/a/b/one", []byte("1"))
	put(t, d, "d/a/two", []byte("2"))
	if err := d.Delete(ctx, "d/a/b/one"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := d.Size(ctx, "d/a/b/one"); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("Size after Delete = %v, want ErrNotFound", err)
	}
	if err := d.Delete(ctx, "d/a/b/one"); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if err := d.Delete(ctx, "never/was"); err != nil {
		t.Errorf("Delete of a missing object: %v", err)
	}
	if l := list(t, d, ""); len(l) != 1 || l["d/a/two"] != 1 {
		t.Errorf("List after Delete = %v, want only d/a/two", l)
	}
	if err := d.Delete(ctx, "d/a/two"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if l := list(t, d, ""); len(l) != 0 {
		t.Errorf("List after deleting everything = %v", l)
	}
	put(t, d, "d/a/b/one", []byte("again"))
	if got := read(t, d, "d/a/b/one"); string(got) != "again" {
		t.Errorf("put after delete read back %q", got)
	}
}

func testNames(t *testing.T, d repo.Drive) {
	ctx := context.Background()
	bad := []string{"", "/a", "a/", "a//b", ".", "..", "a/../b", "a/./b", "../a", "a b", `a\b`,
		"a:b", "ä", "tmp", "tmp/x", "a/\x00", strings.Repeat("a", 256), strings.Repeat("a/", 600) + "a"}
	for _, name := range bad {
		if err := d.Put(ctx, name, []byte("x")); !errors.Is(err, repo.ErrInvalidName) {
			t.Errorf("Put(%q) = %v, want ErrInvalidName", name, err)
		}
		if err := d.ReadAt(ctx, name, make([]byte, 1), 0); !errors.Is(err, repo.ErrInvalidName) {
			t.Errorf("ReadAt(%q) = %v, want ErrInvalidName", name, err)
		}
		if _, err := d.Size(ctx, name); !errors.Is(err, repo.ErrInvalidName) {
			t.Errorf("Size(%q) = %v, want ErrInvalidName", name, err)
		}
		if err := d.Delete(ctx, name); !errors.Is(err, repo.ErrInvalidName) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	for _, name := range []string{"a.b", "...", "a/..b/c..", "-_.", "A/Z/09", "x/tmp", strings.Repeat("b", 255)} {
		put(t, d, name, []byte(name))
		if got := read(t, d, name); string(got) != name {
			t.Errorf("%q read back %q", name, got)
		}
	}
}

func testPutDoesNotRetain(t *testing.T, d repo.Drive) {
	data := pattern(100, 9)
	put(t, d, "keep", data)
	for i := range data {
		data[i] = 0
	}
	if got := read(t, d, "keep"); !bytes.Equal(got, pattern(100, 9)) {
		t.Error("changing the slice after Put changed the stored object")
	}
	p := make([]byte, 10)
	if err := d.ReadAt(context.Background(), "keep", p, 0); err != nil {
		t.Fatal(err)
	}
	p[0]++
	if got := read(t, d, "keep"); !bytes.Equal(got, pattern(100, 9)) {
		t.Error("changing the slice after ReadAt changed the stored object")
	}
}

func testConcurrentPuts(t *testing.T, d repo.Drive) {
	ctx := context.Background()
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("c/%d/x/%d", i%4, i)
			if err := d.Put(ctx, name, pattern(2000+i, byte(i))); err != nil {
				errs <- err
			}
		})
		// Deletes of neighbours in the same folders race with folder creation.
		wg.Go(func() {
			if err := d.Delete(ctx, fmt.Sprintf("c/%d/x/gone%d", i%4, i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := list(t, d, "c/")
	if len(got) != n {
		t.Errorf("List found %d objects, want %d", len(got), n)
	}
	for i := range n {
		name := fmt.Sprintf("c/%d/x/%d", i%4, i)
		if b := read(t, d, name); !bytes.Equal(b, pattern(2000+i, byte(i))) {
			t.Errorf("%s: wrong content", name)
		}
	}
}

func testContextCancelled(t *testing.T, d repo.Drive) {
	put(t, d, "ctx/x", []byte("x"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context = %v, want context.Canceled", what, err)
		}
	}
	check("Put", d.Put(ctx, "ctx/y", []byte("y")))
	check("ReadAt", d.ReadAt(ctx, "ctx/x", make([]byte, 1), 0))
	_, err := d.Size(ctx, "ctx/x")
	check("Size", err)
	check("List", d.List(ctx, "", func(string, int64) error { return nil }))
	check("Delete", d.Delete(ctx, "ctx/x"))
	if _, err := d.Size(context.Background(), "ctx/y"); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("Put with a cancelled context stored the object (Size: %v)", err)
	}
	if _, err := d.Size(context.Background(), "ctx/x"); err != nil {
		t.Errorf("Delete with a cancelled context removed the object (Size: %v)", err)
	}
}

func testDeletePrefix(t *testing.T, d repo.Drive) {
	pd, ok := d.(repo.PrefixDeleter)
	if !ok {
		t.Skip("drive does not implement repo.PrefixDeleter")
	}
	ctx := context.Background()
	for _, name := range []string{"t/a/x", "t/a/y/z", "t/ab/w", "t/b/v"} {
		put(t, d, name, []byte(name))
	}
	if err := pd.DeletePrefix(ctx, "t/a/"); err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			t.Skip("wrapped drive does not support DeletePrefix")
		}
		t.Fatalf("DeletePrefix: %v", err)
	}
	got := slices.Sorted(maps.Keys(list(t, d, "")))
	if want := []string{"t/ab/w", "t/b/v"}; !slices.Equal(got, want) {
		t.Errorf("after DeletePrefix(t/a/): %v, want %v", got, want)
	}
	if err := pd.DeletePrefix(ctx, "t/none/"); err != nil {
		t.Errorf("DeletePrefix of an empty prefix: %v", err)
	}
	for _, bad := range []string{"", "t/b", "/t/"} {
		if err := pd.DeletePrefix(ctx, bad); !errors.Is(err, repo.ErrInvalidName) {
			t.Errorf("DeletePrefix(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
	put(t, d, "t/a/x", []byte("back"))
	if string(read(t, d, "t/a/x")) != "back" {
		t.Error("put after DeletePrefix failed")
	}
}
