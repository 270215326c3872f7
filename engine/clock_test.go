package engine

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

const year = 365 * 24 * time.Hour

// clockRepo is lcRepo at a fake clock *now (tenants a, b, c with one
// snapshot each, written at *now), reopened with that clock.
func clockRepo(t *testing.T, now *time.Time) (*Engine, map[string]string) {
	t.Helper()
	clock := func() time.Time { return *now }
	dir, srcs := lcRepo(t, clock)
	e, err := Open(dir, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, srcs
}

// auditActions returns the audit log's entries of the given action.
func auditActions(t *testing.T, e *Engine, action string) []AuditEntry {
	t.Helper()
	var out []AuditEntry
	for _, en := range auditEntries(t, e) {
		if en.Action == action {
			out = append(out, en)
		}
	}
	return out
}

// TestLockUnderClockYearBehind is case 3 of issue 16 as found: a lock on a
// host whose clock is a year behind recorded a lock time before the
// tenant's creation, and the next sweep shredded the tenant. The lock is
// refused; the sweep that follows (with the clock right, after more than a
// grace period of records) finds nothing to shred.
func TestLockUnderClockYearBehind(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	e, srcs := clockRepo(t, &now)

	now = now.Add(-year)
	_, err := e.LockTenant(ctx, "a")
	if !errors.Is(err, ErrClock) || !strings.Contains(err.Error(), "the clock reads 2025-12-03T10:00:00Z, before the tenant was created (2026-12-03T10:00:00Z): fix the clock") {
		t.Fatalf("lock under a clock a year behind: %v", err)
	}
	now = now.Add(year)
	passDays(t, e, &now, "b", 30)
	rep, err := e.SweepTenants(ctx, now)
	if err != nil || len(rep.Shredded) != 0 {
		t.Fatalf("sweep after the refused lock: %+v, %v", rep, err)
	}
	restoreEqual(t, e, "a", srcs["a"])
}

// TestLockBeforeNewestRecord refuses a clock behind the newest record
// though after the tenant's creation, and a clock more than a grace period
// ahead of it; a clock a minute behind (NTP) is accepted.
func TestLockBeforeNewestRecord(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	e, _ := clockRepo(t, &now)
	passDays(t, e, &now, "b", 10) // newest record: 2026-12-13

	now = now.Add(-5 * 24 * time.Hour)
	_, err := e.LockTenant(ctx, "a")
	if !errors.Is(err, ErrClock) || !strings.Contains(err.Error(), "the clock reads 2026-12-08T10:00:00Z, before the newest record on the drives (2026-12-13T10:00:00Z): fix the clock") {
		t.Fatalf("lock 5 days before the newest record: %v", err)
	}
	now = now.Add(5*24*time.Hour + DefaultGracePeriod + time.Hour)
	_, err = e.LockTenant(ctx, "a")
	if !errors.Is(err, ErrClock) || !strings.Contains(err.Error(), "more than the grace period (672h0m0s) after the newest record on the drives (2026-12-13T10:00:00Z)") {
		t.Fatalf("lock a grace period after the newest record: %v", err)
	}
	now = time.Date(2026, 12, 13, 9, 59, 0, 0, time.UTC)
	ti, err := e.LockTenant(ctx, "a")
	if err != nil {
		t.Fatalf("lock a minute behind the newest record: %v", err)
	}
	// The entry names the record the lock time was checked against.
	locks := auditActions(t, e, "tenant.lock")
	if len(locks) != 1 || locks[0].Tenant != ti.ID || !strings.Contains(locks[0].Detail, "newest_record=1797156000") ||
		!strings.Contains(locks[0].Detail, "locked_seq=") {
		t.Fatalf("lock entries: %+v", locks)
	}
}

// TestSweepClockYearAhead: a sweep (three in a row) under a clock a year
// ahead keeps a tenant locked today, says why, and records its clock; an
// unlock under that clock succeeds.
func TestSweepClockYearAhead(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	e, srcs := clockRepo(t, &now)
	if _, err := e.LockTenant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(year)
	for i := range 3 {
		rep, err := e.SweepTenants(ctx, now)
		if err != nil || len(rep.Shredded) != 0 {
			t.Fatalf("sweep %d under a clock a year ahead: %+v, %v", i, rep, err)
		}
		if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "was kept: the clock (2027-12-03T10:") {
			t.Fatalf("sweep %d warnings: %q", i, rep.Warnings)
		}
		now = now.Add(time.Minute)
	}
	sweeps := auditActions(t, e, "tenant.sweep")
	if len(sweeps) != 3 || sweeps[0].Outcome != "ok" ||
		!strings.Contains(sweeps[0].Detail, "at=1827828000 newest_record=1796292000 shredded=0 kept=1") {
		t.Fatalf("sweep entries: %+v", sweeps)
	}
	if _, err := e.UnlockTenant(ctx, "a"); err != nil {
		t.Fatalf("unlock under a clock a year ahead: %v", err)
	}
	restoreEqual(t, e, "a", srcs["a"])
}

