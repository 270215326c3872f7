package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/index"
	"coffer/repo"
	"coffer/repo/drivetest"
)

// itScrubTree is a source tree of about 1.2 MiB: with 1 MiB packs it fills a
// couple of data packs and a tree pack, so scrubs and restores stay quick.
func itScrubTree() []itEntry {
	return []itEntry{
		{path: "a.bin", kind: 'f', size: 700 << 10},
		{path: "docs/b.bin", kind: 'f', size: 500 << 10},
		{path: "docs/c.txt", kind: 'f', data: "gamma\n"},
		{path: "small/d.txt", kind: 'f', size: 3000},
		{path: "link", kind: 'l', target: "docs/c.txt"},
	}
}

// itScrub runs a scrub and checks the invariants every report keeps.
func itScrub(t *testing.T, e *Engine, repair bool) (*ScrubReport, error) {
	t.Helper()
	rep, err := e.Scrub(context.Background(), ScrubOptions{Repair: repair})
	if rep == nil {
		t.Fatalf("Scrub(repair=%v) could not run: %v", repair, err)
	}
	if (err != nil) != (rep.Unrepaired() > 0) {
		t.Fatalf("Scrub(repair=%v): error %v with %d unrepaired problems", repair, err, rep.Unrepaired())
	}
	if err != nil && !errors.Is(err, ErrCheckFailed) {
		t.Fatalf("Scrub(repair=%v): %v, want an error wrapping ErrCheckFailed", repair, err)
	}
	if _, jerr := json.Marshal(rep); jerr != nil {
		t.Fatalf("report does not encode as JSON: %v", jerr)
	}
	return rep, err
}

// itScrubClean scrubs without repair and wants nothing found.
func itScrubClean(t *testing.T, e *Engine) *ScrubReport {
	t.Helper()
	rep, err := itScrub(t, e, false)
	if err != nil || len(rep.Problems) != 0 || rep.BelowFull != 0 {
		t.Fatalf("scrub of a healthy repository: %v\n%s", err, itProblems(rep))
	}
	return rep
}

func itProblems(rep *ScrubReport) string {
	var b strings.Builder
	for _, p := range rep.Problems {
		shard := ""
		if p.Shard != nil {
			shard = fmt.Sprintf(" shard %d", *p.Shard)
		}
		fmt.Fprintf(&b, "  %s: pack %s%s drive %s: %s (repaired %v %s)\n", p.Kind, p.Pack, shard, p.Drive, p.Detail, p.Repaired, p.RepairError)
	}
	return b.String()
}

// itCheckReadData runs check --read-data and wants it clean.
func itCheckReadData(t *testing.T, e *Engine) {
	t.Helper()
	rep, err := e.Check(context.Background(), CheckOptions{ReadData: true})
	if err != nil {
		t.Fatalf("check --read-data: %v (problems %q)", err, rep.Problems)
	}
}

