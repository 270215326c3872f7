package main

// Kill tests of crash safety (issue 3, docs/design.md "Write order and
// crash safety"): the coffer binary runs as a subprocess and is killed with
// SIGKILL at random moments of a backup (and of scrub --repair and index
// rebuild, once they exist). After every kill the repository must pass check
// (notes about unindexed packs of the interrupted write are fine, problems
// are not), every snapshot committed before the kill must still be listed and
// restore byte-identical to the source it captured, and the next run must
// complete. A kill cannot reveal a missing fsync (the page cache survives it);
// engine/it_crash_test.go simulates power loss for that.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"coffer/internal/treetest"
)

// TestCrashKill builds the coffer binary once and kills it during backup,
// scrub --repair and index rebuild.
func TestCrashKill(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "coffer")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("backup", func(t *testing.T) { crashKillBackup(t, bin) })
	t.Run("scrub-repair", func(t *testing.T) { crashKillScrub(t, bin) })
	t.Run("index-rebuild", func(t *testing.T) { crashKillRebuild(t, bin) })
	t.Run("prune", func(t *testing.T) { crashKillPrune(t, bin) })
	t.Run("serve", func(t *testing.T) { crashKillServe(t, bin) })
}

// crashSeed makes a run repeatable; a failing run logs it.
const crashSeed = 7331

// crashSizes is how much source data a test uses: unit scales the initial
// tree (about 48 units), genUnit the new data of each change (about 6).
type crashSizes struct{ unit, genUnit int }

func crashSizing() crashSizes {
	if testing.Short() {
		return crashSizes{unit: 200 << 10, genUnit: 200 << 10} // ~10 MiB, ~1.2 MiB a change
	}
	return crashSizes{unit: 450 << 10, genUnit: 400 << 10} // ~21 MiB, ~2.4 MiB a change
}

// crashRepo is a repository driven through the binary (for the runs that
// get killed) and through run in this process (for the checks).
type crashRepo struct {
	bin     string
	dir     string
	src     string   // parent of the source folders
	paths   []string // source folders backed up
	sizes   crashSizes
	gen     int
	rng     *rand.Rand
	states  map[string]treetest.Manifest // snapshot ID -> the source it captured
	current treetest.Manifest            // the source as it is now
}

func newCrashRepo(t *testing.T, bin string) *crashRepo {
	t.Helper()
	root := t.TempDir()
	r := &crashRepo{
		bin: bin, dir: filepath.Join(root, "repo"), src: filepath.Join(root, "src"),
		sizes: crashSizing(), rng: rand.New(rand.NewPCG(crashSeed, 1)),
		states: map[string]treetest.Manifest{},
	}
	for _, p := range []string{"a", "b", "c", "n"} {
		r.paths = append(r.paths, filepath.Join(r.src, p))
	}
	r.inproc(t, exitOK, "init", "--pack-size", "1MiB")
	r.inproc(t, exitOK, "tenant", "create", "acme")
	crashSource(t, r.src, 0, r.sizes)
	r.current = treetest.Of(t, r.src)
	return r
}

// inproc runs a command line in this process and checks its exit code
// (-1: any).
func (r *crashRepo) inproc(t *testing.T, want int, a ...string) result {
	t.Helper()
	res := coffer(t, nil, append([]string{"--repo", r.dir, "--tenant", "acme"}, a...)...)
	if want >= 0 && res.code != want {
		t.Fatalf("want exit %d:\n%s", want, res)
	}
	return res
}

// change moves the source to its next generation.
func (r *crashRepo) change(t *testing.T) {
	t.Helper()
	r.gen++
	crashSource(t, r.src, r.gen, r.sizes)
	r.current = treetest.Of(t, r.src)
}

// crashRun is one subprocess run.
type crashRun struct {
	killed   bool          // ended by our SIGKILL
	code     int           // exit code when not killed
	dur      time.Duration // start to end
	stderr   string
	stdout   string
	killedAt time.Duration
}

// spawn runs the binary with args and kills it after delay (never, if
// delay < 0).
func (r *crashRepo) spawn(t *testing.T, delay time.Duration, a ...string) crashRun {
	t.Helper()
	cmd := exec.Command(r.bin, a...)
	cmd.Env = append(os.Environ(), "COFFER_REPO="+r.dir, "COFFER_TENANT=acme")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var timer *time.Timer
	if delay >= 0 {
		timer = time.AfterFunc(delay, func() { _ = cmd.Process.Kill() })
	}
	err := cmd.Wait()
	run := crashRun{dur: time.Since(start), stdout: out.String(), stderr: errb.String(), killedAt: delay}
	if timer != nil {
		timer.Stop()
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			run.killed = true
		} else {
			run.code = ee.ExitCode()
		}
	default:
		t.Fatalf("run %v: %v", a, err)
	}
	return run
}

