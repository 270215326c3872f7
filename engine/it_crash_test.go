package engine

// Power-loss tests of the backup write order (docs/design.md, "Write
// order and crash safety"). A killed process cannot reveal a missing fsync,
// because the page cache survives it; a power loss can. Here the index lives
// on pebble's crash-simulating memory file system and every drive is wrapped
// in plDrive, which counts drive operations and, at operation N, "loses
// power": that operation and every later one fail, and puts that had not
// returned yet are kept or dropped at random (a put is atomic). At that same
// moment the index file system is cloned as a crash would leave it (only
// synced writes, or some unsynced ones at random). A fresh engine opened on
// the clone and the same drive folders must pass Check, list and restore
// every snapshot committed before the crash, and complete the next backup.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"coffer/internal/treetest"
	"coffer/repo"
)

// errPowerLost is what every drive call returns once the power is gone.
var errPowerLost = errors.New("crash test: power lost")

// plPower is the power supply shared by every drive of one engine: it numbers
// drive operations (across all drives) and fails them from operation at on.
type plPower struct {
	mu      sync.Mutex
	armed   bool       // guarded by mu; operations are counted only when armed
	ops     int        // guarded by mu; operations counted since arm
	at      int        // guarded by mu; operation that loses power, 0 = never
	lost    bool       // guarded by mu
	onLoss  func()     // guarded by mu; runs once, under mu, at the moment of loss
	rng     *rand.Rand // guarded by mu; decides the fate of puts in flight
	kept    int        // guarded by mu; puts in flight at the loss that were kept
	dropped int        // guarded by mu; ... and dropped
	// writesOnly makes only puts and deletes count towards at (reads
	// still fail after the loss): a scrub makes hundreds of reads and few
	// writes, and the writes are where a crash can do harm.
	writesOnly bool
}

// arm starts counting operations from zero; operation at (if > 0) loses
// power, calling onLoss first.
func (p *plPower) arm(at int, seed uint64, onLoss func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed, p.ops, p.at, p.onLoss = true, 0, at, onLoss
	p.rng = rand.New(rand.NewPCG(seed, uint64(at)))
}

// state returns the operations counted and whether the power was lost.
func (p *plPower) state() (ops int, lost bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ops, p.lost
}

// begin counts one operation and says whether it may reach the drive.
func (p *plPower) begin(op, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lost {
		return fmt.Errorf("%s %s: %w", op, name, errPowerLost)
	}
	if !p.armed || p.writesOnly && op != "put" && op != "delete" {
		return nil
	}
	p.ops++
	if p.ops == p.at {
		p.lost = true
		if p.onLoss != nil {
			p.onLoss()
		}
		return fmt.Errorf("%s %s: %w", op, name, errPowerLost)
	}
	return nil
}

func (p *plPower) wrap(_ string, d repo.Drive) repo.Drive { return &plDrive{inner: d, p: p} }

// plDrive is a drive on plPower. A put or delete that was still running when
// the power went is kept or undone at random, as a whole: the contract of a
// drive is that a put is atomic.
type plDrive struct {
	inner repo.Drive
	p     *plPower
}

var _ repo.Drive = (*plDrive)(nil)

