package index

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

func TestRoundTripThroughDB(t *testing.T) {
	db := openTest(t)
	tn := tenantID(1)
	rec := TenantRec{ID: tn, Version: 4, Epoch: 2, Wrapped: pattern(0xa0, 72), Meta: pattern(0x30, 40)}
	loc := BlobLoc{Pack: packID(9), Type: TreeBlob, Offset: 77, Length: 1000, RawLength: 4000}
	pack := samplePack(packID(9), 4, 2)
	snap := SnapshotRec{ID: snapID(5), Version: 1, Sealed: pattern(0x50, 99)}
	drive := DriveID{1, 2, 3, 4, 5, 6, 7, 8}
	commit(t, db, func(b *Batch) {
		b.PutConfig([]byte(`{"k":4}`))
		b.PutDrive(drive, []byte("drive-record"))
		b.PutTenant(rec)
		b.PutBlob(tn, blobID(3), loc)
		b.PutPack(tn, pack)
		b.PutSnapshot(tn, snap)
		b.PutAudit(42, []byte("audit-42"))
		b.PutMeta("counter", []byte{7})
		if b.Len() != 8 {
			t.Errorf("Len = %d, want 8", b.Len())
		}
	})

	if v, err := db.Config(); err != nil || string(v) != `{"k":4}` {
		t.Errorf("Config = %q, %v", v, err)
	}
	var drives []string
	if err := db.Drives(func(id DriveID, v []byte) error {
		drives = append(drives, id.String()+"="+string(v))
		return nil
	}); err != nil || !slices.Equal(drives, []string{"0102030405060708=drive-record"}) {
		t.Errorf("Drives = %v, %v", drives, err)
	}
	if got, err := db.Tenant(tn); err != nil || !reflect.DeepEqual(got, rec) {
		t.Errorf("Tenant = %+v, %v", got, err)
	}
	if got, ok, err := db.Blob(tn, blobID(3)); err != nil || !ok || got != loc {
		t.Errorf("Blob = %+v, %v, %v", got, ok, err)
	}
	if got, err := db.Pack(tn, pack.ID); err != nil || !reflect.DeepEqual(got, pack) {
		t.Errorf("Pack = %+v, %v", got, err)
	}
	if got, err := db.Snapshot(tn, snap.ID); err != nil || !reflect.DeepEqual(got, snap) {
		t.Errorf("Snapshot = %+v, %v", got, err)
	}
	var audit []string
	if err := db.Audit(0, func(seq uint64, v []byte) error {
		audit = append(audit, fmt.Sprintf("%d=%s", seq, v))
		return nil
	}); err != nil || !slices.Equal(audit, []string{"42=audit-42"}) {
		t.Errorf("Audit = %v, %v", audit, err)
	}
	if v, err := db.Meta("counter"); err != nil || !bytes.Equal(v, []byte{7}) {
		t.Errorf("Meta = %x, %v", v, err)
	}
	var n int
	if err := db.Raw(func(k, v []byte) error { n++; return nil }); err != nil || n != 8 {
		t.Errorf("Raw saw %d keys, %v; want 8", n, err)
	}

	// Deletes.
	commit(t, db, func(b *Batch) {
		b.DeleteTenant(tn)
		b.DeleteBlob(tn, blobID(3))
		b.DeletePack(tn, pack.ID)
		b.DeleteSnapshot(tn, snap.ID)
		b.DeleteDrive(drive)
		b.DeleteMeta("counter")
	})
	if _, err := db.Tenant(tn); !errors.Is(err, ErrNotFound) {
		t.Errorf("Tenant after delete: %v", err)
	}
	if _, ok, err := db.Blob(tn, blobID(3)); ok || err != nil {
		t.Errorf("Blob after delete: %v, %v", ok, err)
	}
	if _, err := db.Pack(tn, pack.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Pack after delete: %v", err)
	}
	if _, err := db.Snapshot(tn, snap.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Snapshot after delete: %v", err)
	}
	if _, err := db.Meta("counter"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Meta after delete: %v", err)
	}
	n = 0
	_ = db.Raw(func(k, v []byte) error { n++; return nil })
	if n != 2 { // config and audit remain
		t.Errorf("Raw after delete saw %d keys, want 2", n)
	}
}

