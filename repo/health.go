package repo

import (
	"context"
	"errors"
	"slices"
	"sync"
	"syscall"
	"time"
)

// driveFaults are the errors of a write that say the drive itself cannot take
// writes now, whatever is written: its file system turned read-only, it is
// full (of bytes or of inodes), its user is over quota, or the disk fails.
var driveFaults = []syscall.Errno{syscall.EROFS, syscall.ENOSPC, syscall.EDQUOT, syscall.EIO}

// IsDriveFault reports whether err, returned by a drive's Put, says that the
// drive cannot take writes now (read-only, full, over quota, failing) rather
// than that this one write failed.
func IsDriveFault(err error) bool {
	for _, e := range driveFaults {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// faultReason is the short class of a drive fault: "read-only file system",
// "no space left on device", ...; it never holds a path or an object name.
func faultReason(err error) string {
	for _, e := range driveFaults {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "write failed"
}

// SuspectRetry is how long writes avoid a suspect drive before they try it
// again: a drive that was full may have been freed, a read-only one
// remounted.
const SuspectRetry = 10 * time.Minute

// Suspect is a drive in service that refused a write with a drive fault.
type Suspect struct {
	Drive  DriveID
	Reason string    // the fault's class, such as "read-only file system"
	Since  time.Time // when the fault was first seen
	Last   time.Time // when it was last seen (by this process)
}

// Health remembers which drives are suspect. Writes of packs and records
// avoid a suspect drive (they place on the other drives first) until
// SuspectRetry has passed since its last fault; a put that succeeds on it
// clears the mark. A Repo is rebuilt whenever membership changes, so the
// engine keeps one Health for the life of the process and gives it to every
// Repo (Options.Health). It is safe for concurrent use.
type Health struct {
	now      func() time.Time
	onChange func(DriveID) // told when a drive becomes suspect or is cleared

	mu       sync.Mutex
	suspects map[DriveID]Suspect // guarded by mu
}

// NewHealth returns an empty Health. onChange, if not nil, is called after a
// drive becomes suspect or stops being one, on the goroutine of the write
// that changed it, without locks held; it reads the new state with Suspect.
func NewHealth(onChange func(DriveID)) *Health {
	return &Health{now: time.Now, onChange: onChange, suspects: map[DriveID]Suspect{}}
}

// Load restores marks kept from an earlier process (onChange is not called).
func (h *Health) Load(s Suspect) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.Last.IsZero() {
		s.Last = s.Since
	}
	h.suspects[s.Drive] = s
}

// Suspect returns the mark of drive d, if it has one.
func (h *Health) Suspect(d DriveID) (Suspect, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.suspects[d]
	return s, ok
}

// Suspects returns every mark, in drive ID order.
func (h *Health) Suspects() []Suspect {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Suspect, 0, len(h.suspects))
	for _, s := range h.suspects {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Suspect) int { return slices.Compare(a.Drive[:], b.Drive[:]) })
	return out
}

// Clear removes the mark of drive d (a drive marked failed, or found
// healthy again).
func (h *Health) Clear(d DriveID) {
	h.mu.Lock()
	_, had := h.suspects[d]
	delete(h.suspects, d)
	h.mu.Unlock()
	if had && h.onChange != nil {
		h.onChange(d)
	}
}

// avoid reports whether writes should place on other drives than d first.
func (h *Health) avoid(d DriveID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.suspects[d]
	return ok && h.now().Sub(s.Last) < SuspectRetry
}

// noteWrite records the outcome of a put on drive d: a drive fault marks it
// suspect; a success clears its mark. Other errors (a cancelled context, a
// bad name) say nothing about the drive.
func (h *Health) noteWrite(d DriveID, err error) {
	now := h.now()
	h.mu.Lock()
	s, had := h.suspects[d]
	changed := false
	switch {
	case err == nil:
		if had {
			delete(h.suspects, d)
			changed = true
		}
	case IsDriveFault(err):
		if !had {
			s = Suspect{Drive: d, Reason: faultReason(err), Since: now}
			changed = true
		} else if r := faultReason(err); r != s.Reason {
			s.Reason = r
			changed = true
		}
		s.Last = now
		h.suspects[d] = s
	}
	h.mu.Unlock()
	if changed && h.onChange != nil {
		h.onChange(d)
	}
}

// healthyFirst returns ms in the same order, except that the drives writes
// avoid come after all the others (each group keeps its order).
func (h *Health) healthyFirst(ms []*Member) []*Member {
	out := make([]*Member, 0, len(ms))
	var later []*Member
	for _, m := range ms {
		if h.avoid(m.ID) {
			later = append(later, m)
		} else {
			out = append(out, m)
		}
	}
	return append(out, later...)
}

// noted records the outcome err of a put on drive d in r's Health and
// returns err. A put cut short by ctx says nothing about the drive.
func (r *Repo) noted(ctx context.Context, d DriveID, err error) error {
	if ctx.Err() == nil {
		r.health.noteWrite(d, err)
	}
	return err
}
