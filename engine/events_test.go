package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// eventLog collects the events of an engine.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(ev Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

// take returns the events since the last take.
func (l *eventLog) take() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	evs := l.evs
	l.evs = nil
	return evs
}

func kinds(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Kind)
	}
	return out
}

// TestEvents runs each action that emits events and checks what it
// emitted: kinds, severities, names, counts, and that no event holds a
// file name or host.
func TestEvents(t *testing.T) {
	const marker = "ev-secret-marker-5521"
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	log := &eventLog{}
	e, err := Open(dir, Options{Events: log.add})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close() }()
	src := filepath.Join(t.TempDir(), marker)
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, marker), itRandBytes(1, 300<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateTenant(ctx, "acme", TenantOptions{}); err != nil {
		t.Fatal(err)
	}
	var all []Event
	step := func(name string, want []string, check func(evs []Event)) {
		t.Helper()
		evs := log.take()
		all = append(all, evs...)
		if got := kinds(evs); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: events %v, want %v", name, got, want)
			return
		}
		if check != nil {
			check(evs)
		}
	}
	one := func(evs []Event, sev Severity, tenant string) Event {
		t.Helper()
		ev := evs[0]
		if ev.Severity != sev || ev.Tenant != tenant || ev.Time.IsZero() {
			t.Errorf("%s: severity %v tenant %q time %v, want %v %q", ev.Kind, ev.Severity, ev.Tenant, ev.Time, sev, tenant)
		}
		return ev
	}

	tn, err := e.OpenTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	s, err := tn.Backup(ctx, []string{src}, BackupOptions{Host: marker, Tags: []string{marker}})
	if err != nil {
		t.Fatal(err)
	}
	step("backup", []string{EventBackupFinished}, func(evs []Event) {
		ev := one(evs, SevInfo, "acme")
		if ev.Counts["bytes"] != 300<<10 || ev.Counts["chunks_added"] == 0 || ev.TenantID != tn.ID() {
			t.Errorf("backup event %+v", ev)
		}
	})
	if _, err := tn.Restore(ctx, s, t.TempDir(), RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	step("restore", []string{EventRestoreFinished}, func(evs []Event) {
		if ev := one(evs, SevInfo, "acme"); ev.Counts["bytes"] != 300<<10 {
			t.Errorf("restore event %+v", ev)
		}
	})

	// Quota: at 95 % a backup warns; at 100 % it is refused.
	rep, err := e.Report(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stored := rep.Tenants[0].StoredBytes
	for _, tc := range []struct {
		quota int64
		want  []string
		sev   Severity
	}{
		{stored * 100 / 95, []string{EventBackupFinished, EventTenantQuota}, SevWarning},
		{stored, []string{EventBackupQuota}, SevWarning},
	} {
		q := tc.quota
		if _, err := e.UpdateTenant(ctx, "acme", TenantUpdate{Quota: &q}); err != nil {
			t.Fatal(err)
		}
		log.take()
		tn, err = e.OpenTenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		_, err = tn.Backup(ctx, []string{src}, BackupOptions{Host: marker})
		if (err != nil) != (tc.want[0] == EventBackupQuota) || (err != nil && !errors.Is(err, ErrQuotaExceeded)) {
			t.Fatalf("backup with quota %d of %d stored: %v", q, stored, err)
		}
		step(fmt.Sprintf("quota %d", q), tc.want, func(evs []Event) {
			ev := evs[len(evs)-1]
			if ev.Severity != tc.sev || ev.Tenant != "acme" {
				t.Errorf("%+v", ev)
			}
			if ev.Kind == EventTenantQuota && ev.Counts["percent"] < QuotaWarnPercent {
				t.Errorf("quota event %+v", ev)
			}
			if ev.Kind == EventBackupQuota && ev.Reason != "tenant quota exceeded" {
				t.Errorf("quota refusal reason %q", ev.Reason)
			}
		})
	}

	if _, err := e.LockTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	step("lock", []string{EventTenantLocked}, func(evs []Event) { one(evs, SevNotice, "acme") })
	if _, err := e.UnlockTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	step("unlock", []string{EventTenantUnlocked}, func(evs []Event) { one(evs, SevNotice, "acme") })

	if _, err := e.Scrub(ctx, ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	step("clean scrub", []string{EventScrubClean}, func(evs []Event) { one(evs, SevInfo, "") })
	d := e.Drives()[0]
	if _, err := e.FailDrive(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	step("fail drive", []string{EventDriveFailed}, func(evs []Event) {
		if ev := one(evs, SevWarning, ""); ev.Drive != d.ID {
			t.Errorf("drive event %+v", ev)
		}
	})
	if _, err := e.Scrub(ctx, ScrubOptions{}); !errors.Is(err, ErrCheckFailed) {
		t.Fatalf("scrub with a failed drive: %v", err)
	}
	step("scrub", []string{EventScrubDamage}, func(evs []Event) {
		if ev := one(evs, SevError, ""); ev.Counts["missing"] == 0 || ev.Counts["unrepaired"] == 0 || ev.Seconds <= 0 {
			t.Errorf("scrub event %+v", ev)
		}
	})
	if _, _, err := e.AddDrive(ctx, d.Rack, filepath.Join(dir, "drives", "new")); err != nil {
		t.Fatal(err)
	}
	log.take()
	if _, err := e.Scrub(ctx, ScrubOptions{Repair: true}); err != nil {
		t.Fatal(err)
	}
	step("repair", []string{EventRepairFinished}, func(evs []Event) {
		if ev := one(evs, SevNotice, ""); ev.Counts["repaired"] == 0 || ev.Counts["unrepaired"] != 0 {
			t.Errorf("repair event %+v", ev)
		}
	})
	if _, err := e.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
	step("verify", []string{EventAuditVerified}, func(evs []Event) {
		if ev := one(evs, SevInfo, ""); ev.Counts["entries"] == 0 {
			t.Errorf("audit event %+v", ev)
		}
	})

	if _, err := e.ShredTenant(ctx, "acme", "acme"); err != nil {
		t.Fatal(err)
	}
	step("shred", []string{EventTenantShredded}, func(evs []Event) { one(evs, SevNotice, "acme") })
	if _, err := e.SweepTenants(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	step("sweep", []string{EventSweepFinished}, func(evs []Event) { one(evs, SevInfo, "") })

	// A drive folder gone when the repository opens.
	e.Close()
	if err := os.RemoveAll(e.Drives()[1].Path); err != nil {
		t.Fatal(err)
	}
	e, err = Open(dir, Options{Events: log.add})
	if err != nil {
		t.Fatal(err)
	}
	step("open", []string{EventDriveUnreachable}, func(evs []Event) {
		if ev := one(evs, SevError, ""); ev.Drive != e.Drives()[1].ID {
			t.Errorf("unreachable event %+v", ev)
		}
	})

	for _, ev := range all {
		if s := fmt.Sprintf("%+v", ev); strings.Contains(s, marker) {
			t.Errorf("event holds a file name or host: %s", s)
		}
	}
}

// TestEventsFailures: a failed backup and a failed restore.
func TestEventsFailures(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	log := &eventLog{}
	e, err := Open(dir, Options{Events: log.add})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	tn := itTenant(t, e, "acme")
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o644)
	s := itBackup(t, tn, src)
	log.take()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := tn.Backup(cctx, []string{src}, BackupOptions{}); err == nil {
		t.Fatal("a cancelled backup succeeded")
	}
	if _, err := tn.Restore(cctx, s, t.TempDir(), RestoreOptions{}); err == nil {
		t.Fatal("a cancelled restore succeeded")
	}
	evs := log.take()
	if got := strings.Join(kinds(evs), " "); got != EventBackupFailed+" "+EventRestoreFailed {
		t.Fatalf("events %s", got)
	}
	for _, ev := range evs {
		if ev.Reason != "interrupted" || ev.Severity != SevWarning || ev.Tenant != "acme" {
			t.Errorf("%+v", ev)
		}
	}
}