// TestUnlockUnderWrongClock: a clock a year behind or a year ahead does not
// make unlock refuse with "grace period ended".
func TestUnlockUnderWrongClock(t *testing.T) {
	ctx := context.Background()
	for _, skew := range []time.Duration{-year, year} {
		now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
		e, _ := clockRepo(t, &now)
		if _, err := e.LockTenant(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		passDays(t, e, &now, "b", 3)
		now = now.Add(skew)
		if _, err := e.UnlockTenant(ctx, "a"); err != nil {
			t.Fatalf("unlock under a clock off by %s: %v", skew, err)
		}
	}
}

// TestSweepOldLockBeforeCreation: a lock written by earlier code under a
// clock a year behind (its time before the tenant's creation, no
// locked_seq) is kept by the sweep, with a warning that says what to do.
func TestSweepOldLockBeforeCreation(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	e, srcs := clockRepo(t, &now)
	te, err := e.findTenant("a")
	if err != nil {
		t.Fatal(err)
	}
	lockedAt := now.Add(-year)
	te.meta.State, te.meta.LockedAt = StateLocked, &lockedAt
	if err := e.putTenant(ctx, te.rec.ID, te.rec.Version+1, &te.meta); err != nil {
		t.Fatal(err)
	}
	passDays(t, e, &now, "b", 30)
	rep, err := e.SweepTenants(ctx, now)
	if err != nil || len(rep.Shredded) != 0 || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "precedes its creation") {
		t.Fatalf("sweep of an old lock before creation: %+v, %v", rep, err)
	}
	if _, err := e.UnlockTenant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	restoreEqual(t, e, "a", srcs["a"])
}

// TestEvidenceClock checks the evidence clock read from a real audit log:
// each step between records counts at most clockLead, a step back counts
// nothing, and the step from the newest record to the clock likewise.
func TestEvidenceClock(t *testing.T) {
	ctx := context.Background()
	h := time.Hour
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		times []time.Duration // entry times after t0 (after init's entry at t0)
		at    time.Duration
		want  time.Duration
	}{
		{"steady", []time.Duration{24 * h, 48 * h}, 72 * h, 72 * h},
		{"quiet period", []time.Duration{10 * 24 * h}, 10 * 24 * h, clockLead},
		{"jump ahead", []time.Duration{year}, year + h, clockLead + h},
		{"jump back", []time.Duration{24 * h, 24*h - year, 48*h - year}, 72*h - year, 72 * h},
		{"clock behind the log", []time.Duration{24 * h}, 0, 24 * h},
		{"clock far ahead of the log", []time.Duration{24 * h}, year, 24*h + clockLead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0
			dir := itInit(t, InitOptions{PackSize: minPackSize})
			e, err := Open(dir, Options{Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			// init wrote the first entry at the real time: start the log
			// at t0 with an entry, and measure from there.
			if err := e.logAudit(ctx, "test.start", [16]byte{}, nil, ""); err != nil {
				t.Fatal(err)
			}
			ev0, err := e.readEvidence(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range tc.times {
				now = t0.Add(d)
				if err := e.logAudit(ctx, "test.step", [16]byte{}, nil, ""); err != nil {
					t.Fatal(err)
				}
			}
			ev, err := e.readEvidence(ctx, map[uint64]bool{ev0.lastSeq: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := ev.clockAt(t0.Add(tc.at)) - ev.marks[ev0.lastSeq].clock; got != tc.want {
				t.Errorf("evidence clock %s, want %s", got, tc.want)
			}
		})
	}
}
