package engine

import (
	"context"
	"fmt"
	"time"

	"coffer/repo"
)

// Kinds of ScrubProblem about replicated records and drives (see scrub.go
// for the kinds about shards).
const (
	// ScrubRecord: a replicated record with fewer than its C copies of the
	// newest version where it belongs, a stale or damaged copy, a copy off
	// its placement, or no valid copy at all.
	ScrubRecord = "record"
	// ScrubSuspect: a drive in service that refused writes with a drive
	// fault (read-only, full, over quota, failing); scrub cannot repair it.
	ScrubSuspect = "suspect"
)

// scrubRecords checks every replicated record's copies and, with Repair,
// rewrites missing and stale ones where the record belongs and removes
// copies off its placement (recordHealer); then it reports every suspect
// drive in service.
func (s *scrubber) scrubRecords(ctx context.Context) error {
	h, err := s.e.newRecordHealer(s.o.Repair)
	if err != nil {
		return fmt.Errorf("scrub records: %w", err)
	}
	h.r = s.r
	err = h.run(ctx, func(f *recordFinding) {
		s.rep.Records.Found++
		p := ScrubProblem{Kind: ScrubRecord, Record: f.name, Detail: f.detail(), Repaired: f.repaired, RepairError: f.repairErr}
		if f.repaired {
			s.rep.Records.Repaired++
		}
		s.add(p)
	})
	if err != nil {
		return fmt.Errorf("scrub records: %w", err)
	}
	s.rep.RecordsChecked = h.checked
	for _, err := range h.listErrs {
		s.errorf("listing records: %v", trimPrefixes(err.Error()))
	}
	s.suspectDrives(h.onSuspect)
	return nil
}

// suspectDrives adds one problem for each drive in service that is suspect.
func (s *scrubber) suspectDrives(older map[repo.DriveID]int) {
	for _, sp := range s.r.Health().Suspects() {
		m, ok := s.members[sp.Drive]
		if !ok || m.Failed {
			continue
		}
		s.rep.SuspectDrives++
		detail := fmt.Sprintf("the drive refused writes (%s) since %s; writes place around it", sp.Reason, sp.Since.UTC().Format(time.RFC3339))
		switch n := older[sp.Drive]; {
		case n == 1:
			detail += "; 1 record holds an older copy on it"
		case n > 1:
			detail += fmt.Sprintf("; %d records hold older copies on it", n)
		}
		s.add(ScrubProblem{Kind: ScrubSuspect, Drive: sp.Drive.String(), Detail: detail,
			RepairError: "not repairable by scrub: fix the drive, or mark it failed (coffer drive fail) and replace it"})
	}
}