func TestNotFound(t *testing.T) {
	db := openTest(t)
	tn := tenantID(1)
	if _, err := db.Config(); !errors.Is(err, ErrNotFound) {
		t.Errorf("Config: %v", err)
	}
	if _, err := db.Tenant(tn); !errors.Is(err, ErrNotFound) {
		t.Errorf("Tenant: %v", err)
	}
	if l, ok, err := db.Blob(tn, blobID(1)); ok || err != nil || l != (BlobLoc{}) {
		t.Errorf("Blob: %v %v %v", l, ok, err)
	}
	if _, err := db.Pack(tn, packID(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Pack: %v", err)
	}
	if _, err := db.Snapshot(tn, snapID(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Snapshot: %v", err)
	}
	if _, err := db.Meta("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Meta: %v", err)
	}
	if _, err := db.Meta(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Meta(\"\"): %v", err)
	}
}

// neighbours are tenant IDs chosen to sit next to each other in key order,
// including around carries and at both ends of the ID space.
var neighbours = []TenantID{
	{},
	tenantID(0x01),
	tenantID(0x02),
	tenantID(0x00, 0xff),
	tenantID(0x01, 0x00),
	{0: 0x00, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff},
	{0: 0x01},
	{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff},
}

// fillTenants stores, for tenant i of neighbours, a tenant record, blobs,
// packs and snapshots whose fields name i, with IDs in shuffled order.
func fillTenants(t *testing.T, db *DB) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	commit(t, db, func(b *Batch) {
		for i, tn := range neighbours {
			b.PutTenant(TenantRec{ID: tn, Version: uint64(i)})
			for _, j := range rng.Perm(5) {
				id := blobID(byte(j * 40))
				id[0] = byte(rng.IntN(256))
				b.PutBlob(tn, id, BlobLoc{Offset: uint32(i), Length: uint32(j)})
			}
			for _, seed := range rng.Perm(256)[:3] {
				id := packID(byte(seed))
				p := samplePack(id, 2, 1)
				p.Blobs = uint32(i)
				b.PutPack(tn, p)
			}
			for j, seed := range rng.Perm(256)[:4] {
				id := snapID(byte(seed))
				b.PutSnapshot(tn, SnapshotRec{ID: id, Version: uint64(i), Sealed: []byte{byte(j)}})
			}
			for _, seed := range rng.Perm(256)[:2] {
				b.PutForgotten(tn, ForgottenRec{ID: snapID(byte(seed)), Version: uint64(i)})
			}
		}
		// Neighbouring record kinds must not leak in either.
		b.PutAudit(1, []byte("a"))
		b.PutMeta("m", []byte("m"))
		b.PutDrive(DriveID{0xff}, []byte("d"))
	})
}