// backupArgs is the backup command line.
func (r *crashRepo) backupArgs(force bool) []string {
	a := append([]string{"backup", "--host", "crash-host"}, r.paths...)
	if force {
		a = append(a, "--force")
	}
	return a
}

// snapshots lists the snapshot IDs, oldest first.
func (r *crashRepo) snapshots(t *testing.T) []string {
	t.Helper()
	res := r.inproc(t, exitOK, "--json", "snapshots")
	var ss []struct {
		ID string `json:"id"`
	}
	decodeJSON(t, res, &ss)
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return ids
}

// record notes that every snapshot in after but not in before captured the
// current source; at most one may be new. It fails the test for every
// snapshot of before that is missing from after.
func (r *crashRepo) record(t *testing.T, before, after []string, what string) (added int) {
	t.Helper()
	have := map[string]bool{}
	for _, id := range after {
		have[id] = true
	}
	for _, id := range before {
		if !have[id] {
			t.Errorf("%s: snapshot %s, committed before, is no longer listed", what, id[:8])
		}
	}
	was := map[string]bool{}
	for _, id := range before {
		was[id] = true
	}
	for _, id := range after {
		if !was[id] {
			added++
			if _, ok := r.states[id]; ok {
				t.Errorf("%s: snapshot %s reappeared", what, id[:8])
			}
			r.states[id] = r.current
		}
	}
	if added > 1 {
		t.Errorf("%s: %d new snapshots from one run", what, added)
	}
	return added
}

// crashReport is the JSON of check.
type crashReport struct {
	Snapshots int      `json:"snapshots"`
	Packs     int      `json:"packs"`
	Problems  []string `json:"problems"`
	Notes     []string `json:"notes"`
}

// check runs check in this process and returns its exit code and report
// (nil when it printed none).
func (r *crashRepo) check(t *testing.T) (int, *crashReport, result) {
	t.Helper()
	res := coffer(t, nil, "--repo", r.dir, "--json", "check")
	if res.stdout == "" {
		return res.code, nil, res
	}
	var rep crashReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("check printed no JSON report: %v\n%s", err, res)
	}
	return res.code, &rep, res
}

// mustCheck fails the test unless check exits 0 without problems. It
// returns the packs indexed and how many notes name shards of unindexed packs.
func (r *crashRepo) mustCheck(t *testing.T, what string) (packs, orphanNotes int) {
	t.Helper()
	code, rep, res := r.check(t)
	if code != exitOK || rep == nil || len(rep.Problems) > 0 {
		t.Errorf("%s: check failed:\n%s", what, res)
		return 0, 0
	}
	for _, n := range rep.Notes {
		if strings.Contains(n, "unindexed pack") {
			orphanNotes++
		}
	}
	return rep.Packs, orphanNotes
}

// restore restores snapshot id and compares it with the source it captured.
func (r *crashRepo) restore(t *testing.T, id, what string) {
	t.Helper()
	want, ok := r.states[id]
	if !ok {
		t.Errorf("%s: snapshot %s: no record of the source it captured", what, id[:8])
		return
	}
	target := filepath.Join(t.TempDir(), "restore")
	res := r.inproc(t, -1, "restore", id, "--target", target)
	if res.code != exitOK {
		t.Errorf("%s: restore %s failed:\n%s", what, id[:8], res)
		return
	}
	if d := want.Diff(treetest.Of(t, filepath.Join(target, r.src))); len(d) > 0 {
		t.Errorf("%s: snapshot %s restores differently from the source it captured:\n  %s", what, id[:8], strings.Join(d, "\n  "))
	}
	_ = os.RemoveAll(target)
}

// backupNow runs a backup to its end in a subprocess and records its snapshot.
func (r *crashRepo) backupNow(t *testing.T, force bool, what string) crashRun {
	t.Helper()
	before := r.snapshots(t)
	run := r.spawn(t, -1, r.backupArgs(force)...)
	if run.code != exitOK {
		t.Fatalf("%s: backup failed (exit %d):\n%s", what, run.code, run.stderr)
	}
	if r.record(t, before, r.snapshots(t), what) != 1 {
		t.Fatalf("%s: a completed backup recorded no snapshot", what)
	}
	return run
}

