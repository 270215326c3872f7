package remote

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"coffer/engine"
)

// TestRemoteOpener: random access through the server reads the same bytes
// as the source, a backup key may not open, and once the tenant is locked
// the reads fail (also of cached blobs).
func TestRemoteOpener(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bcl, _ := f.client(t, "alice", "backup")
	if _, err := bcl.Opener(ctx, engine.OpenerOptions{}); !errors.Is(err, ErrRefused) {
		t.Fatalf("open with a backup key: %v", err)
	}
	cl, _ := f.client(t, "alice", "restore")
	op, err := cl.Opener(ctx, engine.OpenerOptions{CheckEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	want := bytes.Repeat([]byte("0123456789abcdef"), 200000)
	file, err := op.Open(ctx, f.snapA, filepath.Join(f.src, "sub/big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1 << 20, int64(len(want)) - 5} {
		buf := make([]byte, 70000)
		n, err := file.ReadAt(buf, off)
		if (err != nil && n == len(buf)) || !bytes.Equal(buf[:n], want[off:min(off+70000, int64(len(want)))]) {
			t.Fatalf("ReadAt %d: %d, %v", off, n, err)
		}
	}
	if _, err := f.e.LockTenant(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if _, err := file.ReadAt(make([]byte, 10), 0); !errors.Is(err, engine.ErrClientRefused) {
		t.Fatalf("read after the lock: %v", err)
	}
}
