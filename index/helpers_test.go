package index

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// openTest opens a fresh database in a temporary directory on the real disk.
func openTest(t testing.TB) *DB {
	t.Helper()
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// openMem opens a database on an in-memory file system.
func openMem(t testing.TB, fs vfs.FS, dir string) *DB {
	t.Helper()
	db, err := Open(dir, Options{FS: fs})
	if err != nil {
		t.Fatalf("Open %s: %v", dir, err)
	}
	return db
}

// commit runs fill on a new batch and commits it.
func commit(t testing.TB, db *DB, fill func(b *Batch)) {
	t.Helper()
	b := db.NewBatch()
	defer b.Close()
	fill(b)
	if err := b.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// pattern returns n bytes counting up from start.
func pattern(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func tenantID(last ...byte) TenantID {
	var id TenantID
	copy(id[len(id)-len(last):], last)
	return id
}

func blobID(seed byte) BlobID {
	var id BlobID
	copy(id[:], pattern(seed, len(id)))
	return id
}

func packID(seed byte) PackID {
	var id PackID
	copy(id[:], pattern(seed, len(id)))
	return id
}

func snapID(seed byte) SnapshotID {
	var id SnapshotID
	copy(id[:], pattern(seed, len(id)))
	return id
}

// samplePack returns a valid pack record with k data and m parity shards.
func samplePack(id PackID, k, m uint8) PackRec {
	p := PackRec{
		ID: id, K: k, M: m, BlockSize: 64 << 10,
		DataLen: 16<<20 + 12345, ShardLen: (16<<20 + 12345 + 3) / 4,
		Blobs: 812, Created: 1767225600,
	}
	for i := 0; i < int(k)+int(m); i++ {
		var d DriveID
		copy(d[:], pattern(0xd0+byte(i), 8))
		var h Hash
		copy(h[:], pattern(byte(0x10*i), 32))
		p.Drives = append(p.Drives, d)
		p.Hashes = append(p.Hashes, h)
	}
	return p
}