// killBackup runs a backup and kills it after delay. It returns the run and
// whether a snapshot was committed.
func (r *crashRepo) killBackup(t *testing.T, delay time.Duration, force bool, what string) (crashRun, bool) {
	t.Helper()
	before := r.snapshots(t)
	run := r.spawn(t, delay, r.backupArgs(force)...)
	if !run.killed && run.code != exitOK {
		t.Fatalf("%s: backup ended by itself with exit %d:\n%s", what, run.code, run.stderr)
	}
	added := r.record(t, before, r.snapshots(t), what)
	if !run.killed && added != 1 {
		t.Errorf("%s: a completed backup recorded %d snapshots", what, added)
	}
	return run, added == 1
}

// sampleDelay picks a kill delay between 2 ms and 1.2 times typical.
func (r *crashRepo) sampleDelay(typical time.Duration) time.Duration {
	return 2*time.Millisecond + time.Duration(r.rng.Float64()*1.2*float64(typical))
}

// crashKillBackup kills backups at random moments, 50 times (8 with -short).
func crashKillBackup(t *testing.T, bin string) {
	start := time.Now()
	kills := 50
	if testing.Short() {
		kills = 8
	}
	r := newCrashRepo(t, bin)
	t.Logf("seed %d; source of %d entries", crashSeed, len(r.current))

	full := r.backupNow(t, false, "first backup").dur // every file read: the --force duration
	r.change(t)
	incr := r.backupNow(t, false, "second backup").dur
	t.Logf("a full backup takes %v, an incremental one %v", full, incr)
	packs, orphans := r.mustCheck(t, "after the second backup")

	// What each kill left tells which phase it hit: nothing (start-up, scan,
	// chunking), unindexed shards (a pack write), indexed packs but no
	// snapshot (between pack commits), or a snapshot (the commit done).
	var (
		killed, completed                             int
		leftNothing, leftOrphans, leftPacks, leftSnap int
		byDecile                                      [10]int // kills by delay, in tenths of the typical duration
	)
	// follow keeps the typical durations in step with the growing source.
	follow := func(force bool, d time.Duration) {
		if force {
			full = (full + d) / 2
		} else {
			incr = (incr + d) / 2
		}
	}
	for i := 0; killed < kills && i < 4*kills; i++ {
		r.change(t)
		force := i%4 == 3 // read everything again: a longer chunking phase
		typical := incr
		if force {
			typical = full
		}
		delay := r.sampleDelay(typical)
		if i%3 == 1 {
			// The last phases (last packs, tree pack, snapshot commit) are
			// short: aim every third kill at the end of a typical run.
			delay = time.Duration((0.75 + 0.4*r.rng.Float64()) * float64(typical))
		}
		what := fmt.Sprintf("iteration %d (generation %d, force %v, kill after %v)", i, r.gen, force, delay)
		run, snap := r.killBackup(t, delay, force, what)
		p, o := r.mustCheck(t, what)
		if run.killed {
			killed++
			byDecile[min(9, int(10*float64(delay)/float64(typical)))]++
			switch {
			case snap:
				leftSnap++
			case o > orphans:
				leftOrphans++
			case p > packs:
				leftPacks++
			default:
				leftNothing++
			}
		} else {
			completed++
			follow(force, run.dur)
		}
		packs, orphans = p, o
		// Restore one committed snapshot: the one just made, or a random one.
		ids := r.snapshots(t)
		id := ids[r.rng.IntN(len(ids))]
		if snap {
			id = ids[len(ids)-1]
		}
		r.restore(t, id, what)
		if t.Failed() {
			t.Fatalf("stopping after the first failed iteration (seed %d)", crashSeed)
		}
		// Every third kill, the next backup must complete at once; otherwise
		// the next iteration's backup runs on the crashed repository.
		if i%3 == 2 {
			follow(false, r.backupNow(t, false, what+", next backup").dur)
			packs, orphans = r.mustCheck(t, what+", after the next backup")
		}
	}
	if killed < kills {
		t.Errorf("only %d of %d runs were killed before they completed", killed, kills)
	}
	t.Logf("%d kills (by delay in tenths of the typical duration: %v), %d runs completed before the kill", killed, byDecile, completed)
	t.Logf("the kills left: nothing new %d, unindexed shards %d, indexed packs without a snapshot %d, a committed snapshot %d",
		leftNothing, leftOrphans, leftPacks, leftSnap)

	r.change(t)
	r.backupNow(t, false, "final backup")
	r.mustCheck(t, "final check")
	ids := r.snapshots(t)
	if len(ids) != len(r.states) {
		t.Errorf("%d snapshots listed, %d recorded", len(ids), len(r.states))
	}
	for _, id := range ids {
		r.restore(t, id, "final restore of every snapshot")
	}
	t.Logf("%d snapshots restore identically; took %v", len(ids), time.Since(start).Round(time.Millisecond))
}