// itPackRecs returns the tenant's pack records.
func itPackRecs(t *testing.T, tn *Tenant) []index.PackRec {
	t.Helper()
	var out []index.PackRec
	if err := tn.e.db.Packs(index.TenantID(tn.id), func(r index.PackRec) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// itCheckLayout checks every pack of tn: k+m distinct drives in service, and
// no rack holding more than m shards of a pack (the layouts used here allow
// that).
func itCheckLayout(t *testing.T, e *Engine, tn *Tenant) {
	t.Helper()
	rack := map[repo.DriveID]string{}
	for _, d := range e.Drives() {
		id, _ := repo.ParseDriveID(d.ID)
		if d.State == driveActive {
			rack[id] = d.Rack
		}
	}
	for _, rec := range itPackRecs(t, tn) {
		seen := map[index.DriveID]bool{}
		per := map[string]int{}
		for i, d := range rec.Drives {
			r, ok := rack[repo.DriveID(d)]
			if !ok {
				t.Errorf("pack %s shard %d is on drive %s, which is not in service", rec.ID, i, d)
			}
			if seen[d] {
				t.Errorf("pack %s has two shards on drive %s", rec.ID, d)
			}
			seen[d] = true
			per[r]++
		}
		for r, n := range per {
			if n > int(rec.M) {
				t.Errorf("pack %s has %d shards in rack %s, more than m = %d", rec.ID, n, r, rec.M)
			}
		}
	}
}

// TestITScrubBitrot flips bytes in up to m random shards of every pack: the
// data still restores, scrub reports exactly those shards as corrupt, repair
// heals them, a second scrub and check --read-data are clean.
func TestITScrubBitrot(t *testing.T) {
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	rng := rand.New(rand.NewPCG(7, 11))
	var flipped int64
	for _, byIndex := range itPackShards(itShards(t, f.dir)) {
		n := 1 + rng.IntN(DefaultParityShards)
		for _, i := range rng.Perm(DefaultDataShards + DefaultParityShards)[:n] {
			itCorruptShard(t, byIndex[i].path)
			flipped++
		}
	}
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))

	rep, err := itScrub(t, e, false)
	if err == nil || rep.Corrupt.Found != flipped || rep.Missing.Found != 0 || rep.Orphaned.Found != 0 || rep.Misplaced.Found != 0 {
		t.Fatalf("scrub: %v; found %d corrupt, %d missing, %d orphaned, %d misplaced; want %d corrupt only\n%s",
			err, rep.Corrupt.Found, rep.Missing.Found, rep.Orphaned.Found, rep.Misplaced.Found, flipped, itProblems(rep))
	}
	if rep.BelowFull != rep.Packs || rep.StillBelowFull != rep.Packs || rep.Unreadable != 0 {
		t.Errorf("packs below full redundancy %d (still %d, unreadable %d), want all %d", rep.BelowFull, rep.StillBelowFull, rep.Unreadable, rep.Packs)
	}
	for _, p := range rep.Problems {
		if p.Kind != ScrubCorrupt || p.Repaired || p.Shard == nil || p.Tenant != tn.ID() || p.Drive == "" {
			t.Errorf("problem %+v", p)
		}
	}

	rep, err = itScrub(t, e, true)
	if err != nil || rep.Corrupt.Repaired != flipped || rep.StillBelowFull != 0 {
		t.Fatalf("scrub --repair: %v; repaired %d of %d\n%s", err, rep.Corrupt.Repaired, flipped, itProblems(rep))
	}
	itScrubClean(t, e)
	itCheckReadData(t, e)
	itCheckLayout(t, e, tn)
	itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))
}

// TestITScrubTamper rewrites the data of shards together with fresh block
// CRCs: only the hash (index and sealed pack header) can tell. Scrub must
// report them as corrupt and repair must heal them.
func TestITScrubTamper(t *testing.T) {
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	var tampered int64
	for _, byIndex := range itPackShards(itShards(t, f.dir)) {
		itTamperShard(t, byIndex[int(tampered)%6].path)
		tampered++
	}
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	rep, err := itScrub(t, e, false)
	if err == nil || rep.Corrupt.Found != tampered {
		t.Fatalf("scrub after tampering: %v, %d corrupt, want %d\n%s", err, rep.Corrupt.Found, tampered, itProblems(rep))
	}
	for _, p := range rep.Problems {
		if !strings.Contains(p.Detail, "hash") {
			t.Errorf("tampered shard reported without naming its hash: %+v", p)
		}
	}
	if rep, err := itScrub(t, e, true); err != nil || rep.Corrupt.Repaired != tampered {
		t.Fatalf("scrub --repair: %v\n%s", err, itProblems(rep))
	}
	itScrubClean(t, e)
	itCheckReadData(t, e)
	itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))
}

// TestITScrubMissingShard deletes shard files on a 9-drive, 3-rack layout:
// scrub reports them missing; repair rebuilds them keeping the racks spread.
func TestITScrubMissingShard(t *testing.T) {
	nine := make([]DriveSpec, 9)
	for i := range nine {
		nine[i] = DriveSpec{Rack: fmt.Sprintf("r%d", i%3+1)}
	}
	f := itNewFixture(t, InitOptions{Drives: nine}, itScrubTree())
	var removed int64
	for _, byIndex := range itPackShards(itShards(t, f.dir)) {
		if err := os.Remove(byIndex[2].path); err != nil {
			t.Fatal(err)
		}
		removed++
	}
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	rep, err := itScrub(t, e, false)
	if err == nil || rep.Missing.Found != removed || rep.Corrupt.Found != 0 {
		t.Fatalf("scrub: %v, %d missing, want %d\n%s", err, rep.Missing.Found, removed, itProblems(rep))
	}
	for _, p := range rep.Problems {
		if p.Kind != ScrubMissing || !strings.Contains(p.Detail, "absent") {
			t.Errorf("problem %+v, want a missing shard whose file is absent", p)
		}
	}
	if rep, err := itScrub(t, e, true); err != nil || rep.Missing.Repaired != removed {
		t.Fatalf("scrub --repair: %v\n%s", err, itProblems(rep))
	}
	itScrubClean(t, e)
	itCheckLayout(t, e, tn)
	itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))
}

