package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"coffer/engine/policy"
	"coffer/index"
	"coffer/repo"
)

// Tests of an index that lags the drives (issue 16): the index loses what
// pebble lost (a torn WAL, a rolled-back MANIFEST, a lost table) while the
// drives keep everything. The cmd tests damage real pebble files; these
// remove the records from the index the way such a loss does, to reach each
// case exactly.

// ibDropPack removes a pack record and the locations of the blobs in it from
// the index, as a lost table of pack and blob keys does.
func ibDropPack(t *testing.T, e *Engine, tn *Tenant, pack repo.PackID) {
	t.Helper()
	b := e.db.NewBatch()
	defer b.Close()
	err := e.db.Blobs(tn.id, func(id index.BlobID, loc index.BlobLoc) error {
		if loc.Pack == index.PackID(pack) {
			b.DeleteBlob(tn.id, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b.DeletePack(tn.id, index.PackID(pack))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
}

// ibDropSnapshot removes a snapshot record from the index only.
func ibDropSnapshot(t *testing.T, e *Engine, tn *Tenant, s *Snapshot) {
	t.Helper()
	var sid index.SnapshotID
	if err := decodeHexInto(sid[:], s.ID); err != nil {
		t.Fatal(err)
	}
	b := e.db.NewBatch()
	defer b.Close()
	b.DeleteSnapshot(tn.id, sid)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
}

// ibScrubKeeps runs scrub --repair and wants it to find the index behind
// (exit 14) and to have removed nothing from the drives.
func ibScrubKeeps(t *testing.T, e *Engine, dir string) {
	t.Helper()
	before := itShards(t, dir)
	rep, err := itScrub(t, e, true)
	if !errors.Is(err, ErrCheckFailed) || rep.IndexBehind != 1 {
		t.Errorf("scrub --repair over a lagging index: %v, %d tenants behind (want 1)\n%s", err, rep.IndexBehind, itProblems(rep))
	}
	if !strings.Contains(itProblems(rep), "index behind: run coffer index rebuild") {
		t.Errorf("the report does not say index behind: run coffer index rebuild:\n%s", itProblems(rep))
	}
	if after := itShards(t, dir); !slices.Equal(before, after) {
		t.Errorf("scrub --repair changed the shard files: %d before, %d after", len(before), len(after))
	}
}

// ibRebuildAndRestore closes e, rebuilds the index and restores the
// fixture's snapshot identically; then a scrub is clean.
func ibRebuildAndRestore(t *testing.T, e *Engine, f *itFixture) {
	t.Helper()
	e.Close()
	rbRebuild(t, f.dir, RebuildOptions{})
	e2 := itOpen(t, f.dir)
	tn := itTenant(t, e2, f.name)
	itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))
	itScrubClean(t, e2)
}

// TestIndexBehindLostPacks: the index lost the record and blob locations of
// a data pack (a table of pack and blob keys), but not the snapshot that
// needs it, so the snapshot record names are in step. The pack's shards look
// like an interrupted write; scrub --repair must keep them because a
// snapshot needs what the index no longer locates, check must call it
// damage, and a rebuild brings everything back.
func TestIndexBehindLostPacks(t *testing.T) {
	ctx := context.Background()
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	ibDropPack(t, e, tn, itIndex(t, tn).packsOf(DataBlob)[0])

	if err := tn.CheckSnapshotRecords(ctx); err != nil {
		t.Errorf("the snapshot records are in step: %v", err)
	}
	if _, err := e.Check(ctx, CheckOptions{}); !errors.Is(err, ErrCheckFailed) {
		t.Errorf("check over an index that lost a needed pack: %v, want ErrCheckFailed", err)
	}
	ibScrubKeeps(t, e, f.dir)
	ibRebuildAndRestore(t, e, f)
}

// TestIndexBehindWritersRefuse: the index lost the last batches of a backup
// (its tree pack and its snapshot record, as a torn WAL does). The drives
// hold a snapshot record that needs what the index lacks: backup, forget,
// prune and key rotation refuse naming coffer index rebuild, check exits
// 14, scrub --repair removes nothing; a rebuild restores the snapshot.
func TestIndexBehindWritersRefuse(t *testing.T) {
	ctx := context.Background()
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	for _, p := range itIndex(t, tn).packsOf(TreeBlob) {
		ibDropPack(t, e, tn, p)
	}
	ibDropSnapshot(t, e, tn, f.snap)

	if err := tn.CheckSnapshotRecords(ctx); !errors.Is(err, ErrIndexBehind) || !strings.Contains(err.Error(), "coffer index rebuild") {
		t.Errorf("CheckSnapshotRecords: %v, want ErrIndexBehind naming coffer index rebuild", err)
	}
	writers := map[string]func() error{
		"backup": func() error { _, err := tn.Backup(ctx, []string{f.src}, BackupOptions{}); return err },
		"forget": func() error {
			_, err := tn.Forget(ctx, nil, ForgetOptions{Policy: policy.Policy{Last: 1}})
			return err
		},
		"prune": func() error { _, err := tn.Prune(ctx, PruneOptions{}); return err },
	}
	for name, run := range writers {
		if err := run(); !errors.Is(err, ErrIndexBehind) {
			t.Errorf("%s over a lagging index: %v, want ErrIndexBehind", name, err)
		}
	}
	rep, err := e.Check(ctx, CheckOptions{})
	if !errors.Is(err, ErrCheckFailed) || !strings.Contains(strings.Join(rep.Problems, "\n"), "coffer index rebuild") {
		t.Errorf("check over a lagging index: %v\n%q", err, rep.Problems)
	}
	ibScrubKeeps(t, e, f.dir)
	ibRebuildAndRestore(t, e, f)
}

// TestIndexBehindAdoptsCompleteSnapshot: a backup stopped after writing its
// snapshot record to the drives and before indexing it (every pack of it is
// indexed). That is no damage: check notes it; the next command of the
// tenant adds it to the index, as a rebuild would; and scrub --repair, the
// index being in step, still removes a true orphan.
func TestIndexBehindAdoptsCompleteSnapshot(t *testing.T) {
	ctx := context.Background()
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	ibDropSnapshot(t, e, tn, f.snap)
	orphan := ibPlantOrphan(t, f.dir)

	rep, err := e.Check(ctx, CheckOptions{})
	if err != nil || !strings.Contains(strings.Join(rep.Notes, "\n"), "is on the drives but not in the index") {
		t.Errorf("check after a backup stopped before its index batch: %v\nproblems %q\nnotes %q", err, rep.Problems, rep.Notes)
	}
	srep, err := itScrub(t, e, true)
	if err != nil || srep.Orphaned.Repaired != 1 {
		t.Errorf("scrub --repair: %v\n%s", err, itProblems(srep))
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the orphan survived the repair: %v", err)
	}
	snaps, err := tn.Snapshots(ctx)
	if err != nil || len(snaps) != 1 || snaps[0].ID != f.snap.ID {
		t.Fatalf("snapshots after the repair: %v, %d", err, len(snaps))
	}
	itCompareTrees(t, f.src, itRestore(t, tn, snaps[0], f.src))
	itScrubClean(t, e)
}

// ibPlantOrphan copies a shard file under a new pack ID: the shards of an
// interrupted write. It returns the new file.
func ibPlantOrphan(t *testing.T, dir string) string {
	t.Helper()
	sh := itShards(t, dir)[0]
	b, err := os.ReadFile(sh.path)
	if err != nil {
		t.Fatal(err)
	}
	var id repo.PackID
	randomBytes(id[:])
	p := filepath.Join(sh.drive, filepath.FromSlash(repo.ShardName(sh.container, id, 0)))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestIndexBehindOldIndexForgotten: an index written before forgotten
// snapshots were recorded has neither key for a forgotten snapshot. The
// check reads its record once, finds a tombstone, records it, and the
// writers go on.
func TestIndexBehindOldIndexForgotten(t *testing.T) {
	ctx := context.Background()
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	second := itBackup(t, tn, f.src)
	// Forget the first snapshot as the code before forgotten records did:
	// tombstone on the drives, snapshot deleted from the index.
	var sid index.SnapshotID
	if err := decodeHexInto(sid[:], f.snap.ID); err != nil {
		t.Fatal(err)
	}
	if err := tn.writeTombstone(ctx, f.snap.ID, 1); err != nil {
		t.Fatal(err)
	}
	ibDropSnapshot(t, e, tn, f.snap)

	if err := tn.CheckSnapshotRecords(ctx); err != nil {
		t.Fatalf("CheckSnapshotRecords with an old forgotten snapshot: %v", err)
	}
	if fr, err := e.db.Forgotten(tn.id, sid); err != nil || fr.Version != 2 {
		t.Errorf("the tombstone was not recorded as forgotten: %+v, %v", fr, err)
	}
	if _, err := tn.Prune(ctx, PruneOptions{}); err != nil {
		t.Errorf("prune: %v", err)
	}
	itCompareTrees(t, f.src, itRestore(t, tn, second, f.src))
}

// TestIndexBehindTenantRecords: the index lost a tenant (its record is on
// the drives). CheckTenantRecords says so, and a master-key rotation, which
// would destroy the only epoch that opens that tenant's key, refuses.
func TestIndexBehindTenantRecords(t *testing.T) {
	ctx := context.Background()
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	keyBefore, err := os.ReadFile(defaultKeyFile(f.dir))
	if err != nil {
		t.Fatal(err)
	}
	b := e.db.NewBatch()
	b.DeleteTenant(index.TenantID(tn.id))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := e.CheckTenantRecords(ctx); !errors.Is(err, ErrIndexBehind) {
		t.Errorf("CheckTenantRecords: %v, want ErrIndexBehind", err)
	}
	if _, err := e.RotateMasterKey(ctx); !errors.Is(err, ErrIndexBehind) {
		t.Errorf("key rotation over an index that lost a tenant: %v, want ErrIndexBehind", err)
	}
	if keyAfter, _ := os.ReadFile(defaultKeyFile(f.dir)); string(keyAfter) != string(keyBefore) {
		t.Errorf("the master key file changed")
	}
	ibRebuildAndRestore(t, e, f)
}

// TestIndexBehindLostUnlock: the index lost an unlock (the drives hold the
// tenant's newer, active record). A sweep past the grace period must not
// shred the tenant on the index's old, locked state.
func TestIndexBehindLostUnlock(t *testing.T) {
	ctx := context.Background()
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	now := time.Now()
	e, err := Open(f.dir, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if _, err := e.CreateTenant(ctx, "other", TenantOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.LockTenant(ctx, f.name); err != nil {
		t.Fatal(err)
	}
	te, err := e.findTenant(f.name)
	if err != nil {
		t.Fatal(err)
	}
	locked := te.rec
	if _, err := e.UnlockTenant(ctx, f.name); err != nil {
		t.Fatal(err)
	}
	b := e.db.NewBatch()
	b.PutTenant(locked)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	// The records show the grace period passing (another tenant's daily
	// changes), so the sweep would shred on the index's locked state.
	passDays(t, e, &now, "other", 30)
	rep, err := e.SweepTenants(ctx, now)
	if !errors.Is(err, ErrIndexBehind) {
		t.Errorf("sweep over a lost unlock: %+v, %v; want ErrIndexBehind", rep, err)
	}
	ibRebuildAndRestore(t, e, f)
}

// TestIndexBehindSharedTreeNotAdopted: two snapshots of the same source
// share the source's trees; the index lost both records and a data pack they need.
// Neither is taken for complete (a tree found incomplete for the first is
// not remembered as walked), so neither is adopted.
func TestIndexBehindSharedTreeNotAdopted(t *testing.T) {
	ctx := context.Background()
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	second := itBackup(t, tn, f.src) // unchanged: the trees of the source are shared
	ibDropPack(t, e, tn, itIndex(t, tn).packsOf(DataBlob)[0])
	ibDropSnapshot(t, e, tn, f.snap)
	ibDropSnapshot(t, e, tn, second)

	err := tn.CheckSnapshotRecords(ctx)
	if !errors.Is(err, ErrIndexBehind) || !strings.Contains(err.Error(), "2 snapshot record(s)") {
		t.Errorf("CheckSnapshotRecords: %v, want both snapshots behind", err)
	}
	if snaps, err := tn.Snapshots(ctx); err != nil || len(snaps) != 0 {
		t.Errorf("a snapshot that needs what the index lacks was adopted: %d, %v", len(snaps), err)
	}
	ibRebuildAndRestore(t, e, f)
}
