package engine

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Events: what an operator may want to be told of as it happens (a drive
// lost, damage found by a scrub, a failed backup, a tenant locked, ...).
// The engine calls Options.Events with an Event at the few places where
// such a thing happens; packages notify (alerts by e-mail and webhook) and
// metrics (Prometheus) consume them. docs/design.md, chapter 16, lists the
// kinds.
//
// An Event never carries tenant data, file names, paths, host names or tags:
// only a kind, a severity, IDs, a fixed reason word and numbers. Tenant
// holds the tenant's name, which is for the operator only.

// Kinds of Event.
const (
	EventDriveFailed      = "drive.failed"      // the operator marked a drive failed
	EventDriveUnreachable = "drive.unreachable" // a drive in service could not be opened
	EventScrubDamage      = "scrub.damage"      // a scrub found problems (not repairing)
	EventScrubClean       = "scrub.clean"       // a scrub found nothing
	EventRepairFinished   = "repair.finished"   // a scrub --repair ended
	EventBackupFinished   = "backup.finished"   // a snapshot was recorded
	EventBackupFailed     = "backup.failed"     // a backup ended without a snapshot
	EventBackupQuota      = "backup.quota"      // a backup was refused: the tenant is over its quota
	EventTenantQuota      = "tenant.quota"      // a backup left the tenant above QuotaWarnPercent
	EventRestoreFinished  = "restore.finished"  // a restore (local or remote) ended
	EventRestoreFailed    = "restore.failed"    // a restore failed
	EventTenantLocked     = "tenant.locked"
	EventTenantUnlocked   = "tenant.unlocked"
	EventTenantShredded   = "tenant.shredded"
	EventSweepFinished    = "sweep.finished" // a sweep ran: counts of shredded and kept tenants
	EventAuditVerified    = "audit.verified" // audit --verify found the chain intact
	EventAuditFailed      = "audit.failed"   // audit --verify found a problem
)

// EventKinds lists every kind of Event, for matchers and documentation.
var EventKinds = []string{
	EventDriveFailed, EventDriveUnreachable, EventScrubDamage, EventScrubClean, EventRepairFinished,
	EventBackupFinished, EventBackupFailed, EventBackupQuota, EventTenantQuota,
	EventRestoreFinished, EventRestoreFailed,
	EventTenantLocked, EventTenantUnlocked, EventTenantShredded, EventSweepFinished,
	EventAuditVerified, EventAuditFailed,
}

// QuotaWarnPercent is the share of its quota above which a backup of a
// tenant emits EventTenantQuota.
const QuotaWarnPercent = 90

// Severity orders events by how urgently an operator must act.
type Severity int

// Severities, least urgent first.
const (
	SevInfo     Severity = iota // for metrics and logs: nothing to do
	SevNotice                   // an operator's action or a normal but notable change
	SevWarning                  // attention soon (a drive marked failed, a quota nearly full)
	SevError                    // act now (damage found, a backup failed)
	SevCritical                 // data at risk (a pack unreadable, the audit chain broken)
)

var severityNames = []string{"info", "notice", "warning", "error", "critical"}

func (s Severity) String() string {
	if s < 0 || int(s) >= len(severityNames) {
		return fmt.Sprintf("severity(%d)", int(s))
	}
	return severityNames[s]
}

// ParseSeverity parses a severity name (info, notice, warning, error,
// critical).
func ParseSeverity(s string) (Severity, error) {
	for i, n := range severityNames {
		if strings.EqualFold(s, n) {
			return Severity(i), nil
		}
	}
	return 0, invalidf("severity %q is not one of %s", s, strings.Join(severityNames, ", "))
}

// Event is something that happened that an operator may want to be told
// of. Its fields hold IDs, fixed words and numbers only.
type Event struct {
	Kind     string
	Severity Severity
	Time     time.Time // UTC
	// TenantID is the tenant's ID in hex ("" when the event concerns no
	// tenant); Tenant its name when known (for the operator only: a
	// tenant resumed from an interrupted shred has no name any more).
	TenantID string
	Tenant   string
	// Drive is a drive ID.
	Drive string
	// Reason is the class of a failure, as in the audit log's outcomes
	// ("quota exceeded", "interrupted", "drive full", "failed", ...).
	Reason string
	// Seconds is how long the work took (scrub, backup, restore), 0 when
	// not measured.
	Seconds float64
	// Counts are numbers that go with the kind (docs/design.md, chapter
	// 16): shards missing, bytes backed up, tenants shredded, ...
	Counts map[string]int64
}

// emit hands ev to Options.Events, if set.
func (e *Engine) emit(ev Event) {
	if e.opts.Events == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = e.now().UTC()
	}
	e.opts.Events(ev)
}

// failureReason is the class of a failure, without the "error: " of the
// audit log's outcome.
func failureReason(err error) string {
	return strings.TrimPrefix(auditOutcome(err), "error: ")
}

