package engine

// Tests of Prune: space freed and everything restorable, the repack
// threshold, crash injection at many points, concurrency with backups of
// other tenants and of the same tenant, dry runs, leftovers of shredded
// tenants, and a benchmark.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/index"
	"coffer/repo"
)

// prFiles writes files (name → content) below dir.
func prFiles(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// prPhysical is the bytes of all shard files on the repository's drives.
func prPhysical(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	ds, _ := filepath.Glob(filepath.Join(dir, "drives", "*", "t"))
	for _, d := range ds {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() && strings.Contains(filepath.ToSlash(p), "/p/") {
				if fi, err := e.Info(); err == nil {
					n += fi.Size()
				}
			}
			return nil
		})
	}
	return n
}

// prShardFiles counts the shard files on the drives of the repository in dir.
func prShardFiles(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	ds, _ := filepath.Glob(filepath.Join(dir, "drives", "*", "t"))
	for _, d := range ds {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() && strings.Contains(filepath.ToSlash(p), "/p/") {
				n++
			}
			return nil
		})
	}
	return n
}

// prCheck runs Check with data reading; it fails the test on any problem
// and, when clean is set, on any note (no leftovers of any kind).
func prCheck(t testing.TB, e *Engine, what string, clean bool) {
	t.Helper()
	rep, err := e.Check(context.Background(), CheckOptions{ReadData: true})
	if err != nil || rep == nil || len(rep.Problems) > 0 {
		var probs []string
		if rep != nil {
			probs = rep.Problems
		}
		t.Fatalf("%s: check: %v\n  %s", what, err, strings.Join(probs, "\n  "))
	}
	if clean && len(rep.Notes) > 0 {
		t.Errorf("%s: check notes: %s", what, strings.Join(rep.Notes, "; "))
	}
}

