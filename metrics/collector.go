package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"coffer/engine"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The metrics read from the engine and the state file when scraped.
var (
	descDriveFailed    = desc("coffer_drive_failed", "1 when the drive is out of service: marked failed, or unreachable.", "drive", "rack")
	descDriveReachable = desc("coffer_drive_reachable", "1 when the drive answers (its listing works).", "drive", "rack")
	descDriveUsed      = desc("coffer_drive_used_bytes", "Bytes of the files on the drive.", "drive", "rack")
	descDriveFree      = desc("coffer_drive_free_bytes", "Bytes free on a folder drive's file system (absent when unknown).", "drive", "rack")
	descDriveShards    = desc("coffer_drive_shards", "Shard files on the drive.", "drive", "rack")
	descPacks          = desc("coffer_packs", "Packs in the index.")
	descPacksBelow     = desc("coffer_packs_below_full_redundancy", "Packs with a shard never written or on a drive out of service.")
	descTenants        = desc("coffer_tenants", "Tenants by state.", "state")
	descTenantLast     = desc("coffer_tenant_last_snapshot_timestamp_seconds", "Time of the tenant's newest snapshot (absent without one).", "tenant")
	descTenantStored   = desc("coffer_tenant_stored_bytes", "Bytes the tenant stores: deduplicated, compressed and sealed, before parity.", "tenant")
	descTenantQuota    = desc("coffer_tenant_quota_bytes", "The tenant's quota (absent without one).", "tenant")
	descTenantOverdue  = desc("coffer_tenant_backup_overdue", "1 when the tenant has no snapshot in the last seven days (the weekly report's flag).", "tenant")
	descAuditEntries   = desc("coffer_audit_chain_entries", "Entries in the audit chain.")
	descAuditVerified  = desc("coffer_audit_last_verification_timestamp_seconds", "When the audit chain was last verified.")
	descAuditOK        = desc("coffer_audit_last_verification_success", "1 when the last verification of the audit chain found it intact.")
	descScrubLast      = desc("coffer_scrub_last_run_timestamp_seconds", "When the last scrub ended.")
	descScrubDuration  = desc("coffer_scrub_last_duration_seconds", "How long the last scrub took.")
	descScrubProblems  = desc("coffer_scrub_last_problems", "Problems the last scrub found, by kind.", "kind")
	descScrubRepaired  = desc("coffer_scrub_last_repaired", "Problems the last scrub repaired (with --repair).")
	descScrubLeft      = desc("coffer_scrub_last_unrepaired", "Problems the last scrub left unrepaired.")
	descScrubUnread    = desc("coffer_scrub_last_unreadable_packs", "Packs the last scrub found with fewer than k good shards.")
	descPending        = desc("coffer_notify_pending_messages", "Messages waiting in the outbox.")
	descCollectOK      = desc("coffer_collect_success", "1 when the engine's numbers could be read at the last scrape.")
)

// engineCollector collects the numbers read from the engine and the state.
type engineCollector Metrics

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDriveFailed, descDriveReachable, descDriveUsed, descDriveFree, descDriveShards,
		descPacks, descPacksBelow, descTenants, descTenantLast, descTenantStored, descTenantQuota, descTenantOverdue,
		descAuditEntries, descAuditVerified, descAuditOK, descScrubLast, descScrubDuration, descScrubProblems,
		descScrubRepaired, descScrubLeft, descScrubUnread, descPending, descCollectOK} {
		ch <- d
	}
}

// snapshot is what one read of the engine gave.
type snapshot struct {
	drives *engine.DriveReport
	report *engine.Report
	audit  uint64
	err    error
}

// read returns the engine's numbers, read at most once per MinInterval.
func (m *Metrics) read() (*snapshot, State) {
	m.stateMu.Lock()
	st := m.state
	m.stateMu.Unlock()
	m.cacheMu.Lock()
	defer m.cacheMu.Unlock()
	now := m.now()
	if m.cache == nil || now.Sub(m.at) >= m.o.MinInterval {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s := &snapshot{}
		var errs []error
		var err error
		s.drives, err = m.src.DriveReport(ctx)
		errs = append(errs, err)
		s.report, err = m.src.Report(ctx, now)
		errs = append(errs, err)
		s.audit, _, err = m.src.AuditHead()
		errs = append(errs, err)
		s.err = errors.Join(errs...)
		m.cache, m.at = s, now
	}
	return m.cache, st
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(c)
	s, st := m.read()
	gauge(ch, descCollectOK, b2f(s.err == nil))
	if dr := s.drives; dr != nil {
		for _, d := range dr.Drives {
			id, rack := labelSafe(d.ID), labelSafe(d.Rack)
			gauge(ch, descDriveFailed, b2f(d.State != "active" || !d.Available), id, rack)
			gauge(ch, descDriveReachable, b2f(d.Available), id, rack)
			gauge(ch, descDriveUsed, float64(d.UsedBytes), id, rack)
			gauge(ch, descDriveShards, float64(d.Shards), id, rack)
			if d.FreeBytes > 0 {
				gauge(ch, descDriveFree, float64(d.FreeBytes), id, rack)
			}
		}
		gauge(ch, descPacks, float64(dr.Packs))
		gauge(ch, descPacksBelow, float64(dr.Degraded))
	}
	if r := s.report; r != nil {
		states := map[string]int{engine.StateActive: 0, engine.StateLocked: 0}
		for _, t := range r.Tenants {
			states[t.State]++
			name := labelSafe(t.Name)
			if t.LastBackup != nil {
				gauge(ch, descTenantLast, float64(t.LastBackup.Unix()), name)
			}
			gauge(ch, descTenantStored, float64(t.StoredBytes), name)
			if t.Quota > 0 {
				gauge(ch, descTenantQuota, float64(t.Quota), name)
			}
			gauge(ch, descTenantOverdue, b2f(t.NotRun), name)
		}
		for state, n := range states {
			gauge(ch, descTenants, float64(n), labelSafe(state))
		}
	}
	if s.err == nil || s.audit > 0 {
		gauge(ch, descAuditEntries, float64(s.audit))
	}
	if a := st.Audit; a != nil {
		gauge(ch, descAuditVerified, float64(a.Time.Unix()))
		gauge(ch, descAuditOK, b2f(a.OK))
	}
	if sc := st.Scrub; sc != nil {
		gauge(ch, descScrubLast, float64(sc.Time.Unix()))
		gauge(ch, descScrubDuration, sc.Seconds)
		for _, k := range scrubKinds {
			gauge(ch, descScrubProblems, float64(sc.Counts[k]), k)
		}
		gauge(ch, descScrubRepaired, float64(sc.Counts["repaired"]))
		gauge(ch, descScrubLeft, float64(sc.Counts["unrepaired"]))
		gauge(ch, descScrubUnread, float64(sc.Counts["packs_unreadable"]))
	}
	if m.o.Pending != nil {
		gauge(ch, descPending, float64(m.o.Pending()))
	}
}