// TestITScrubMovesCorruptShardToEmptiestRack builds a pack with three shards
// in one rack (one moved there by hand, index updated) and corrupts that
// shard: repair must rebuild it in the rack that lacks it, point the index at
// the new copy and only then delete the old one.
func TestITScrubMovesCorruptShardToEmptiestRack(t *testing.T) {
	nine := make([]DriveSpec, 9)
	for i := range nine {
		nine[i] = DriveSpec{Rack: fmt.Sprintf("r%d", i%3+1)}
	}
	f := itNewFixture(t, InitOptions{Drives: nine}, itScrubTree())
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	rack := map[index.DriveID]string{}
	path := map[index.DriveID]string{}
	for _, d := range e.Drives() {
		id, _ := index.ParseDriveID(d.ID)
		rack[id], path[id] = d.Rack, d.Path
	}
	rec := itPackRecs(t, tn)[0]
	// Move shard a from rack A to the free drive of another rack B.
	a := 0
	from := rec.Drives[a]
	var to index.DriveID
	for d, r := range rack {
		used := false
		for _, x := range rec.Drives {
			used = used || x == d
		}
		if !used && r != rack[from] {
			to = d
			break
		}
	}
	name := filepath.FromSlash(repo.ShardName(tn.container(), repo.PackID(rec.ID), a))
	b, err := os.ReadFile(filepath.Join(path[from], name))
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(path[to], name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(path[from], name)); err != nil {
		t.Fatal(err)
	}
	rec.Drives[a] = to
	batch := e.db.NewBatch()
	batch.PutPack(index.TenantID(tn.id), rec)
	if err := batch.Commit(); err != nil {
		t.Fatal(err)
	}
	batch.Close()
	itCorruptShard(t, dst)

	rep, err := itScrub(t, e, true)
	if err != nil || rep.Corrupt.Found != 1 || rep.Corrupt.Repaired != 1 {
		t.Fatalf("scrub --repair: %v\n%s", err, itProblems(rep))
	}
	after, err := e.db.Pack(index.TenantID(tn.id), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if nd := after.Drives[a]; rack[nd] != rack[from] || nd == to {
		t.Errorf("shard %d rebuilt on drive %s in rack %s; want the free drive of rack %s", a, nd, rack[nd], rack[from])
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the corrupt copy on drive %s was not removed: %v", to, err)
	}
	itScrubClean(t, e)
	itCheckLayout(t, e, tn)
	itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))
}

// TestITScrubOrphans plants a shard under an unindexed pack ID, a container
// of an unknown tenant, a misplaced copy of an indexed shard and stale and
// recent temporary files: scrub reports the first four, repair removes them,
// and leaves the recent temporary file alone.
func TestITScrubOrphans(t *testing.T) {
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	shards := itPackShards(itShards(t, f.dir))
	var one map[int]itShard
	for _, byIndex := range shards {
		one = byIndex
		break
	}
	src := one[0]
	b, err := os.ReadFile(src.path)
	if err != nil {
		t.Fatal(err)
	}
	plant := func(drive, name string) string {
		t.Helper()
		p := filepath.Join(drive, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var orphanID repo.PackID
	randomBytes(orphanID[:])
	orphan := plant(src.drive, repo.ShardName(src.container, orphanID, 0))
	var stranger [16]byte
	randomBytes(stranger[:])
	strangerDir := filepath.Join(one[1].drive, "t", fmt.Sprintf("%x", stranger))
	foreign := plant(one[1].drive, repo.ShardName(fmt.Sprintf("%x", stranger), orphanID, 1))
	misplaced := plant(one[1].drive, repo.ShardName(src.container, src.pack, 0)) // shard 0 on shard 1's drive
	tmp := filepath.Join(one[2].drive, "tmp")
	stale, recent := filepath.Join(tmp, "a1.tmp"), filepath.Join(tmp, "b2.tmp")
	for _, p := range []string{stale, recent} {
		if err := os.MkdirAll(tmp, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half a shard"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}

	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	rep, err := itScrub(t, e, false)
	if err == nil || rep.Orphaned.Found != 2 || rep.Misplaced.Found != 1 || rep.StaleTemp.Found != 1 || rep.Missing.Found != 0 || rep.Corrupt.Found != 0 {
		t.Fatalf("scrub: %v; %d orphaned (want 2), %d misplaced (want 1), %d stale temporary files (want 1)\n%s",
			err, rep.Orphaned.Found, rep.Misplaced.Found, rep.StaleTemp.Found, itProblems(rep))
	}
	for _, p := range rep.Problems {
		if p.Kind == ScrubOrphan && p.Tenant == fmt.Sprintf("%x", stranger) && !strings.Contains(p.Detail, "neither") {
			t.Errorf("unknown container reported as %q", p.Detail)
		}
	}
	rep, err = itScrub(t, e, true)
	if err != nil || rep.Orphaned.Repaired != 2 || rep.Misplaced.Repaired != 1 || rep.StaleTemp.Repaired != 1 {
		t.Fatalf("scrub --repair: %v\n%s", err, itProblems(rep))
	}
	for _, p := range []string{orphan, foreign, strangerDir, misplaced, stale} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived the repair: %v", p, err)
		}
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("a recent temporary file (a put in progress) was removed: %v", err)
	}
	if _, err := os.Stat(src.path); err != nil {
		t.Errorf("the indexed copy of the misplaced shard is gone: %v", err)
	}
	itScrubClean(t, e)
	itCheckReadData(t, e)
	itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))
}