// prRestoreSame restores s and compares every regular file below src.
func prRestoreSame(t testing.TB, tn *Tenant, s *Snapshot, src string, files map[string][]byte) {
	t.Helper()
	target, err := os.MkdirTemp(os.TempDir(), "prune-restore-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(target)
	if _, err := tn.Restore(context.Background(), s, target, RestoreOptions{}); err != nil {
		t.Fatalf("restore %s: %v", s.ID[:8], err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(target, src, name))
		if err != nil {
			t.Errorf("snapshot %s: %s: %v", s.ID[:8], name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("snapshot %s: %s restores different bytes", s.ID[:8], name)
		}
	}
}

// prCopyDir copies the files and folders below src to dst.
func prCopyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

func prNoScratch(t testing.TB, dir string) {
	t.Helper()
	if m, _ := filepath.Glob(filepath.Join(dir, pruneScratchPrefix+"*")); len(m) > 0 {
		t.Errorf("scratch databases left behind: %v", m)
	}
}

// prScenario is a tenant with three snapshots in which, once S1 and S2 are
// forgotten, P1 (20 blobs of 50 KiB) keeps 19 used blobs (5% unused) and
// P2 (10 blobs of 100 KiB) keeps 3 (70% unused); S3 references exactly
// those 22 blobs, deduplicated.
type prScenario struct {
	dir        string
	tenant     string
	s1, s2, s3 *Snapshot
	src3       string
	files3     map[string][]byte
	p1, p2     index.PackID
}

func prNewScenario(t testing.TB, forget bool) *prScenario {
	t.Helper()
	ctx := context.Background()
	sc := &prScenario{tenant: "acme", files3: map[string][]byte{}}
	sc.dir = filepath.Join(t.TempDir(), "repo")
	if _, err := Init(ctx, sc.dir, InitOptions{PackSize: itPackSize}); err != nil {
		t.Fatal(err)
	}
	e, err := Open(sc.dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.CreateTenant(ctx, sc.tenant, TenantOptions{}); err != nil {
		t.Fatal(err)
	}
	tn, err := e.OpenTenant(ctx, sc.tenant)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	f1, f2 := map[string][]byte{}, map[string][]byte{}
	for i := range 20 {
		f1[fmt.Sprintf("s%02d", i)] = itRandBytes(uint64(100+i), 50<<10)
	}
	for i := range 10 {
		f2[fmt.Sprintf("b%02d", i)] = itRandBytes(uint64(200+i), 100<<10)
	}
	src1, src2 := filepath.Join(root, "one"), filepath.Join(root, "two")
	sc.src3 = filepath.Join(root, "three")
	prFiles(t, src1, f1)
	prFiles(t, src2, f2)
	for i := range 19 {
		n := fmt.Sprintf("s%02d", i)
		sc.files3["small/"+n] = f1[n]
	}
	for i := range 3 {
		n := fmt.Sprintf("b%02d", i)
		sc.files3["big/"+n] = f2[n]
	}
	prFiles(t, sc.src3, sc.files3)
	for _, x := range []struct {
		src string
		s   **Snapshot
	}{{src1, &sc.s1}, {src2, &sc.s2}, {sc.src3, &sc.s3}} {
		if *x.s, err = tn.Backup(ctx, []string{x.src}, BackupOptions{Host: "h"}); err != nil {
			t.Fatal(err)
		}
	}
	loc := func(b []byte) index.PackID {
		l, ok, err := e.db.Blob(tn.id, index.BlobID(tn.keys.ids.Sum(b)))
		if err != nil || !ok {
			t.Fatalf("blob not indexed: %v", err)
		}
		return l.Pack
	}
	sc.p1, sc.p2 = loc(f1["s00"]), loc(f2["b00"])
	for n, b := range f1 {
		if loc(b) != sc.p1 {
			t.Fatalf("file %s is not in the first pack: the scenario needs its 20 blobs in one pack", n)
		}
	}
	for n, b := range f2 {
		if loc(b) != sc.p2 {
			t.Fatalf("file %s is not in the second pack", n)
		}
	}
	if forget {
		if _, err := tn.Forget(ctx, []string{sc.s1.ID, sc.s2.ID}, ForgetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return sc
}

func TestPruneRepackThreshold(t *testing.T) {
	ctx := context.Background()
	sc := prNewScenario(t, true)
	e := itOpen(t, sc.dir)
	tn := itTenant(t, e, sc.tenant)
	before := prPhysical(t, sc.dir)

	rep, err := tn.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// P1 (5% unused) is kept; P2 (70%) is repacked into one new pack; the
	// tree packs of S1 and S2 hold nothing used and go.
	if rep.PacksRepacked != 1 || rep.PacksWritten != 1 || rep.PacksDeleted != 2 || rep.PacksKept != 2 || rep.BlobsRepacked != 3 {
		t.Errorf("report: repacked %d, written %d, deleted %d, kept %d, blobs repacked %d; want 1, 1, 2, 2, 3",
			rep.PacksRepacked, rep.PacksWritten, rep.PacksDeleted, rep.PacksKept, rep.BlobsRepacked)
	}
	if _, err := e.db.Pack(tn.id, sc.p1); err != nil {
		t.Errorf("P1 (5%% unused) was removed: %v", err)
	}
	if _, err := e.db.Pack(tn.id, sc.p2); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("P2 (70%% unused) is still indexed: %v", err)
	}
	for name, b := range sc.files3 {
		l, ok, err := e.db.Blob(tn.id, index.BlobID(tn.keys.ids.Sum(b)))
		if err != nil || !ok || l.Pack == sc.p2 {
			t.Errorf("%s: located in %v (%v, %v)", name, l.Pack, ok, err)
		}
	}
	after := prPhysical(t, sc.dir)
	if after >= before || rep.BytesFreed <= 0 {
		t.Errorf("physical size %d → %d, report freed %d", before, after, rep.BytesFreed)
	}
	prCheck(t, e, "after prune", true)
	prRestoreSame(t, tn, sc.s3, sc.src3, sc.files3)
	prNoScratch(t, sc.dir)

	// A lower threshold repacks P1 too.
	rep, err = tn.Prune(ctx, PruneOptions{MaxUnusedPercent: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PacksRepacked != 1 || rep.PacksDeleted != 0 {
		t.Errorf("at 1%%: repacked %d, deleted %d; want 1 and 0", rep.PacksRepacked, rep.PacksDeleted)
	}
	if _, err := e.db.Pack(tn.id, sc.p1); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("P1 is still indexed at 1%%: %v", err)
	}
	prCheck(t, e, "after second prune", true)
	prRestoreSame(t, tn, sc.s3, sc.src3, sc.files3)

	// Nothing left to do.
	rep, err = tn.Prune(ctx, PruneOptions{MaxUnusedPercent: 1})
	if err != nil || rep.PacksDeleted+rep.PacksRepacked != 0 || rep.BytesFreed != 0 || rep.BlobsUnused != 0 {
		t.Errorf("third prune: %+v, %v", rep, err)
	}
	if _, err := tn.Prune(ctx, PruneOptions{MaxUnusedPercent: 101}); !errors.Is(err, ErrInvalid) {
		t.Errorf("max unused 101%%: %v, want ErrInvalid", err)
	}
}

func TestPruneFreesSpaceAndRestores(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	root := t.TempDir()
	src1, src2 := filepath.Join(root, "v1"), filepath.Join(root, "v2")
	shared := itRandBytes(7, 800<<10)
	f1 := map[string][]byte{"x.bin": itRandBytes(1, 1500<<10), "shared.bin": shared, "d/small.txt": []byte("one")}
	f2 := map[string][]byte{"y.bin": itRandBytes(2, 1200<<10), "shared.bin": shared, "d/small.txt": []byte("two")}
	prFiles(t, src1, f1)
	prFiles(t, src2, f2)
	s1 := itBackup(t, tn, src1)
	s2 := itBackup(t, tn, src2)
	s3 := fgStream(t, tn, "stream.bin", itRandBytes(3, 300<<10), "h", time.Time{})

	if _, err := tn.Forget(ctx, []string{s1.ID}, ForgetOptions{}); err != nil {
		t.Fatal(err)
	}
	files0 := itDriveFiles(t, dir)
	before := prPhysical(t, dir)
	dry, err := tn.Prune(ctx, PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || dry.PacksDeleted+dry.PacksRepacked == 0 || dry.BytesFreed <= 0 || dry.BlobsUnused == 0 {
		t.Errorf("dry run: %+v", dry)
	}
	if files := itDriveFiles(t, dir); len(files) != len(files0) {
		t.Errorf("dry run changed the drives: %d files, was %d", len(files), len(files0))
	}
	rep, err := tn.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := prPhysical(t, dir)
	if after >= before {
		t.Errorf("physical size did not drop: %d → %d", before, after)
	}
	if rep.BytesFreed <= 0 || rep.Seconds <= 0 || rep.PhysicalBefore-rep.PhysicalAfter != rep.BytesFreed {
		t.Errorf("report: freed %d in %vs (before %d, after %d)", rep.BytesFreed, rep.Seconds, rep.PhysicalBefore, rep.PhysicalAfter)
	}
	if dry.PacksDeleted != rep.PacksDeleted || dry.PacksRepacked != rep.PacksRepacked {
		t.Errorf("dry run planned %d deleted, %d repacked; prune did %d, %d", dry.PacksDeleted, dry.PacksRepacked, rep.PacksDeleted, rep.PacksRepacked)
	}
	prCheck(t, e, "after prune", true)
	prRestoreSame(t, tn, s2, src2, f2)
	if got := fgDump(t, tn, s3, "stream.bin"); !bytes.Equal(got, itRandBytes(3, 300<<10)) {
		t.Error("stream snapshot dumps different bytes")
	}
	prNoScratch(t, dir)

	// The audit log has the prune, with numbers only.
	found := false
	_ = e.AuditLog(ctx, func(a AuditEntry) error {
		if a.Action == "prune" && a.Outcome == "ok" && strings.Contains(a.Detail, "bytes_freed=") {
			found = true
		}
		return nil
	})
	if !found {
		t.Error("no prune audit entry")
	}
}

// prFaultyWrites counts puts and deletes over all drives and fails every one
// from the n-th on, as if the process had been killed then.
type prFaultyWrites struct {
	mu   sync.Mutex
	n    int // guarded by mu; 0 = never fail
	seen int // guarded by mu
}

func (f *prFaultyWrites) hit() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen++
	if f.n > 0 && f.seen >= f.n {
		return errors.New("injected: killed")
	}
	return nil
}

func (f *prFaultyWrites) wrap(_ string, d repo.Drive) repo.Drive {
	return &prFaultyDrive{Drive: d, f: f}
}

type prFaultyDrive struct {
	repo.Drive
	f *prFaultyWrites
}

func (d *prFaultyDrive) Put(ctx context.Context, name string, b []byte) error {
	if err := d.f.hit(); err != nil {
		return err
	}
	return d.Drive.Put(ctx, name, b)
}

func (d *prFaultyDrive) Delete(ctx context.Context, name string) error {
	if err := d.f.hit(); err != nil {
		return err
	}
	return d.Drive.Delete(ctx, name)
}

func TestPruneCrashAtManyPoints(t *testing.T) {
	ctx := context.Background()
	sc := prNewScenario(t, true)
	o := PruneOptions{MaxUnusedPercent: 1} // repack both data packs, delete the tree packs

	// Count the writes of an uninterrupted prune.
	probe := filepath.Join(t.TempDir(), "probe")
	itCopyDir(t, sc.dir, probe)
	counter := &prFaultyWrites{}
	e, err := Open(probe, Options{WrapDrive: counter.wrap})
	if err != nil {
		t.Fatal(err)
	}
	tn := itTenant(t, e, sc.tenant)
	full, err := tn.Prune(ctx, o)
	e.Close()
	if err != nil {
		t.Fatal(err)
	}
	total := counter.seen
	if total < 20 || full.PacksRepacked != 2 {
		t.Fatalf("uninterrupted prune: %d writes, %d repacked", total, full.PacksRepacked)
	}
	wantPhysical := prPhysical(t, probe)

	step := max(1, total/14)
	if testing.Short() {
		step = max(1, total/4)
	}
	for n := 1; n <= total; n += step {
		t.Run(fmt.Sprintf("write%d", n), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			itCopyDir(t, sc.dir, dir)
			f := &prFaultyWrites{n: n}
			e, err := Open(dir, Options{WrapDrive: f.wrap})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := itTenant(t, e, sc.tenant).Prune(ctx, o); err == nil && n < total-3 {
				// Only the last writes (audit records) may fail without an error.
				t.Logf("prune killed at write %d still reported success", n)
			}
			e.Close()

			e = itOpen(t, dir)
			tn := itTenant(t, e, sc.tenant)
			prCheck(t, e, "after the kill", false)
			prRestoreSame(t, tn, sc.s3, sc.src3, sc.files3)
			if _, err := tn.Prune(ctx, o); err != nil {
				t.Fatalf("second prune: %v", err)
			}
			prCheck(t, e, "after the second prune", false)
			prRestoreSame(t, tn, sc.s3, sc.src3, sc.files3)
			// What the kill left behind is only unindexed shards, which
			// scrub --repair removes; then the drives hold what an
			// uninterrupted prune leaves.
			if _, err := e.Scrub(ctx, ScrubOptions{Repair: true}); err != nil {
				t.Fatalf("scrub --repair: %v", err)
			}
			prCheck(t, e, "after scrub --repair", true)
			// A repacked pack's sealed header carries its creation time,
			// whose compressed length may differ by a byte or so per
			// shard between two runs; a leftover shard would differ by
			// kilobytes.
			if got, want := prShardFiles(t, dir), prShardFiles(t, probe); got != want {
				t.Errorf("%d shard files after recovery, an uninterrupted prune leaves %d", got, want)
			}
			if got := prPhysical(t, dir); got < wantPhysical-64 || got > wantPhysical+64 {
				t.Errorf("physical size %d after recovery, an uninterrupted prune leaves %d", got, wantPhysical)
			}
			prNoScratch(t, dir)
		})
	}
}

func TestPruneDoesNotBlockOtherTenantsBackup(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	a, b := itTenant(t, e, "a"), itTenant(t, e, "b")
	a1 := fgStream(t, a, "f", itRandBytes(1, 600<<10), "h", time.Time{})
	a2 := fgStream(t, a, "g", itRandBytes(2, 600<<10), "h", time.Time{})
	if _, err := a.Forget(ctx, []string{a1.ID}, ForgetOptions{}); err != nil {
		t.Fatal(err)
	}
	srcB := filepath.Join(t.TempDir(), "b")
	filesB := map[string][]byte{"one": itRandBytes(3, 700<<10), "two": itRandBytes(4, 300<<10)}
	prFiles(t, srcB, filesB)

	// Tenant a's prune pauses after marking until b's backup has finished:
	// if the prune blocked b, this would time out.
	backupDone := make(chan *Snapshot, 1)
	var backupErr error
	var wg sync.WaitGroup
	o := PruneOptions{hook: func(stage string) {
		if stage != "marked" {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := b.Backup(ctx, []string{srcB}, BackupOptions{Host: "h"})
			backupErr = err
			backupDone <- s
		}()
		select {
		case <-backupDone:
			backupDone <- nil // tell the test it finished while a was paused
		case <-time.After(20 * time.Second):
			t.Error("tenant b's backup did not finish while tenant a's prune held a's lock")
		}
	}}
	rep, err := a.Prune(ctx, o)
	wg.Wait()
	if err != nil || backupErr != nil {
		t.Fatalf("prune: %v; backup: %v", err, backupErr)
	}
	if rep.PacksDeleted == 0 {
		t.Errorf("prune deleted nothing: %+v", rep)
	}
	<-backupDone
	sb, err := b.FindSnapshot(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	prCheck(t, e, "after both", true)
	prRestoreSame(t, b, sb, srcB, filesB)
	if got := fgDump(t, a, a2, "g"); !bytes.Equal(got, itRandBytes(2, 600<<10)) {
		t.Error("tenant a's remaining snapshot dumps different bytes")
	}
}

// The hard case: a backup of the same tenant that would deduplicate against
// blobs the prune has just condemned. The backup waits for the prune (both
// hold the tenant's lock), then stores those blobs again.
func TestPruneSameTenantBackupDedupsCondemnedBlobs(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	src := filepath.Join(t.TempDir(), "src")
	files := map[string][]byte{"x.bin": itRandBytes(11, 1200<<10), "y.txt": []byte("hello")}
	prFiles(t, src, files)
	s1 := itBackup(t, tn, src)
	keep := fgStream(t, tn, "k", itRandBytes(12, 200<<10), "h", time.Time{})
	if _, err := tn.Forget(ctx, []string{s1.ID}, ForgetOptions{}); err != nil {
		t.Fatal(err)
	}
	marked, release := make(chan struct{}), make(chan struct{})
	o := PruneOptions{hook: func(stage string) {
		if stage == "marked" {
			close(marked)
			<-release
		}
	}}
	type result struct {
		rep *PruneReport
		err error
	}
	pruneDone := make(chan result, 1)
	go func() {
		rep, err := tn.Prune(ctx, o)
		pruneDone <- result{rep, err}
	}()
	<-marked
	// x.bin's blobs are condemned: unused and still indexed. A backup of
	// the same source now would find them in the index.
	type bres struct {
		s   *Snapshot
		err error
	}
	backupDone := make(chan bres, 1)
	go func() {
		s, err := tn.Backup(ctx, []string{src}, BackupOptions{Host: "h"})
		backupDone <- bres{s, err}
	}()
	select {
	case r := <-backupDone:
		t.Fatalf("the backup finished while the prune was between mark and delete: %v", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	pr := <-pruneDone
	if pr.err != nil {
		t.Fatalf("prune: %v", pr.err)
	}
	if pr.rep.PacksDeleted == 0 {
		t.Errorf("prune deleted no pack: %+v", pr.rep)
	}
	br := <-backupDone
	if br.err != nil {
		t.Fatalf("backup: %v", br.err)
	}
	prCheck(t, e, "after both", true)
	prRestoreSame(t, tn, br.s, src, files)
	if got := fgDump(t, tn, keep, "k"); !bytes.Equal(got, itRandBytes(12, 200<<10)) {
		t.Error("kept snapshot dumps different bytes")
	}
	// And once more after a prune that finds nothing to do for it.
	if _, err := tn.Prune(ctx, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	prRestoreSame(t, tn, br.s, src, files)
}

func TestPruneRemovesShreddedLeftoversAndStaleScratch(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	a, b := itTenant(t, e, "a"), itTenant(t, e, "b")
	keep := fgStream(t, a, "f", itRandBytes(1, 100<<10), "h", time.Time{})
	fgStream(t, b, "f", itRandBytes(2, 100<<10), "h", time.Time{})
	// Keep a copy of b's container on the first drive: that drive "was
	// away" during the shred.
	d1 := itDriveDirs(t, dir)[0]
	saved := filepath.Join(t.TempDir(), "saved")
	itCopyDir(t, filepath.Join(d1, "t", b.ID()), saved)
	if _, err := e.ShredTenant(ctx, "b", "b"); err != nil {
		t.Fatal(err)
	}
	itCopyDir(t, saved, filepath.Join(d1, "t", b.ID()))
	stale := filepath.Join(dir, pruneScratchPrefix+"999999999-00")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}

	dry, err := e.Prune(ctx, PruneOptions{DryRun: true})
	if err != nil || dry.ShreddedContainers != 1 || dry.BytesFreed <= 0 {
		t.Fatalf("dry run: %+v, %v", dry, err)
	}
	if _, err := os.Stat(filepath.Join(d1, "t", b.ID())); err != nil {
		t.Fatalf("dry run removed the container: %v", err)
	}
	rep, err := e.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ShreddedContainers != 1 || rep.Tenants != 1 {
		t.Errorf("report: %d shredded containers, %d tenants; want 1 and 1", rep.ShreddedContainers, rep.Tenants)
	}
	if _, err := os.Stat(filepath.Join(d1, "t", b.ID())); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the shredded tenant's container is still on the drive: %v", err)
	}
	prNoScratch(t, dir)
	prCheck(t, e, "after prune", true)
	if got := fgDump(t, a, keep, "f"); !bytes.Equal(got, itRandBytes(1, 100<<10)) {
		t.Error("tenant a's snapshot dumps different bytes")
	}
}

// BenchmarkPrune prunes a repository of 40 snapshots (one data pack and one
// tree pack each, plus a shared file) after half of them were forgotten:
// it marks 20 snapshots, deletes 40 packs and keeps the rest.
//
//	go test -run XXX -bench Prune -benchtime 5x ./engine/
func BenchmarkPrune(b *testing.B) {
	ctx := context.Background()
	src := filepath.Join(b.TempDir(), "repo")
	if _, err := Init(ctx, src, InitOptions{PackSize: itPackSize}); err != nil {
		b.Fatal(err)
	}
	e, err := Open(src, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.CreateTenant(ctx, "acme", TenantOptions{}); err != nil {
		b.Fatal(err)
	}
	tn, err := e.OpenTenant(ctx, "acme")
	if err != nil {
		b.Fatal(err)
	}
	var forget []string
	for i := range 40 {
		s, err := tn.BackupStream(ctx, bytes.NewReader(itRandBytes(uint64(i), 256<<10)), fmt.Sprintf("f%02d", i), BackupOptions{Host: "h"})
		if err != nil {
			b.Fatal(err)
		}
		if i%2 == 0 {
			forget = append(forget, s.ID)
		}
	}
	if _, err := tn.Forget(ctx, forget, ForgetOptions{}); err != nil {
		b.Fatal(err)
	}
	e.Close()
	b.SetBytes(prPhysical(b, src))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := filepath.Join(b.TempDir(), fmt.Sprintf("r%d", i))
		prCopyDir(b, src, dir)
		e, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		tn, err := e.OpenTenant(ctx, "acme")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		rep, err := tn.Prune(ctx, PruneOptions{})
		b.StopTimer()
		if err != nil || rep.PacksDeleted != 40 {
			b.Fatalf("prune: %v, %d packs deleted", err, rep.PacksDeleted)
		}
		e.Close()
		b.StartTimer()
	}
}

func TestPruneScratchPrefixEnd(t *testing.T) {
	for _, c := range []struct{ in, want []byte }{
		{[]byte{'b', 1, 2}, []byte{'b', 1, 3}},
		{[]byte{'b', 1, 0xff}, []byte{'b', 2}},
		{[]byte{0xff, 0xff}, nil},
	} {
		if got := prefixEnd(c.in); !bytes.Equal(got, c.want) {
			t.Errorf("prefixEnd(%x) = %x, want %x", c.in, got, c.want)
		}
	}
	// Blob IDs starting with 0xff must be found under their pack.
	s, err := openPruneScratch(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var pack index.PackID
	pack[15] = 0xff
	for _, first := range []byte{0x00, 0x7f, 0xff} {
		var id index.BlobID
		id[0], id[31] = first, 0xff
		if err := s.set(scratchBlobKey(pack, id), encodeScratchEntry(scratchEntry{used: true})); err != nil {
			t.Fatal(err)
		}
	}
	var next index.PackID
	next[14] = 1
	if err := s.set(scratchBlobKey(next, index.BlobID{}), encodeScratchEntry(scratchEntry{})); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.scan(scratchPackPrefix(pack), func([]byte, scratchEntry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("scan found %d entries of the pack, want 3", n)
	}
}