// helpHas reports whether "coffer ARGS --help" mentions every word.
func crashHelpHas(t *testing.T, bin string, args []string, words ...string) bool {
	t.Helper()
	out, _ := exec.Command(bin, append(args, "--help")...).CombinedOutput()
	for _, w := range words {
		if !strings.Contains(string(out), w) {
			return false
		}
	}
	return true
}

// crashDamage deletes one shard file of one pack and flips a byte in a shard
// of another pack (never more than m=2 shards of a pack, so nothing is lost),
// and returns the damaged pack IDs.
func crashDamage(t *testing.T, r *crashRepo) map[string]bool {
	t.Helper()
	byPack := map[string][]string{}
	for _, p := range shardFiles(t, r.dir) {
		id, _, _ := strings.Cut(filepath.Base(p), ".")
		byPack[id] = append(byPack[id], p)
	}
	var packs []string
	for id := range byPack {
		packs = append(packs, id)
	}
	sort.Strings(packs)
	if len(packs) < 2 {
		t.Fatalf("only %d packs to damage", len(packs))
	}
	damaged := map[string]bool{}
	i := r.rng.IntN(len(packs))
	j := (i + 1 + r.rng.IntN(len(packs)-1)) % len(packs)
	del := byPack[packs[i]][r.rng.IntN(len(byPack[packs[i]]))]
	if err := os.Remove(del); err != nil {
		t.Fatal(err)
	}
	damaged[packs[i]] = true
	flip := byPack[packs[j]][r.rng.IntN(len(byPack[packs[j]]))]
	b, err := os.ReadFile(flip)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x5a // in the shard data, past the header
	if err := os.WriteFile(flip, b, 0o600); err != nil {
		t.Fatal(err)
	}
	damaged[packs[j]] = true
	return damaged
}

// crashPrepare makes a repository with a few snapshots and the unindexed
// packs of one killed backup. It returns how long an incremental backup took.
func crashPrepare(t *testing.T, r *crashRepo) time.Duration {
	t.Helper()
	full := r.backupNow(t, false, "first backup").dur
	var incr time.Duration
	for range 2 {
		r.change(t)
		incr = r.backupNow(t, false, "setup backup").dur
	}
	r.change(t)
	r.killBackup(t, full/2, true, "setup: killed backup")
	r.mustCheck(t, "setup")
	return incr
}