// emitBackup emits the events of a backup that ended with s (nil: no
// snapshot) and err. used is the tenant's stored bytes after it, or -1
// when not counted (the tenant has no quota).
func (t *Tenant) emitBackup(s *Snapshot, err error, used int64) {
	ev := Event{Kind: EventBackupFinished, Severity: SevInfo, TenantID: t.ID(), Tenant: t.name}
	switch {
	case s != nil:
		st := s.Stats
		ev.Seconds = st.End.Sub(st.Start).Seconds()
		ev.Counts = map[string]int64{
			"files": st.Files, "bytes": st.Bytes, "bytes_added": st.BytesAdded,
			"bytes_stored": st.BytesStored, "chunks_added": st.BlobsAdded, "files_failed": st.FilesFailed,
		}
	case errors.Is(err, ErrQuotaExceeded):
		ev.Kind, ev.Severity, ev.Reason = EventBackupQuota, SevWarning, failureReason(err)
	default:
		ev.Kind, ev.Severity, ev.Reason = EventBackupFailed, SevError, failureReason(err)
		if ev.Reason == "interrupted" || ev.Reason == "tenant locked" {
			ev.Severity = SevWarning
		}
	}
	t.e.emit(ev)
	if s != nil && used >= 0 && t.quota > 0 && used*100 >= t.quota*QuotaWarnPercent {
		t.e.emit(Event{Kind: EventTenantQuota, Severity: SevWarning, TenantID: t.ID(), Tenant: t.name,
			Counts: map[string]int64{"stored_bytes": used, "quota_bytes": t.quota, "percent": used * 100 / t.quota}})
	}
}

// emitRestore emits the event of a restore that began at start.
func (t *Tenant) emitRestore(start time.Time, files, bytes int64, err error) {
	ev := Event{Kind: EventRestoreFinished, Severity: SevInfo, TenantID: t.ID(), Tenant: t.name,
		Seconds: t.e.now().Sub(start).Seconds(), Counts: map[string]int64{"files": files, "bytes": bytes}}
	if err != nil {
		ev.Kind, ev.Severity, ev.Reason = EventRestoreFailed, SevError, failureReason(err)
		if ev.Reason == "interrupted" {
			ev.Severity = SevWarning
		}
	}
	t.e.emit(ev)
}

// emitRestoreStats is emitRestore for Restore's named results, deferred.
func (t *Tenant) emitRestoreStats(start time.Time, st **RestoreStats, err *error) {
	var files, bytes int64
	if *st != nil {
		files, bytes = (*st).Files, (*st).Bytes
	}
	t.emitRestore(start, files, bytes, *err)
}

// scrubEvent is the event of a finished scrub.
func scrubEvent(r *ScrubReport) Event {
	ev := Event{Kind: EventScrubClean, Severity: SevInfo, Seconds: r.Seconds, Counts: map[string]int64{
		"packs": r.Packs, "shards": r.Shards, "bytes": r.Bytes,
		"missing": r.Missing.Found, "corrupt": r.Corrupt.Found, "misplaced": r.Misplaced.Found,
		"orphaned": r.Orphaned.Found, "stale_temp": r.StaleTemp.Found, "errors": r.Errors,
		"repaired":         r.Missing.Repaired + r.Corrupt.Repaired + r.Misplaced.Repaired + r.Orphaned.Repaired + r.StaleTemp.Repaired,
		"unrepaired":       r.Unrepaired(),
		"packs_below_full": r.StillBelowFull, "packs_unreadable": r.Unreadable,
	}}
	found := r.Unrepaired() + ev.Counts["repaired"]
	switch {
	case r.Repair:
		ev.Kind = EventRepairFinished
		if found > 0 {
			ev.Severity = SevNotice
		}
		if r.Unrepaired() > 0 {
			ev.Severity = SevError
		}
	case found > 0:
		ev.Kind, ev.Severity = EventScrubDamage, SevError
	}
	if r.Unreadable > 0 {
		ev.Severity = SevCritical
	}
	return ev
}

// emitShredded emits one EventTenantShredded per tenant ID in ids, named
// from entries where known.
func (e *Engine) emitShredded(ids []string, entries []*tenantEntry) {
	for _, id := range ids {
		ev := Event{Kind: EventTenantShredded, Severity: SevNotice, TenantID: id}
		for _, te := range entries {
			if hex.EncodeToString(te.rec.ID[:]) == id {
				ev.Tenant = te.meta.Name
			}
		}
		e.emit(ev)
	}
}

// emitSweep emits the events of a sweep: one per tenant shredded (named
// from due), then the sweep's counts.
func (e *Engine) emitSweep(rep *ShredReport, due []*tenantEntry, kept int, err error) {
	e.emitShredded(rep.Shredded, due)
	ev := Event{Kind: EventSweepFinished, Severity: SevInfo,
		Counts: map[string]int64{"shredded": int64(len(rep.Shredded)), "kept": int64(kept)}}
	if len(rep.Shredded) > 0 || kept > 0 {
		ev.Severity = SevNotice
	}
	if err != nil {
		ev.Severity, ev.Reason = SevError, failureReason(err)
	}
	e.emit(ev)
}

// auditEvent is the event of a verification of the audit chain.
func auditEvent(rep *AuditVerifyReport, err error) Event {
	ev := Event{Kind: EventAuditVerified, Severity: SevInfo}
	if rep != nil {
		ev.Counts = map[string]int64{"entries": int64(rep.Entries), "problems": int64(len(rep.Problems))}
	}
	if err != nil {
		ev.Kind, ev.Severity, ev.Reason = EventAuditFailed, SevCritical, failureReason(err)
	}
	return ev
}

// ID returns the repository's ID (hex), as the report and alerts name it.
func (e *Engine) ID() string { return e.conf().Repository }
