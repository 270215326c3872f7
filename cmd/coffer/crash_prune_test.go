package main

import (
	"fmt"
	"testing"
)

// crashKillPrune kills `coffer prune` with SIGKILL at random moments
// while it deletes and repacks the packs of forgotten snapshots: after each
// kill, check passes, every remaining snapshot restores as it was backed up,
// and the next prune completes.
func crashKillPrune(t *testing.T, bin string) {
	rounds := 12
	if testing.Short() {
		rounds = 3
	}
	r := newCrashRepo(t, bin)
	crashPrepare(t, r)
	killed := 0
	for i := range rounds {
		// Two new snapshots, then forget the oldest ones, so the prune has
		// whole packs to delete and partly used packs to repack.
		for range 2 {
			r.change(t)
			r.backupNow(t, false, fmt.Sprintf("round %d backup", i))
		}
		snaps := r.snapshots(t)
		r.inproc(t, exitOK, "forget", "--keep-last", "2")
		keep := r.snapshots(t)
		if len(keep) != 2 || keep[1] != snaps[len(snaps)-1] {
			t.Fatalf("round %d: forget --keep-last 2 left %v of %v", i, keep, snaps)
		}
		cal := r.spawn(t, -1, "prune", "--dry-run")
		if cal.code != exitOK {
			t.Fatalf("round %d: prune --dry-run failed:\n%s", i, cal.stderr)
		}
		delay := r.sampleDelay(3 * cal.dur)
		what := fmt.Sprintf("round %d (prune killed after %v)", i, delay)
		run := r.spawn(t, delay, "prune", "--max-unused", "0")
		if run.killed {
			killed++
		} else if run.code != exitOK {
			t.Fatalf("%s: prune ended by itself with exit %d:\n%s", what, run.code, run.stderr)
		}
		r.mustCheck(t, what)
		for _, id := range keep {
			r.restore(t, id, what)
		}
		next := r.inproc(t, -1, "prune")
		if next.code != exitOK {
			t.Fatalf("%s: the next prune failed:\n%s", what, next)
		}
		r.mustCheck(t, what+", after the next prune")
		if t.Failed() {
			t.Fatalf("stopping after the first failed round (seed %d)", crashSeed)
		}
	}
	r.change(t)
	r.backupNow(t, false, "backup after the prunes")
	r.mustCheck(t, "final check")
	for _, id := range r.snapshots(t) {
		r.restore(t, id, "final restore")
	}
	t.Logf("%d of %d prunes killed before they completed", killed, rounds)
}