// crashKillScrub kills scrub --repair at random moments while it heals
// damaged shards and removes orphans: after each kill, check may report only
// the damage made for that round, every snapshot restores, and the next
// scrub --repair completes and leaves a clean repository.
func crashKillScrub(t *testing.T, bin string) {
	if !crashHelpHas(t, bin, []string{"scrub"}, "--repair") {
		t.Skip("coffer scrub --repair is not in this build yet (cmd/coffer/cmd_scrub.go is a placeholder): nothing to kill")
	}
	rounds := 12
	if testing.Short() {
		rounds = 3
	}
	r := newCrashRepo(t, bin)
	backupDur := crashPrepare(t, r)

	// Calibrate: one repair to its end.
	crashDamage(t, r)
	cal := r.spawn(t, -1, "scrub", "--repair")
	if cal.code != exitOK && cal.code != exitDamage {
		t.Fatalf("scrub --repair failed (exit %d):\n%s%s", cal.code, cal.stdout, cal.stderr)
	}
	if _, n := r.mustCheck(t, "after a complete scrub --repair"); n > 0 {
		t.Errorf("after a complete scrub --repair, check still notes %d shards of unindexed packs (orphans should be removed)", n)
	}
	typical := cal.dur
	t.Logf("a scrub --repair takes %v", typical)

	killed := 0
	for i := range rounds {
		if i%2 == 0 {
			// Orphans for the repair to remove: a backup killed mid-way.
			r.change(t)
			r.killBackup(t, backupDur/3+time.Duration(r.rng.Float64()*float64(backupDur)/2), false, fmt.Sprintf("round %d: killed backup", i))
		}
		damaged := crashDamage(t, r)
		delay := r.sampleDelay(typical)
		what := fmt.Sprintf("round %d (scrub --repair killed after %v; damaged packs %v)", i, delay, crashKeys(damaged))
		before := r.snapshots(t)
		run := r.spawn(t, delay, "scrub", "--repair")
		if run.killed {
			killed++
		} else if run.code != exitOK && run.code != exitDamage {
			t.Fatalf("%s: scrub --repair ended by itself with exit %d:\n%s%s", what, run.code, run.stdout, run.stderr)
		}
		r.record(t, before, r.snapshots(t), what)
		code, rep, res := r.check(t)
		if rep == nil || (code != exitOK && code != exitDamage) {
			t.Fatalf("%s: check after the kill:\n%s", what, res)
		}
		for _, p := range rep.Problems {
			if !crashNamesAny(p, damaged) {
				t.Errorf("%s: check reports damage the round did not make (the killed repair caused it?): %s", what, p)
			}
		}
		for _, id := range r.snapshots(t) {
			r.restore(t, id, what)
		}
		// The next repair completes and leaves nothing to report.
		next := r.inproc(t, -1, "scrub", "--repair")
		if next.code != exitOK && next.code != exitDamage {
			t.Fatalf("%s: the next scrub --repair failed:\n%s", what, next)
		}
		if _, n := r.mustCheck(t, what+", after the next scrub --repair"); n > 0 {
			t.Errorf("%s: after the next scrub --repair, check still notes %d shards of unindexed packs", what, n)
		}
		if again := r.inproc(t, -1, "scrub"); again.code != exitOK {
			t.Errorf("%s: a scrub after the repair is not clean:\n%s", what, again)
		}
		if t.Failed() {
			t.Fatalf("stopping after the first failed round (seed %d)", crashSeed)
		}
	}
	r.change(t)
	r.backupNow(t, false, "backup after the repairs")
	r.mustCheck(t, "final check")
	for _, id := range r.snapshots(t) {
		r.restore(t, id, "final restore")
	}
	t.Logf("%d of %d scrub --repair runs killed before they completed", killed, rounds)
}

// crashKillRebuild kills index rebuild at random moments, alternately with
// the index deleted first (the head node lost it) and with the index in
// place (a rebuild over a working index, which it moves aside). After each
// kill the repository has either a complete index (check passes and lists
// every snapshot) or, only when the index had been deleted, none at all
// (check exits 10 and says to rebuild); never a partial index that silently
// lacks snapshots. The next rebuild completes.
func crashKillRebuild(t *testing.T, bin string) {
	if !crashHelpHas(t, bin, []string{"index"}, "rebuild") {
		t.Skip("coffer index rebuild is not in this build yet (cmd/coffer/cmd_index.go is a placeholder): nothing to kill")
	}
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	r := newCrashRepo(t, bin)
	crashPrepare(t, r)
	want := r.snapshots(t)
	indexFolder := filepath.Join(r.dir, "index")

	if err := os.RemoveAll(indexFolder); err != nil {
		t.Fatal(err)
	}
	cal := r.spawn(t, -1, "index", "rebuild")
	if cal.code != exitOK {
		t.Fatalf("index rebuild failed (exit %d):\n%s%s", cal.code, cal.stdout, cal.stderr)
	}
	r.mustCheck(t, "after a complete rebuild")
	// The setup's killed backup may have died between writing its snapshot
	// record to the drives and indexing it: that snapshot is complete, and
	// a rebuild from the drives rightly lists it. From here on the rebuilt
	// list is the one every later rebuild must give.
	r.record(t, want, r.snapshots(t), "after a complete rebuild")
	want = r.snapshots(t)
	typical := cal.dur
	t.Logf("an index rebuild takes %v", typical)

	killed, complete, missing := 0, 0, 0
	for i := range rounds {
		deleted := i%2 == 0
		if deleted {
			if err := os.RemoveAll(indexFolder); err != nil {
				t.Fatal(err)
			}
		}
		delay := r.sampleDelay(typical)
		what := fmt.Sprintf("round %d (index deleted first: %v; index rebuild killed after %v)", i, deleted, delay)
		run := r.spawn(t, delay, "index", "rebuild")
		if run.killed {
			killed++
		} else if run.code != exitOK {
			t.Fatalf("%s: index rebuild ended by itself with exit %d:\n%s%s", what, run.code, run.stdout, run.stderr)
		}
		code, rep, res := r.check(t)
		switch {
		case code == exitOK && rep != nil && len(rep.Problems) == 0:
			complete++
			r.record(t, want, r.snapshots(t), what)
			r.restore(t, want[r.rng.IntN(len(want))], what)
		case code == exitNoRepo && !run.killed:
			t.Errorf("%s: the rebuild completed but check finds no repository:\n%s", what, res)
		case code == exitNoRepo:
			missing++
			if !deleted {
				// engine/rebuild.go install: between renaming the old
				// index aside and renaming the new one in, there is none.
				t.Errorf("%s: a rebuild killed over a working index left no index at all:\n%s", what, res)
			}
			if !strings.Contains(res.stderr, "rebuild") {
				t.Errorf("%s: with the index missing, the error should say to run index rebuild:\n%s", what, res)
			}
			next := r.inproc(t, -1, "index", "rebuild")
			if next.code != exitOK {
				t.Fatalf("%s: the next index rebuild failed:\n%s", what, next)
			}
			r.mustCheck(t, what+", after the next rebuild")
			r.record(t, want, r.snapshots(t), what+", after the next rebuild")
			r.restore(t, want[r.rng.IntN(len(want))], what+", after the next rebuild")
		default:
			t.Errorf("%s: the killed rebuild left an index that is neither complete nor reported missing:\n%s", what, res)
		}
		if got := r.snapshots(t); len(got) != len(want) {
			t.Errorf("%s: %d snapshots listed, want %d", what, len(got), len(want))
		}
		if t.Failed() {
			t.Fatalf("stopping after the first failed round (seed %d)", crashSeed)
		}
	}
	r.change(t)
	r.backupNow(t, false, "backup after the rebuilds")
	r.mustCheck(t, "final check")
	for _, id := range r.snapshots(t) {
		r.restore(t, id, "final restore")
	}
	t.Logf("%d of %d index rebuilds killed before they completed; after the kill %d had a complete index, %d none (rebuilt by the next run)", killed, rounds, complete, missing)
}

func crashKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k[:8])
	}
	sort.Strings(out)
	return out
}

func crashNamesAny(s string, ids map[string]bool) bool {
	for id := range ids {
		if strings.Contains(s, id) {
			return true
		}
	}
	return false
}

// crashRandom returns n pseudo-random bytes, the same for the same seed.
func crashRandom(seed uint64, n int) []byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// crashText returns n bytes of compressible text, different for each seed.
func crashText(seed, n int) []byte {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d of generation %d: the quick brown fox jumps over the lazy dog\n", i, seed)
	}
	return []byte(b.String()[:n])
}

// crashSource creates generation 0 of the source below root (folders a, b, c
// and n, random and compressible data), or changes it into generation gen:
// one big file rewritten, one new file, one grown, one small file changed,
// an old new file removed. Everything is seeded, so a run is repeatable.
func crashSource(t *testing.T, root string, gen int, sz crashSizes) {
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
	u, g := sz.unit, sz.genUnit
	if gen == 0 {
		write("a/random1.bin", crashRandom(1, 12*u))
		write("a/random2.bin", crashRandom(2, 7*u))
		write("b/text.txt", crashText(0, 10*u))
		write("b/mixed.bin", append(crashRandom(3, 4*u), crashText(3, 4*u)...))
		write("c/deep/er/random3.bin", crashRandom(4, 9*u))
		write("c/deep/zeros.bin", make([]byte, 3*u))
		for i := range 30 {
			write(fmt.Sprintf("c/small/f%02d.txt", i), crashText(100+i, 100+37*i))
		}
		write("n/keep.txt", crashText(7, 1000))
		if err := os.Symlink("../a/random1.bin", filepath.Join(root, "b", "link")); err != nil {
			t.Fatal(err)
		}
		return
	}
	s := uint64(gen) * 1000
	// Rewrite the head of one big file in place (size kept): new chunks at
	// the start, the rest deduplicates.
	big := []string{"a/random1.bin", "a/random2.bin", "c/deep/er/random3.bin", "b/mixed.bin"}[gen%4]
	f, err := os.OpenFile(filepath.Join(root, big), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(crashRandom(s+1, 2*g), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	write(fmt.Sprintf("n/gen%03d.bin", gen), append(crashRandom(s+2, 2*g), crashText(gen, 2*g)...))
	f, err = os.OpenFile(filepath.Join(root, "b", "text.txt"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(crashRandom(s+3, g/2)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	write(fmt.Sprintf("c/small/f%02d.txt", gen%30), crashText(gen, 50+gen))
	if gen >= 3 {
		_ = os.Remove(filepath.Join(root, fmt.Sprintf("n/gen%03d.bin", gen-2)))
	}
}