// tenantCounts returns how many blobs, packs and snapshots Blobs, Packs and
// Snapshots return for tn, checking that each belongs to tenant want and
// that IDs come in ascending order.
func tenantCounts(t *testing.T, db *DB, tn TenantID, want int) (blobs, packs, snaps int) {
	t.Helper()
	var prev []byte
	ordered := func(id []byte) {
		if prev != nil && bytes.Compare(prev, id) >= 0 {
			t.Errorf("tenant %s: ID %x after %x", tn, id, prev)
		}
		prev = bytes.Clone(id)
	}
	if err := db.Blobs(tn, func(id BlobID, l BlobLoc) error {
		if l.Offset != uint32(want) {
			t.Errorf("tenant %d got blob of tenant %d", want, l.Offset)
		}
		ordered(id[:])
		blobs++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	prev = nil
	if err := db.Packs(tn, func(p PackRec) error {
		if p.Blobs != uint32(want) {
			t.Errorf("tenant %d got pack of tenant %d", want, p.Blobs)
		}
		ordered(p.ID[:])
		packs++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	prev = nil
	if err := db.Snapshots(tn, func(s SnapshotRec) error {
		if s.Version != uint64(want) {
			t.Errorf("tenant %d got snapshot of tenant %d", want, s.Version)
		}
		ordered(s.ID[:])
		snaps++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return blobs, packs, snaps
}

func TestTenantIsolationAndOrder(t *testing.T) {
	db := openTest(t)
	fillTenants(t, db)
	for i, tn := range neighbours {
		b, p, s := tenantCounts(t, db, tn, i)
		if b != 5 || p != 3 || s != 4 {
			t.Errorf("tenant %s: %d blobs, %d packs, %d snapshots; want 5, 3, 4", tn, b, p, s)
		}
	}
	var got []TenantID
	if err := db.Tenants(func(r TenantRec) error { got = append(got, r.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(neighbours)
	slices.SortFunc(want, func(a, b TenantID) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(got, want) {
		t.Errorf("Tenants = %v, want %v", got, want)
	}
}

func TestDeleteTenantData(t *testing.T) {
	for _, victim := range []int{0, 1, 3, 5, len(neighbours) - 1} {
		t.Run(neighbours[victim].String(), func(t *testing.T) {
			db := openTest(t)
			fillTenants(t, db)
			commit(t, db, func(b *Batch) {
				b.DeleteTenantData(neighbours[victim])
				if b.Len() != 4 {
					t.Errorf("Len = %d, want 4", b.Len())
				}
			})
			for i, tn := range neighbours {
				b, p, s := tenantCounts(t, db, tn, i)
				want := [3]int{5, 3, 4}
				if i == victim {
					want = [3]int{}
				}
				if [3]int{b, p, s} != want {
					t.Errorf("tenant %d: %d blobs, %d packs, %d snapshots; want %v", i, b, p, s, want)
				}
				forgotten := 0
				if err := db.ForgottenSnapshots(tn, func(f ForgottenRec) error {
					if f.Version != uint64(i) {
						t.Errorf("tenant %d got a forgotten snapshot of tenant %d", i, f.Version)
					}
					forgotten++
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if wantF := map[bool]int{true: 0, false: 2}[i == victim]; forgotten != wantF {
					t.Errorf("tenant %d: %d forgotten snapshots, want %d", i, forgotten, wantF)
				}
				// The tenant record itself stays.
				if _, err := db.Tenant(tn); err != nil {
					t.Errorf("tenant %d record: %v", i, err)
				}
			}
			for _, name := range []string{"m"} {
				if _, err := db.Meta(name); err != nil {
					t.Errorf("meta %s: %v", name, err)
				}
			}
		})
	}
}

func TestIterationStopsOnError(t *testing.T) {
	db := openTest(t)
	fillTenants(t, db)
	stop := errors.New("stop")
	tn := neighbours[2]
	calls := 0
	cb := func() error { calls++; return stop }
	for name, run := range map[string]func() error{
		"Blobs":     func() error { return db.Blobs(tn, func(BlobID, BlobLoc) error { return cb() }) },
		"Packs":     func() error { return db.Packs(tn, func(PackRec) error { return cb() }) },
		"Snapshots": func() error { return db.Snapshots(tn, func(SnapshotRec) error { return cb() }) },
		"Forgotten": func() error { return db.ForgottenSnapshots(tn, func(ForgottenRec) error { return cb() }) },
		"Tenants":   func() error { return db.Tenants(func(TenantRec) error { return cb() }) },
		"Drives":    func() error { return db.Drives(func(DriveID, []byte) error { return cb() }) },
		"Audit":     func() error { return db.Audit(0, func(uint64, []byte) error { return cb() }) },
		"Raw":       func() error { return db.Raw(func(k, v []byte) error { return cb() }) },
	} {
		calls = 0
		if err := run(); err != stop || calls != 1 {
			t.Errorf("%s: err %v after %d calls; want stop after 1", name, err, calls)
		}
	}
}

func TestAuditFrom(t *testing.T) {
	db := openTest(t)
	commit(t, db, func(b *Batch) {
		for _, seq := range []uint64{300, 1, 256, 2, ^uint64(0), 255} {
			b.PutAudit(seq, []byte(fmt.Sprint(seq)))
		}
		b.PutMeta("x", nil)
	})
	for _, tc := range []struct {
		from uint64
		want []uint64
	}{
		{0, []uint64{1, 2, 255, 256, 300, ^uint64(0)}},
		{3, []uint64{255, 256, 300, ^uint64(0)}},
		{256, []uint64{256, 300, ^uint64(0)}},
		{^uint64(0), []uint64{^uint64(0)}},
	} {
		var got []uint64
		if err := db.Audit(tc.from, func(seq uint64, v []byte) error {
			if string(v) != fmt.Sprint(seq) {
				t.Errorf("seq %d has value %q", seq, v)
			}
			got = append(got, seq)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Audit(%d) = %v, want %v", tc.from, got, tc.want)
		}
	}
}

// TestCallbackMayKeep checks that slices passed to callbacks are owned by the
// callee: they keep their contents after later writes and iterations.
func TestCallbackMayKeep(t *testing.T) {
	db := openTest(t)
	tn := tenantID(1)
	commit(t, db, func(b *Batch) {
		b.PutTenant(TenantRec{ID: tn, Wrapped: []byte("wrapped-1"), Meta: []byte("meta-1")})
		b.PutAudit(1, []byte("audit-1"))
	})
	var kept []TenantRec
	var keptAudit, keptKey, keptVal []byte
	_ = db.Tenants(func(r TenantRec) error { kept = append(kept, r); return nil })
	_ = db.Audit(0, func(_ uint64, v []byte) error { keptAudit = v; return nil })
	_ = db.Raw(func(k, v []byte) error {
		if k[0] == kindAudit {
			keptKey, keptVal = k, v
		}
		return nil
	})
	commit(t, db, func(b *Batch) {
		b.PutTenant(TenantRec{ID: tn, Wrapped: []byte("wrapped-2"), Meta: []byte("meta-2")})
		b.PutAudit(1, []byte("audit-2"))
	})
	_ = db.Tenants(func(TenantRec) error { return nil })
	_ = db.Raw(func(k, v []byte) error { return nil })
	if string(kept[0].Wrapped) != "wrapped-1" || string(kept[0].Meta) != "meta-1" ||
		string(keptAudit) != "audit-1" || string(keptVal) != "audit-1" || !bytes.Equal(keptKey, auditKey(1)) {
		t.Errorf("kept values changed: %q %q %q %q %x", kept[0].Wrapped, kept[0].Meta, keptAudit, keptVal, keptKey)
	}
}

// TestCorruptValues plants undecodable bytes under real keys and checks that
// every reader reports ErrCorrupt rather than panicking or skipping.
func TestCorruptValues(t *testing.T) {
	tn := tenantID(1)
	tests := []struct {
		name string
		key  []byte
		read func(db *DB) error
	}{
		{"tenant", tenantKey(tn), func(db *DB) error { _, err := db.Tenant(tn); return err }},
		{"tenants", tenantKey(tn), func(db *DB) error { return db.Tenants(func(TenantRec) error { return nil }) }},
		{"blob", blobKey(tn, blobID(1)), func(db *DB) error { _, _, err := db.Blob(tn, blobID(1)); return err }},
		{"blobs", blobKey(tn, blobID(1)), func(db *DB) error { return db.Blobs(tn, func(BlobID, BlobLoc) error { return nil }) }},
		{"pack", packKey(tn, packID(1)), func(db *DB) error { _, err := db.Pack(tn, packID(1)); return err }},
		{"packs", packKey(tn, packID(1)), func(db *DB) error { return db.Packs(tn, func(PackRec) error { return nil }) }},
		{"snapshot", snapshotKey(tn, snapID(1)), func(db *DB) error { _, err := db.Snapshot(tn, snapID(1)); return err }},
		{"snapshots", snapshotKey(tn, snapID(1)), func(db *DB) error { return db.Snapshots(tn, func(SnapshotRec) error { return nil }) }},
		// Keys of the wrong length inside a kind's range.
		{"short blob key", append(tenantPrefix(kindBlob, tn), 1, 2, 3), func(db *DB) error { return db.Blobs(tn, func(BlobID, BlobLoc) error { return nil }) }},
		{"long pack key", append(packKey(tn, packID(1)), 0), func(db *DB) error { return db.Packs(tn, func(PackRec) error { return nil }) }},
		{"long snapshot key", append(snapshotKey(tn, snapID(1)), 0), func(db *DB) error { return db.Snapshots(tn, func(SnapshotRec) error { return nil }) }},
		{"short tenant key", []byte{kindTenant, 1}, func(db *DB) error { return db.Tenants(func(TenantRec) error { return nil }) }},
		{"short drive key", []byte{kindDrive, 1}, func(db *DB) error { return db.Drives(func(DriveID, []byte) error { return nil }) }},
		{"short audit key", []byte{kindAudit, 1}, func(db *DB) error { return db.Audit(0, func(uint64, []byte) error { return nil }) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t)
			if err := db.db.Set(tc.key, []byte{0xee, 1, 2}, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			if err := tc.read(db); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestBatchFailsAsAWhole(t *testing.T) {
	tests := []struct {
		name string
		bad  func(b *Batch)
	}{
		{"pack with missing drive", func(b *Batch) {
			p := samplePack(packID(1), 4, 2)
			p.Drives = p.Drives[:5]
			b.PutPack(tenantID(1), p)
		}},
		{"pack with k=0", func(b *Batch) {
			p := samplePack(packID(1), 4, 2)
			p.K, p.M = 0, 6
			b.PutPack(tenantID(1), p)
		}},
		{"empty meta name", func(b *Batch) { b.PutMeta("", []byte{1}) }},
		{"long meta name", func(b *Batch) { b.DeleteMeta(string(make([]byte, 256))) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t)
			b := db.NewBatch()
			defer b.Close()
			b.PutConfig([]byte("before"))
			tc.bad(b)
			b.PutMeta("after", []byte("after"))
			if err := b.Commit(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Commit = %v, want ErrInvalid", err)
			}
			if err := b.Commit(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("second Commit = %v, want the first error again", err)
			}
			if err := db.Raw(func(k, v []byte) error {
				return fmt.Errorf("found key %x after a failed batch", k)
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBatchLifecycle(t *testing.T) {
	db := openTest(t)
	b := db.NewBatch()
	b.PutConfig([]byte("c"))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Commit = %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}

	// A closed, uncommitted batch writes nothing.
	b = db.NewBatch()
	b.PutMeta("x", []byte("x"))
	_ = b.Close()
	if err := b.Commit(); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close = %v, want ErrClosed", err)
	}
	if _, err := db.Meta("x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Meta after closed batch: %v", err)
	}
}

func TestUseAfterClose(t *testing.T) {
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	pending := db.NewBatch()
	pending.PutConfig([]byte("x"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
	if err := pending.Commit(); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit of pending batch = %v", err)
	}
	_ = pending.Close()
	if _, err := db.Config(); !errors.Is(err, ErrClosed) {
		t.Errorf("Config = %v", err)
	}
	if _, _, err := db.Blob(TenantID{}, BlobID{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Blob = %v", err)
	}
	if err := db.Raw(func(k, v []byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Raw = %v", err)
	}
	b := db.NewBatch()
	b.PutConfig([]byte("y"))
	if err := b.Commit(); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit on closed DB = %v", err)
	}
	_ = b.Close()
}

func TestReadOnlyAndMustExist(t *testing.T) {
	dir := t.TempDir() + "/db"
	if _, err := Open(dir, Options{ReadOnly: true}); !errors.Is(err, ErrNotExist) {
		t.Fatalf("ReadOnly on missing dir = %v, want ErrNotExist", err)
	}
	if _, err := Open(dir, Options{MustExist: true}); !errors.Is(err, ErrNotExist) {
		t.Fatalf("MustExist on missing dir = %v, want ErrNotExist", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{{ReadOnly: true}, {MustExist: true}} {
		if _, err := Open(dir, o); !errors.Is(err, ErrNotExist) {
			t.Fatalf("%+v on empty dir = %v, want ErrNotExist", o, err)
		}
	}
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, db, func(b *Batch) { b.PutConfig([]byte("cfg")) })
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if v, err := ro.Config(); err != nil || string(v) != "cfg" {
		t.Errorf("Config = %q, %v", v, err)
	}
	b := ro.NewBatch()
	defer b.Close()
	b.PutConfig([]byte("new"))
	if err := b.Commit(); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Commit on read-only = %v, want ErrReadOnly", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{CacheSize: 1000}); err == nil {
		t.Fatal("tiny cache accepted")
	}
	o := Options{}
	o.setDefaults()
	if o.CacheSize != DefaultCacheSize || o.Validate() != nil {
		t.Fatalf("defaults %+v invalid", o)
	}
}

// TestConcurrentUse runs writers and readers at once; with -race it checks
// that the DB is safe for concurrent use and that a reader never sees part
// of a batch.
func TestConcurrentUse(t *testing.T) {
	db := openTest(t)
	const writers, batches, perBatch = 3, 20, 10
	done := make(chan error, writers+1)
	for w := range writers {
		go func() {
			tn := tenantID(byte(w))
			for i := range batches {
				b := db.NewBatch()
				for j := range perBatch {
					b.PutBlob(tn, blobID(byte(i*perBatch+j)), BlobLoc{Offset: uint32(i)})
				}
				err := b.Commit()
				_ = b.Close()
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	go func() {
		for range 50 {
			for w := range writers {
				n := 0
				if err := db.Blobs(tenantID(byte(w)), func(BlobID, BlobLoc) error { n++; return nil }); err != nil {
					done <- err
					return
				}
				if n%perBatch != 0 {
					done <- fmt.Errorf("tenant %d: saw %d blobs, not a whole number of batches", w, n)
					return
				}
				if _, _, err := db.Blob(tenantID(byte(w)), blobID(0)); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	for range writers + 1 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for w := range writers {
		n := 0
		_ = db.Blobs(tenantID(byte(w)), func(BlobID, BlobLoc) error { n++; return nil })
		if n != batches*perBatch {
			t.Errorf("tenant %d: %d blobs, want %d", w, n, batches*perBatch)
		}
	}
}

// TestMetaPrefix: only the entries under the prefix, in name order, and a
// prefix of 0xff bytes reaches the end of the metadata.
func TestMetaPrefix(t *testing.T) {
	db := openTest(t)
	commit(t, db, func(b *Batch) {
		for _, n := range []string{"ck/b", "ck/a", "ck", "ckt/a", "cj/z", "ck0", "\xff\xffz"} {
			b.PutMeta(n, []byte("v"+n))
		}
		b.PutAudit(1, []byte("after meta in key order? no: audit"))
	})
	list := func(prefix string) []string {
		var got []string
		if err := db.MetaPrefix(prefix, func(name string, v []byte) error {
			if string(v) != "v"+name {
				t.Errorf("%q = %q", name, v)
			}
			got = append(got, name)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := list("ck/"); !slices.Equal(got, []string{"ck/a", "ck/b"}) {
		t.Errorf("ck/: %q", got)
	}
	if got := list("ck"); !slices.Equal(got, []string{"ck", "ck/a", "ck/b", "ck0", "ckt/a"}) {
		t.Errorf("ck: %q", got)
	}
	if got := list("\xff\xff"); !slices.Equal(got, []string{"\xff\xffz"}) {
		t.Errorf("0xff prefix: %q", got)
	}
	if err := db.MetaPrefix("", func(string, []byte) error { return nil }); err == nil {
		t.Error("empty prefix accepted")
	}
}
