package repo

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// TestHealthRetry: a suspect drive is avoided for SuspectRetry after its
// last fault, then tried again; a fault of another class updates the
// reason; errors that are not drive faults mark nothing; a success clears.
func TestHealthRetry(t *testing.T) {
	now := time.Date(2025, 3, 1, 2, 0, 0, 0, time.UTC)
	var changes int
	h := NewHealth(func(DriveID) { changes++ })
	h.now = func() time.Time { return now }
	d := DriveID{1}
	h.noteWrite(d, fmt.Errorf("put x: %w", syscall.EIO))
	h.noteWrite(DriveID{2}, fmt.Errorf("put x: %w", syscall.EACCES))
	if !h.avoid(d) || h.avoid(DriveID{2}) || changes != 1 {
		t.Fatalf("avoid %v %v, %d changes", h.avoid(d), h.avoid(DriveID{2}), changes)
	}
	now = now.Add(SuspectRetry - time.Second)
	if !h.avoid(d) {
		t.Error("not avoided before SuspectRetry")
	}
	now = now.Add(2 * time.Second)
	if h.avoid(d) {
		t.Error("still avoided after SuspectRetry")
	}
	h.noteWrite(d, fmt.Errorf("put y: %w", syscall.ENOSPC))
	s, ok := h.Suspect(d)
	if !ok || s.Reason != "no space left on device" || !s.Last.Equal(now) || !h.avoid(d) || changes != 2 {
		t.Errorf("after a second fault: %+v %v, %d changes", s, ok, changes)
	}
	if s.Since.Equal(s.Last) {
		t.Error("a second fault moved Since")
	}
	h.noteWrite(d, nil)
	if _, ok := h.Suspect(d); ok || changes != 3 {
		t.Errorf("a successful put did not clear the mark (%d changes)", changes)
	}
}