// previous returns the object's current bytes, or nil if it does not exist.
func (d *plDrive) previous(ctx context.Context, name string) ([]byte, error) {
	n, err := d.inner.Size(ctx, name)
	if errors.Is(err, repo.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if err := d.inner.ReadAt(ctx, name, b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// finish decides, once a write of name has run, whether the power went while
// it ran; if so the write is kept or rolled back to old (nil: absent) at
// random, and the caller gets an error (it never saw the write return).
func (d *plDrive) finish(ctx context.Context, op, name string, old []byte) error {
	p := d.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.lost {
		return nil
	}
	if p.rng.IntN(2) == 0 {
		p.kept++
	} else {
		p.dropped++
		ctx = context.WithoutCancel(ctx)
		var err error
		if old == nil {
			err = d.inner.Delete(ctx, name)
		} else {
			err = d.inner.Put(ctx, name, old)
		}
		if err != nil {
			return fmt.Errorf("crash test: roll back %s %s: %v", op, name, err)
		}
	}
	return fmt.Errorf("%s %s: %w", op, name, errPowerLost)
}

func (d *plDrive) Put(ctx context.Context, name string, data []byte) error {
	if err := d.p.begin("put", name); err != nil {
		return err
	}
	old, err := d.previous(ctx, name)
	if err != nil {
		return err
	}
	if err := d.inner.Put(ctx, name, data); err != nil {
		return err
	}
	return d.finish(ctx, "put", name, old)
}

func (d *plDrive) Delete(ctx context.Context, name string) error {
	if err := d.p.begin("delete", name); err != nil {
		return err
	}
	old, err := d.previous(ctx, name)
	if err != nil {
		return err
	}
	if err := d.inner.Delete(ctx, name); err != nil {
		return err
	}
	return d.finish(ctx, "delete", name, old)
}

func (d *plDrive) ReadAt(ctx context.Context, name string, b []byte, off int64) error {
	if err := d.p.begin("read", name); err != nil {
		return err
	}
	return d.inner.ReadAt(ctx, name, b, off)
}

func (d *plDrive) Size(ctx context.Context, name string) (int64, error) {
	if err := d.p.begin("size", name); err != nil {
		return 0, err
	}
	return d.inner.Size(ctx, name)
}

func (d *plDrive) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	if err := d.p.begin("list", prefix); err != nil {
		return err
	}
	return d.inner.List(ctx, prefix, fn)
}

// crashCopyIndex copies the on-disk index of the repository in dir into mem
// at the same path, synced, so that a crash clone keeps all of it. Init has
// no IndexFS hook, so a repository is created on disk and moved.
func crashCopyIndex(t *testing.T, dir string, mem *vfs.MemFS) {
	t.Helper()
	src := indexDir(dir)
	ok, err := vfs.Clone(vfs.Default, mem, src, src, vfs.CloneSync)
	if err != nil || !ok {
		t.Fatalf("copy index %s into memory: %v (copied: %v)", src, err, ok)
	}
	// Clone syncs the index folder; its ancestors were made by MkdirAll and
	// their entries must be synced too, or a crash clone drops the folder.
	for p := src; ; p = filepath.Dir(p) {
		d, err := mem.OpenDir(filepath.Dir(p))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		d.Close()
		if filepath.Dir(p) == p || filepath.Dir(p) == "/" {
			break
		}
	}
}

// crashWriteSource creates generation 0 of the source tree below root, or
// changes it into generation gen: some files rewritten with new random data,
// one grown, one new, one removed. Everything is seeded by gen, so a run is
// repeatable. Sizes are in KiB units of unit bytes, so tests pick the volume.
func crashWriteSource(t *testing.T, root string, gen, unit int) {
	t.Helper()
	write := func(rel string, data []byte) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(seed, n int) []byte {
		var b strings.Builder
		for i := 0; b.Len() < n; i++ {
			fmt.Fprintf(&b, "line %d of generation %d: the quick brown fox jumps over the lazy dog\n", i, seed)
		}
		return []byte(b.String()[:n])
	}
	if gen == 0 {
		write("a/random1.bin", itRandBytes(1, 12*unit))
		write("a/random2.bin", itRandBytes(2, 7*unit))
		write("b/text.txt", text(0, 10*unit))
		write("b/mixed.bin", append(itRandBytes(3, 4*unit), text(3, 4*unit)...))
		write("c/deep/er/random3.bin", itRandBytes(4, 9*unit))
		write("c/deep/zeros.bin", make([]byte, 3*unit))
		for i := range 20 {
			write(fmt.Sprintf("c/small/f%02d.txt", i), text(100+i, 100+37*i))
		}
		if err := os.Symlink("../a/random1.bin", filepath.Join(root, "b", "link")); err != nil {
			t.Fatal(err)
		}
		return
	}
	s := uint64(gen) * 1000
	rewrite := []string{"a/random1.bin", "a/random2.bin", "c/deep/er/random3.bin", "b/mixed.bin"}
	write(rewrite[gen%len(rewrite)], itRandBytes(s+1, (5+gen%4)*unit))
	write(fmt.Sprintf("n/gen%03d.bin", gen), append(itRandBytes(s+2, 5*unit), text(gen, 3*unit)...))
	f, err := os.OpenFile(filepath.Join(root, "b", "text.txt"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(text(gen, unit)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	write(fmt.Sprintf("c/small/f%02d.txt", gen%20), text(gen, 50+gen))
	if gen >= 3 {
		_ = os.Remove(filepath.Join(root, fmt.Sprintf("n/gen%03d.bin", gen-2)))
	}
}

// crashFirstLine shortens an error for a log line.
func crashFirstLine(err error) string {
	if err == nil {
		return "success"
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// plUnit sizes the power-loss test's source: about 3 MiB at generation 0 and
// 1.5 MiB of new data per generation, so with 1 MiB packs a backup writes a
// few data packs and a tree pack.
const plUnit = 50 << 10

// plRestoreCheck restores s with tn and compares it with want.
func plRestoreCheck(t *testing.T, tn *Tenant, s *Snapshot, src string, want treetest.Manifest, what string) {
	t.Helper()
	target := t.TempDir()
	if _, err := tn.Restore(context.Background(), s, target, RestoreOptions{}); err != nil {
		t.Errorf("%s: restore snapshot %s: %v", what, s.ID[:8], err)
		return
	}
	if d := want.Diff(treetest.Of(t, filepath.Join(target, src))); len(d) > 0 {
		t.Errorf("%s: snapshot %s restores differently:\n  %s", what, s.ID[:8], strings.Join(d, "\n  "))
	}
}

// plCheck runs Check with data reading and fails the test on any problem.
func plCheck(t *testing.T, e *Engine, what string) *CheckReport {
	t.Helper()
	rep, err := e.Check(context.Background(), CheckOptions{ReadData: true})
	if err != nil || rep == nil || len(rep.Problems) > 0 {
		var probs []string
		if rep != nil {
			probs = rep.Problems
		}
		t.Errorf("%s: check: %v\n  problems: %s", what, err, strings.Join(probs, "\n  "))
	}
	return rep
}

// plCase runs one power-loss case: snapshot A on disk, then a backup of
// generation 1 on the crashable index that loses power at drive operation at
// (0: never; the crash then comes right after the backup returned). It
// returns the drive operations the backup made before the loss (all of them
// when at is 0).
func plCase(t *testing.T, at int, seed uint64) int {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	src := filepath.Join(t.TempDir(), "src")
	crashWriteSource(t, src, 0, plUnit)
	wantA := treetest.Of(t, src)

	e := itOpen(t, dir)
	sA := itBackup(t, itTenant(t, e, "acme"), src)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	mem := vfs.NewCrashableMem()
	crashCopyIndex(t, dir, mem)
	crashWriteSource(t, src, 1, plUnit)
	wantB := treetest.Of(t, src)

	cfg := vfs.CrashCloneCfg{}
	if at%2 == 1 { // odd points also keep some unsynced index writes
		cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, uint64(at)))}
	}
	power := &plPower{}
	e2, err := Open(dir, Options{IndexFS: mem, WrapDrive: power.wrap})
	if err != nil {
		t.Fatalf("open on the memory index: %v", err)
	}
	tn2, err := e2.OpenTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var clone *vfs.MemFS
	power.arm(at, seed, func() { clone = mem.CrashClone(cfg) })
	sB, errB := tn2.Backup(ctx, []string{src}, BackupOptions{Host: "it-host"})
	ops, lost := power.state()
	if !lost {
		// The backup ran to its end: the power goes right after it returned.
		clone = mem.CrashClone(cfg)
		if errB != nil {
			t.Fatalf("backup without a power loss: %v", errB)
		}
	}
	_ = e2.Close() // the crashed engine: its later index writes are not in the clone
	power.mu.Lock()
	kept, dropped := power.kept, power.dropped
	power.mu.Unlock()
	what := fmt.Sprintf("power lost at drive op %d (of %d counted; lost %v; writes in flight kept %d, dropped %d; unsynced index writes kept %d%%)",
		at, ops, lost, kept, dropped, cfg.UnsyncedDataPercent)
	t.Logf("%s; backup returned: %s", what, crashFirstLine(errB))

	e3, err := Open(dir, Options{IndexFS: clone})
	if err != nil {
		t.Fatalf("%s: open after the crash: %v", what, err)
	}
	defer e3.Close()
	rep := plCheck(t, e3, what+", after the crash")
	if rep != nil && len(rep.Notes) > 0 {
		t.Logf("check notes after the crash: %d (first: %s)", len(rep.Notes), rep.Notes[0])
	}
	tn3, err := e3.OpenTenant(ctx, "acme")
	if err != nil {
		t.Fatalf("%s: open tenant after the crash: %v", what, err)
	}
	snaps, err := tn3.Snapshots(ctx)
	if err != nil {
		t.Fatalf("%s: list snapshots: %v", what, err)
	}
	var haveA, haveB bool
	for _, s := range snaps {
		switch {
		case s.ID == sA.ID:
			haveA = true
			plRestoreCheck(t, tn3, s, src, wantA, what)
		case !haveB:
			// The interrupted backup's snapshot, if its commit was durable.
			haveB = true
			if sB != nil && s.ID != sB.ID {
				t.Errorf("%s: unexpected snapshot %s (the backup returned %s)", what, s.ID[:8], sB.ID[:8])
			}
			plRestoreCheck(t, tn3, s, src, wantB, what)
		default:
			t.Errorf("%s: unexpected extra snapshot %s", what, s.ID[:8])
		}
	}
	t.Logf("after the crash: %d snapshots, the interrupted backup's snapshot survived: %v", len(snaps), haveB)
	if !haveA {
		t.Errorf("%s: snapshot %s, committed before the crash, is lost", what, sA.ID[:8])
	}
	if !lost && !haveB {
		t.Errorf("%s: snapshot %s, whose backup returned before the crash, is lost", what, sB.ID[:8])
	}

	// The next backup completes, restores, and leaves a clean repository.
	crashWriteSource(t, src, 2, plUnit)
	wantC := treetest.Of(t, src)
	sC, err := tn3.Backup(ctx, []string{src}, BackupOptions{Host: "it-host"})
	if err != nil {
		t.Fatalf("%s: next backup: %v", what, err)
	}
	plRestoreCheck(t, tn3, sC, src, wantC, what+", next backup")
	plCheck(t, e3, what+", after the next backup")
	return ops
}

// plDamage deletes one shard of one indexed pack and flips a byte in a shard
// of another (at most one shard per pack: nothing is lost), and returns the
// two pack IDs.
func plDamage(t *testing.T, e *Engine, tn *Tenant, dir string) []string {
	t.Helper()
	byPack := itPackShards(itShards(t, dir))
	var packs []string
	for _, id := range append(itIndex(t, tn).packsOf(DataBlob), itIndex(t, tn).packsOf(TreeBlob)...) {
		if len(byPack[id]) > 0 {
			packs = append(packs, id.String())
		}
	}
	sort.Strings(packs)
	if len(packs) < 2 {
		t.Fatalf("only %d indexed packs to damage", len(packs))
	}
	var ids []repo.PackID
	for _, p := range packs[:2] {
		for id := range byPack {
			if id.String() == p {
				ids = append(ids, id)
			}
		}
	}
	del, flip := byPack[ids[0]][0], byPack[ids[1]][1]
	if err := os.Remove(del.path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(flip.path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x5a
	if err := os.WriteFile(flip.path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return packs[:2]
}

// plPackRE finds the pack IDs named in a check problem.
var plPackRE = regexp.MustCompile(`pack ([0-9a-f]{32})`)

// plScrubCase runs one power-loss case of scrub --repair: snapshot A, the
// orphans of a backup interrupted by a power loss, and two damaged packs on
// disk; then a repairing scrub on the crashable index that loses power at
// write number at (0: never). It returns the writes counted.
func plScrubCase(t *testing.T, at int, seed uint64) int {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	src := filepath.Join(t.TempDir(), "src")
	crashWriteSource(t, src, 0, plUnit)
	wantA := treetest.Of(t, src)

	// Snapshot A, then a backup that loses power after a few shard writes
	// (its drives fail from then on, so its orphans stay), on disk.
	early := &plPower{writesOnly: true}
	e, err := Open(dir, Options{WrapDrive: early.wrap})
	if err != nil {
		t.Fatal(err)
	}
	tn := itTenant(t, e, "acme")
	sA := itBackup(t, tn, src)
	crashWriteSource(t, src, 1, plUnit)
	early.arm(10, seed, nil)
	if _, err := tn.Backup(ctx, []string{src}, BackupOptions{Host: "it-host"}); err == nil {
		t.Fatal("the backup interrupted by a power loss succeeded")
	}
	// What check reports now may remain after the crash (the repair did not
	// get to it); nothing else may appear. Besides the two damaged packs that
	// can be a pack the interrupted backup indexed with only its write
	// quorum of shards (below full redundancy).
	allowed := map[string]bool{}
	for _, id := range plDamage(t, e, tn, dir) {
		allowed[id] = true
	}
	if rep, _ := e.Check(ctx, CheckOptions{ReadData: true}); rep != nil {
		for _, p := range rep.Problems {
			for _, m := range plPackRE.FindAllStringSubmatch(p, -1) {
				allowed[m[1]] = true
			}
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	mem := vfs.NewCrashableMem()
	crashCopyIndex(t, dir, mem)
	cfg := vfs.CrashCloneCfg{}
	if at%2 == 1 {
		cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, uint64(at)))}
	}
	power := &plPower{writesOnly: true}
	e2, err := Open(dir, Options{IndexFS: mem, WrapDrive: power.wrap})
	if err != nil {
		t.Fatalf("open on the memory index: %v", err)
	}
	var clone *vfs.MemFS
	power.arm(at, seed, func() { clone = mem.CrashClone(cfg) })
	rep, errS := e2.Scrub(ctx, ScrubOptions{Repair: true})
	ops, lost := power.state()
	if !lost {
		clone = mem.CrashClone(cfg)
		if errS != nil {
			t.Fatalf("scrub --repair without a power loss: %v", errS)
		}
		if rep.Orphaned.Found == 0 || rep.Missing.Found+rep.Corrupt.Found < 2 {
			t.Errorf("the clean repair found %d orphans, %d missing and %d corrupt shards; the setup should give it orphans and two damaged packs",
				rep.Orphaned.Found, rep.Missing.Found, rep.Corrupt.Found)
		}
	}
	_ = e2.Close()
	power.mu.Lock()
	kept, dropped := power.kept, power.dropped
	power.mu.Unlock()
	what := fmt.Sprintf("power lost at drive write %d of scrub --repair (of %d counted; lost %v; writes in flight kept %d, dropped %d; unsynced index writes kept %d%%)",
		at, ops, lost, kept, dropped, cfg.UnsyncedDataPercent)
	t.Logf("%s; scrub returned: %s", what, crashFirstLine(errS))

	e3, err := Open(dir, Options{IndexFS: clone})
	if err != nil {
		t.Fatalf("%s: open after the crash: %v", what, err)
	}
	defer e3.Close()
	crep, _ := e3.Check(ctx, CheckOptions{ReadData: true})
	if crep == nil {
		t.Fatalf("%s: check could not run", what)
	}
	for _, p := range crep.Problems {
		ok := false
		for _, m := range plPackRE.FindAllStringSubmatch(p, -1) {
			ok = ok || allowed[m[1]]
		}
		if !ok {
			t.Errorf("%s: check after the crash reports damage that was not there before the repair: %s", what, p)
		}
	}
	tn3, err := e3.OpenTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := tn3.Snapshots(ctx)
	if err != nil {
		t.Fatalf("%s: list snapshots: %v", what, err)
	}
	if len(snaps) != 1 || snaps[0].ID != sA.ID {
		t.Fatalf("%s: snapshots after the crash: %d, want only %s", what, len(snaps), sA.ID[:8])
	}
	plRestoreCheck(t, tn3, snaps[0], src, wantA, what)

	// The next repair completes; then everything is clean.
	rep3, err := e3.Scrub(ctx, ScrubOptions{Repair: true})
	if err != nil {
		t.Errorf("%s: the next scrub --repair: %v", what, err)
	}
	if rep3, err = e3.Scrub(ctx, ScrubOptions{}); err != nil || rep3.Unrepaired() > 0 {
		t.Errorf("%s: a scrub after the next repair is not clean: %v", what, err)
	}
	if crep := plCheck(t, e3, what+", after the next repair"); crep != nil {
		for _, n := range crep.Notes {
			if strings.Contains(n, "unindexed pack") {
				t.Errorf("%s: after the next repair: %s", what, n)
				break
			}
		}
	}
	plRestoreCheck(t, tn3, snaps[0], src, wantA, what+", after the next repair")
	crashWriteSource(t, src, 2, plUnit)
	wantC := treetest.Of(t, src)
	sC, err := tn3.Backup(ctx, []string{src}, BackupOptions{Host: "it-host"})
	if err != nil {
		t.Fatalf("%s: next backup: %v", what, err)
	}
	plRestoreCheck(t, tn3, sC, src, wantC, what+", next backup")
	return ops
}

// TestCrashPowerLossScrubRepair loses power at drive writes spread over one
// repairing scrub (every write up to 20, 6 with -short).
func TestCrashPowerLossScrubRepair(t *testing.T) {
	const seed = 20240918
	var total int
	t.Run("clean", func(t *testing.T) { total = plScrubCase(t, 0, seed) })
	if t.Failed() || total == 0 {
		t.Fatalf("the clean run failed or counted no drive writes (%d)", total)
	}
	points := 20
	if testing.Short() {
		points = 6
	}
	points = min(points, total)
	t.Logf("a clean repair makes %d drive writes; losing power at %d of them", total, points)
	seen := map[int]bool{}
	for i := range points {
		at := 1 + i*(total-1)/max(points-1, 1)
		if seen[at] {
			continue
		}
		seen[at] = true
		t.Run(fmt.Sprintf("write%03d", at), func(t *testing.T) { plScrubCase(t, at, seed+uint64(i)) })
	}
}

// TestCrashPowerLossBackup loses power at drive operations spread over one
// backup (30 points, 8 with -short), after counting the operations of a clean
// run of the same backup.
func TestCrashPowerLossBackup(t *testing.T) {
	const seed = 20240917
	var total int
	t.Run("clean", func(t *testing.T) { total = plCase(t, 0, seed) })
	if t.Failed() || total == 0 {
		t.Fatalf("the clean run failed or counted no drive operations (%d)", total)
	}
	points := 30
	if testing.Short() {
		points = 8
	}
	points = min(points, total)
	t.Logf("a clean backup makes %d drive operations; losing power at %d of them", total, points)
	seen := map[int]bool{}
	for i := range points {
		// Spread over 1..total, both ends included; the last operations
		// (snapshot record puts) matter as much as the first.
		at := 1 + i*(total-1)/max(points-1, 1)
		if seen[at] {
			continue
		}
		seen[at] = true
		t.Run(fmt.Sprintf("op%03d", at), func(t *testing.T) { plCase(t, at, seed+uint64(i)) })
	}
}
