package index

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// crashBlobs is how many blob locations each batch in the crash test holds:
// enough to span several WAL blocks, so a torn write could be partial.
const crashBlobs = 600

func crashBatch(b *Batch, tn TenantID, tag uint32) {
	for i := range crashBlobs {
		var id BlobID
		id[0], id[1] = byte(i>>8), byte(i)
		b.PutBlob(tn, id, BlobLoc{Offset: tag, Length: uint32(i)})
	}
}

// countBlobs returns how many of tn's blobs exist, checking that each carries
// tag.
func countBlobs(t *testing.T, db *DB, tn TenantID, tag uint32) int {
	t.Helper()
	n := 0
	if err := db.Blobs(tn, func(id BlobID, l BlobLoc) error {
		if l.Offset != tag {
			t.Errorf("blob %s has tag %d, want %d", id, l.Offset, tag)
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCrash simulates machine crashes with pebble's crashable memory file
// system: a committed batch always survives; a batch never committed leaves
// nothing; and a batch whose commit was not yet synced when the machine
// went down survives entirely or not at all.
func TestCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	db := openMem(t, fs, "db")
	committed, pending, unsynced := tenantID(1), tenantID(2), tenantID(3)

	commit(t, db, func(b *Batch) {
		b.PutTenant(TenantRec{ID: committed, Version: 1, Wrapped: []byte("wk")})
		crashBatch(b, committed, 1)
	})

	// Built but never committed.
	nb := db.NewBatch()
	nb.PutTenant(TenantRec{ID: pending, Version: 1})
	crashBatch(nb, pending, 2)

	// Applied without a sync (which Commit never does) so that the crash
	// may tear it; reaching into the pebble batch is the only way to get one.
	ub := db.NewBatch()
	ub.PutTenant(TenantRec{ID: unsynced, Version: 1})
	crashBatch(ub, unsynced, 3)
	if err := ub.b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	_ = ub.Close()

	type clone struct {
		name string
		cfg  vfs.CrashCloneCfg
	}
	clones := []clone{
		{"synced only", vfs.CrashCloneCfg{}},
		{"everything", vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(0, 0))}},
	}
	for seed := range uint64(8) {
		clones = append(clones, clone{"random", vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, seed))}})
	}
	var crashed []*vfs.MemFS
	for _, c := range clones {
		crashed = append(crashed, fs.CrashClone(c.cfg))
	}
	_ = nb.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	sawUnsynced := map[bool]bool{}
	for i, c := range clones {
		db := openMem(t, crashed[i], "db")
		if got := countBlobs(t, db, committed, 1); got != crashBlobs {
			t.Errorf("%s %d: committed batch has %d of %d blobs", c.name, i, got, crashBlobs)
		}
		if _, err := db.Tenant(committed); err != nil {
			t.Errorf("%s %d: committed tenant: %v", c.name, i, err)
		}
		if got := countBlobs(t, db, pending, 2); got != 0 {
			t.Errorf("%s %d: uncommitted batch left %d blobs", c.name, i, got)
		}
		if _, err := db.Tenant(pending); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s %d: uncommitted tenant: %v", c.name, i, err)
		}
		n := countBlobs(t, db, unsynced, 3)
		_, terr := db.Tenant(unsynced)
		switch {
		case n == crashBlobs && terr == nil:
			sawUnsynced[true] = true
		case n == 0 && errors.Is(terr, ErrNotFound):
			sawUnsynced[false] = true
		default:
			t.Errorf("%s %d: unsynced batch torn: %d of %d blobs, tenant: %v", c.name, i, n, crashBlobs, terr)
		}
		// (Even the clone that keeps every write may lose the unsynced
		// batch: pebble's WAL writer may not have handed it to the file
		// system yet. Only all-or-nothing is asserted.)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("unsynced batch survived: %v", sawUnsynced)
}
