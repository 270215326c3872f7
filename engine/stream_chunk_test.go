package engine

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A stream is chunked on every core (chunk.Parallel) and a file by one
// chunker, at the same bytes: a stream of a file's contents, backed up after
// the file, stores nothing but its root tree.
func TestStreamCutsLikeFile(t *testing.T) {
	ctx := context.Background()
	tn := itTenant(t, itOpen(t, itInit(t, InitOptions{})), "acme")
	data := append(append(itRandBytes(1, 6<<20), make([]byte, 3<<20)...), itRandBytes(2, 5<<20+17)...)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "dump.sql"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if s := itBackup(t, tn, src); s.Stats.BlobsAdded < 4 {
		t.Fatalf("the file gave %d data blobs, want several chunks", s.Stats.BlobsAdded)
	}
	s, err := tn.BackupStream(ctx, bytes.NewReader(data), "dump.sql", BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The one new blob is the root tree (a folder holding the stream).
	if s.Stats.BlobsAdded != 1 || s.Stats.Bytes != int64(len(data)) {
		t.Fatalf("the stream of the same %d bytes: %d bytes read, %d new blobs (%d bytes), want only a root tree",
			len(data), s.Stats.Bytes, s.Stats.BlobsAdded, s.Stats.BytesAdded)
	}
}
