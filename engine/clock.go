package engine

import (
	"context"
	"fmt"
	"time"
)

// Time is checked, not trusted (docs/design.md, chapter 9, "Time"). The
// records hold the times of the clocks that wrote them; a lock, an unlock and
// a sweep compare their own clock with them, and the age of a lock is
// measured by the records, so one wrong clock can neither shred a tenant
// early nor make a lock look older than it is.
const (
	// clockSkew is how far before the newest record a clock may read and
	// still be taken as right: the hosts that wrote records, and NTP
	// steps, differ by seconds.
	clockSkew = 5 * time.Minute
	// clockLead is the most that one step between two consecutive records
	// (and between the newest record and the clock of the action) counts
	// for the age of a lock. A longer quiet period, or a clock that jumped
	// forward, counts as clockLead: a lock then ages more slowly than the
	// clock says, never faster. A daily sweep or daily backups keep the
	// steps well below it.
	clockLead = 48 * time.Hour
)

// clockError is a refusal because the clock contradicts the records: one
// sentence, wrapping ErrClock.
type clockError struct{ msg string }

func (c *clockError) Error() string { return c.msg }
func (c *clockError) Unwrap() error { return ErrClock }

func clockTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// evidence is what the audit log says about time: the time of its newest
// entry, and the evidence clock, the sum of the steps between consecutive
// entries (each step clamped to [0, clockLead]), at chosen entries.
type evidence struct {
	lastSeq uint64
	last    time.Time     // time of the newest entry; zero for an empty log
	clock   time.Duration // the evidence clock at the newest entry
	// marks holds the time and the evidence clock of the entries asked for.
	marks map[uint64]evidenceMark
}

type evidenceMark struct {
	t     time.Time
	clock time.Duration
}

func clampStep(d time.Duration) time.Duration { return min(max(d, 0), clockLead) }

// readEvidence streams the index's copy of the audit log (the same entries
// as the drives, which are written first) and returns its evidence, with
// marks at the sequence numbers in want. Memory does not grow with the log.
// An entry that does not decode is skipped (audit --verify reports it).
func (e *Engine) readEvidence(ctx context.Context, want map[uint64]bool) (*evidence, error) {
	ev := &evidence{marks: map[uint64]evidenceMark{}}
	var prev time.Time
	err := e.db.Audit(0, func(seq uint64, v []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		a, err := decodeAuditRec(v)
		if err != nil {
			return nil
		}
		t := time.Unix(0, a.nanos).UTC()
		if !prev.IsZero() {
			ev.clock += clampStep(t.Sub(prev))
		}
		prev = t
		ev.lastSeq, ev.last = seq, t
		if want[seq] {
			ev.marks[seq] = evidenceMark{t, ev.clock}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the audit log for the times of the records: %w", err)
	}
	return ev, nil
}

// clockAt is the evidence clock as of at: the newest entry's, plus the step
// from it to at, clamped.
func (ev *evidence) clockAt(at time.Time) time.Duration {
	if ev.last.IsZero() {
		return 0
	}
	return ev.clock + clampStep(at.Sub(ev.last))
}

// checkLockClock refuses a lock time now that the records contradict: before
// the tenant's creation, before the newest record, or more than far after
// it (one grace period: further ahead, a lock would postpone the shred by
// more than the grace period itself).
func (ev *evidence) checkLockClock(now, created time.Time, far time.Duration) error {
	switch {
	case now.Before(created.Add(-clockSkew)):
		return &clockError{fmt.Sprintf("the clock reads %s, before the tenant was created (%s): fix the clock", clockTime(now), clockTime(created))}
	case ev.last.IsZero():
		return nil
	case now.Before(ev.last.Add(-clockSkew)):
		return &clockError{fmt.Sprintf("the clock reads %s, before the newest record on the drives (%s): fix the clock", clockTime(now), clockTime(ev.last))}
	case now.After(ev.last.Add(far)):
		return &clockError{fmt.Sprintf("the clock reads %s, more than the grace period (%s) after the newest record on the drives (%s): fix the clock", clockTime(now), far, clockTime(ev.last))}
	}
	return nil
}

// lockAge returns how long m has been locked as of at by the evidence of the
// records, and false when the records cannot tell (then the tenant is not
// due). A lock made by this code names the newest entry it was checked
// against (LockedSeq): its age is the evidence clock since that entry, less
// the step from that entry to the lock. An older lock has only its time:
// it must not precede the tenant's creation, and the clock counts at most
// clockLead past the newest record.
func (ev *evidence) lockAge(m *tenantMeta, at time.Time) (time.Duration, bool) {
	if m.LockedAt == nil {
		return 0, false
	}
	l := *m.LockedAt
	if m.LockedSeq == 0 {
		if l.Before(m.Created.Add(-clockSkew)) {
			return 0, false
		}
		upper := at
		if !ev.last.IsZero() && upper.After(ev.last.Add(clockLead)) {
			upper = ev.last.Add(clockLead)
		}
		return upper.Sub(l), true
	}
	mk, ok := ev.marks[m.LockedSeq]
	if !ok {
		return 0, false // the entry is not in the log (an index behind the drives)
	}
	return ev.clockAt(at) - (mk.clock + clampStep(l.Sub(mk.t))), true
}

// due reports whether a locked tenant's grace period is over as of at: by
// the clock (at) and by the records. The second string explains a tenant
// the clock says is due but the records do not ("" otherwise).
func (ev *evidence) due(m *tenantMeta, at time.Time, grace time.Duration) (bool, string) {
	if m.State != StateLocked || m.LockedAt == nil || at.Before(m.LockedAt.Add(grace)) {
		return false, ""
	}
	age, ok := ev.lockAge(m, at)
	switch {
	case !ok && m.LockedAt.Before(m.Created.Add(-clockSkew)):
		return false, fmt.Sprintf("its lock time %s precedes its creation (%s), written by a wrong clock: unlock it and lock it again, or shred it", clockTime(*m.LockedAt), clockTime(m.Created))
	case !ok:
		return false, fmt.Sprintf("the audit entry %d its lock was checked against is not in the log (run coffer index rebuild)", m.LockedSeq)
	case age < grace:
		return false, fmt.Sprintf("the clock (%s) says its grace period is over, but the records show it locked for %s only (newest record %s)", clockTime(at), age.Round(time.Minute), clockTime(ev.last))
	}
	return true, ""
}