// TestITScrubKeepsContainerTheDrivesKnow: a container of a tenant that the
// index lacks but whose tenant record is on the drives (the index lost it) is
// reported and never removed: index rebuild, not scrub, recovers it.
func TestITScrubKeepsContainerTheDrivesKnow(t *testing.T) {
	ctx := context.Background()
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	b := e.db.NewBatch()
	b.DeleteTenant(index.TenantID(tn.id))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	before := len(itShards(t, f.dir))
	rep, err := e.Scrub(ctx, ScrubOptions{Repair: true})
	if !errors.Is(err, ErrCheckFailed) || rep.Orphaned.Found == 0 || rep.Orphaned.Repaired != 0 {
		t.Fatalf("scrub --repair with the tenant missing from the index: %v\n%s", err, itProblems(rep))
	}
	if !strings.Contains(itProblems(rep), "index rebuild") {
		t.Errorf("the report does not point at index rebuild:\n%s", itProblems(rep))
	}
	if after := len(itShards(t, f.dir)); after != before {
		t.Errorf("%d shard files before, %d after: scrub removed a container the drives know", before, after)
	}
}

// TestITScrubFailedDrive marks a drive failed on a 9-drive, 3-rack layout:
// scrub reports its shards missing; repair re-homes them keeping racks
// spread; afterwards any two of the other eight drives can be lost and the
// snapshot still restores identically.
func TestITScrubFailedDrive(t *testing.T) {
	ctx := context.Background()
	nine := make([]DriveSpec, 9)
	for i := range nine {
		nine[i] = DriveSpec{Rack: fmt.Sprintf("r%d", i%3+1)}
	}
	f := itNewFixture(t, InitOptions{Drives: nine}, itScrubTree())
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	// Fail the drive that holds the most shards.
	count := map[index.DriveID]int64{}
	for _, rec := range itPackRecs(t, tn) {
		for _, d := range rec.Drives {
			count[d]++
		}
	}
	var victim index.DriveID
	for d, n := range count {
		if n > count[victim] {
			victim = d
		}
	}
	err := e.updateConfig(ctx, func(c *config) error {
		for i := range c.Drives {
			if c.Drives[i].ID == victim.String() {
				c.Drives[i].State = driveFailed
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := itScrub(t, e, false)
	if err == nil || rep.Missing.Found != count[victim] {
		t.Fatalf("scrub with drive %s failed: %v, %d missing, want %d\n%s", victim, err, rep.Missing.Found, count[victim], itProblems(rep))
	}
	for _, p := range rep.Problems {
		if p.Kind == ScrubRecord {
			continue // records the drive held lack a copy too (updateConfig does not re-place them)
		}
		if !strings.Contains(p.Detail, "marked failed") || p.Drive != victim.String() {
			t.Errorf("problem %+v, want a shard on the failed drive", p)
		}
	}
	if rep, err := itScrub(t, e, true); err != nil || rep.Missing.Repaired != count[victim] {
		t.Fatalf("scrub --repair: %v\n%s", err, itProblems(rep))
	}
	itCheckLayout(t, e, tn)
	itScrubClean(t, e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	var others []string
	e2 := itOpen(t, f.dir)
	for _, d := range e2.Drives() {
		if d.ID != victim.String() {
			others = append(others, d.ID)
		}
	}
	e2.Close()
	for i := range others {
		for j := i + 1; j < len(others); j++ {
			lost := map[string]bool{others[i]: true, others[j]: true}
			e, err := Open(f.dir, Options{WrapDrive: func(id string, d repo.Drive) repo.Drive {
				if !lost[id] {
					return d
				}
				fd := drivetest.NewFaulty(d)
				fd.Vanish()
				return fd
			}})
			if err != nil {
				t.Fatalf("open without drives %s and %s: %v", others[i], others[j], err)
			}
			tn, err := e.OpenTenant(ctx, f.name)
			if err != nil {
				t.Fatal(err)
			}
			itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))
			e.Close()
			if t.Failed() {
				t.Fatalf("restore failed without drives %s and %s", others[i], others[j])
			}
		}
	}
}

// TestITScrubDegradedPack backs up while one drive fails every shard put:
// the backup succeeds on the k+1 write quorum, leaving packs below full
// redundancy; scrub reports them and repair heals them.
func TestITScrubDegradedPack(t *testing.T) {
	dir := itInit(t, InitOptions{})
	src := filepath.Join(t.TempDir(), "src")
	itBuildTree(t, src, itScrubTree())
	e0 := itOpen(t, dir)
	bad := e0.Drives()[3].ID
	e0.Close()
	e, err := Open(dir, Options{WrapDrive: func(id string, d repo.Drive) repo.Drive {
		if id != bad {
			return d
		}
		fd := drivetest.NewFaulty(d)
		fd.Add(drivetest.Rule{Op: drivetest.OpPut, Name: "/p/", Action: drivetest.Fail})
		return fd
	}})
	if err != nil {
		t.Fatal(err)
	}
	snap := itBackup(t, itTenant(t, e, "acme"), src)
	e.Close()

	e = itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	packs := int64(len(itPackRecs(t, tn)))
	for _, rec := range itPackRecs(t, tn) {
		if n := len(e.rp().Degraded(packInfo(tn.container(), rec))); n != 1 {
			t.Fatalf("pack %s has %d unwritten shards, want 1", rec.ID, n)
		}
	}
	rep, err := itScrub(t, e, false)
	if err == nil || rep.BelowFull != packs || rep.Missing.Found != packs {
		t.Fatalf("scrub: %v; %d packs below full redundancy, %d missing; want %d each\n%s", err, rep.BelowFull, rep.Missing.Found, packs, itProblems(rep))
	}
	for _, p := range rep.Problems {
		if !strings.Contains(p.Detail, "degraded") || p.Drive != "" {
			t.Errorf("problem %+v, want a never-written shard", p)
		}
	}
	rep, err = itScrub(t, e, true)
	if err != nil || rep.Missing.Repaired != packs || rep.StillBelowFull != 0 {
		t.Fatalf("scrub --repair: %v\n%s", err, itProblems(rep))
	}
	for _, rec := range itPackRecs(t, tn) {
		if n := len(e.rp().Degraded(packInfo(tn.container(), rec))); n != 0 {
			t.Errorf("pack %s still has %d unwritten shards", rec.ID, n)
		}
	}
	itScrubClean(t, e)
	itCheckReadData(t, e)
	itCheckLayout(t, e, tn)
	itCompareTrees(t, src, itRestore(t, tn, snap, src))
}

// TestITScrubIndexHashAndTrailer damages what VerifyShard alone cannot see:
// the index's hash of a good shard (the sealed header is the truth: repair
// corrects the index) and a shard's copy of the sealed pack header (repair
// rewrites the shard with a trailer that authenticates).
func TestITScrubIndexHashAndTrailer(t *testing.T) {
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	shards := itPackShards(itShards(t, f.dir))
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	recs := itPackRecs(t, tn)
	if len(recs) < 2 {
		t.Fatalf("%d packs, want 2", len(recs))
	}
	rec := recs[0]
	rec.Hashes[4][0] ^= 1
	b := e.db.NewBatch()
	b.PutPack(index.TenantID(tn.id), rec)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	p := shards[repo.PackID(recs[1].ID)][0].path
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 1 // the last byte of the trailer: its authentication tag
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	rep, err := itScrub(t, e, false)
	if err == nil || rep.Corrupt.Found != 2 {
		t.Fatalf("scrub: %v, %d corrupt, want 2\n%s", err, rep.Corrupt.Found, itProblems(rep))
	}
	got := itProblems(rep)
	for _, want := range []string{"index records another hash", "sealed pack header does not authenticate"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if rep, err := itScrub(t, e, true); err != nil || rep.Corrupt.Repaired != 2 {
		t.Fatalf("scrub --repair: %v\n%s", err, itProblems(rep))
	}
	fixed, err := e.db.Pack(index.TenantID(tn.id), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fixed.Hashes[4] == rec.Hashes[4] {
		t.Error("the index's wrong hash was not corrected")
	}
	itScrubClean(t, e)
	itCheckReadData(t, e)
}
