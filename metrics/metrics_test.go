package metrics

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"coffer/engine"
)

// fakeSource stands in for the engine.
type fakeSource struct {
	calls int
	err   error
}

func (f *fakeSource) DriveReport(context.Context) (*engine.DriveReport, error) {
	f.calls++
	return &engine.DriveReport{Packs: 7, Degraded: 2, Drives: []engine.DriveStatus{
		{DriveInfo: engine.DriveInfo{ID: "d1", Rack: "r1", State: "active"}, Available: true, Shards: 5, UsedBytes: 500, FreeBytes: 1000},
		{DriveInfo: engine.DriveInfo{ID: "d2", Rack: "r1", State: "active"}, Available: false},
		{DriveInfo: engine.DriveInfo{ID: "d3", Rack: "r2", State: "failed"}, Available: true},
	}}, nil
}

func (f *fakeSource) Report(_ context.Context, at time.Time) (*engine.Report, error) {
	last := at.Add(-time.Hour)
	return &engine.Report{At: at, Tenants: []engine.TenantReport{
		{Name: "acme", State: engine.StateActive, LastBackup: &last, StoredBytes: 123, Quota: 1000},
		{Name: "idle", State: engine.StateLocked, NotRun: true},
	}}, f.err
}

func (f *fakeSource) AuditHead() (uint64, string, error) { return 42, "ab", nil }

func testMetrics(t *testing.T, src Source) *Metrics {
	t.Helper()
	m, err := New(src, Options{StatePath: filepath.Join(t.TempDir(), "state.json"), Pending: func() int { return 3 }})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// events feeds one event of each kind that the metrics count.
func events(m *Metrics) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, ev := range []engine.Event{
		{Kind: engine.EventBackupFinished, Seconds: 3, Counts: map[string]int64{"bytes": 1000, "bytes_added": 400, "bytes_stored": 300, "chunks_added": 2}},
		{Kind: engine.EventBackupFailed, Severity: engine.SevError, Reason: "drive full"},
		{Kind: engine.EventBackupQuota, Severity: engine.SevWarning, Reason: "tenant quota exceeded"},
		{Kind: engine.EventRestoreFinished, Seconds: 2, Counts: map[string]int64{"bytes": 1000}},
		{Kind: engine.EventRestoreFailed, Severity: engine.SevError, Reason: "interrupted"},
		{Kind: engine.EventScrubDamage, Severity: engine.SevError, Time: at, Seconds: 9, Counts: map[string]int64{"missing": 4, "corrupt": 1, "unrepaired": 5}},
		{Kind: engine.EventAuditFailed, Severity: engine.SevCritical, Time: at, Counts: map[string]int64{"entries": 10, "problems": 1}},
	} {
		m.Observe(ev)
	}
	m.ObserveServer("conn.open", "remote", "x")
	m.ObserveServer("conn.open", "remote", "y")
	m.ObserveServer("conn.close", "remote", "x")
	m.ObserveServer("conn.refused", "remote", "z", "reason", "key")
	m.ObserveServer("conn.busy", "remote", "z")
}

// TestLint: every metric passes the client library's linter (and
// promtool check metrics, when installed).
func TestLint(t *testing.T) {
	m := testMetrics(t, &fakeSource{})
	events(m)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed: checked with the client library's linter only")
		return
	}
	var b bytes.Buffer
	if err := m.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &b
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func parse(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, b)
	}
	return fams
}

func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if got[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestValues(t *testing.T) {
	src := &fakeSource{}
	m := testMetrics(t, src)
	events(m)
	var b bytes.Buffer
	if err := m.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	fams := parse(t, b.Bytes())
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"coffer_drive_failed", []string{"drive", "d1"}, 0},
		{"coffer_drive_failed", []string{"drive", "d2"}, 1}, // unreachable
		{"coffer_drive_failed", []string{"drive", "d3"}, 1}, // marked failed
		{"coffer_drive_reachable", []string{"drive", "d2"}, 0},
		{"coffer_drive_used_bytes", []string{"drive", "d1", "rack", "r1"}, 500},
		{"coffer_drive_free_bytes", []string{"drive", "d1"}, 1000},
		{"coffer_drive_shards", []string{"drive", "d1"}, 5},
		{"coffer_packs", nil, 7},
		{"coffer_packs_below_full_redundancy", nil, 2},
		{"coffer_tenants", []string{"state", "locked"}, 1},
		{"coffer_tenant_stored_bytes", []string{"tenant", "acme"}, 123},
		{"coffer_tenant_quota_bytes", []string{"tenant", "acme"}, 1000},
		{"coffer_tenant_backup_overdue", []string{"tenant", "idle"}, 1},
		{"coffer_audit_chain_entries", nil, 42},
		{"coffer_audit_last_verification_success", nil, 0},
		{"coffer_scrub_last_problems", []string{"kind", "missing"}, 4},
		{"coffer_scrub_last_problems", []string{"kind", "corrupt"}, 1},
		{"coffer_scrub_last_unrepaired", nil, 5},
		{"coffer_scrub_last_duration_seconds", nil, 9},
		{"coffer_backups_total", nil, 1},
		{"coffer_backup_failures_total", []string{"reason", "drive full"}, 1},
		{"coffer_backup_failures_total", []string{"reason", "tenant quota exceeded"}, 1},
		{"coffer_backup_processed_bytes_total", nil, 1000},
		{"coffer_backup_deduplicated_bytes_total", nil, 600},
		{"coffer_backup_new_chunks_total", nil, 2},
		{"coffer_backup_duration_seconds", nil, 1},
		{"coffer_restores_total", nil, 1},
		{"coffer_restore_failures_total", []string{"reason", "interrupted"}, 1},
		{"coffer_remote_sessions_active", nil, 1},
		{"coffer_remote_sessions_total", nil, 2},
		{"coffer_remote_sessions_refused_total", []string{"reason", "key"}, 1},
		{"coffer_remote_sessions_refused_total", []string{"reason", "busy"}, 1},
		{"coffer_notify_pending_messages", nil, 3},
		{"coffer_collect_success", nil, 1},
	} {
		if v, ok := value(fams, tc.name, tc.labels...); !ok || v != tc.want {
			t.Errorf("%s%v = %v (%v), want %v", tc.name, tc.labels, v, ok, tc.want)
		}
	}
	if _, ok := value(fams, "coffer_tenant_last_snapshot_timestamp_seconds", "tenant", "idle"); ok {
		t.Error("a tenant without snapshots has a last snapshot time")
	}

	// The engine is read at most once per MinInterval.
	calls := src.calls
	m.WriteText(&bytes.Buffer{})
	if src.calls != calls {
		t.Error("a second scrape read the engine again")
	}

	// The state survives the process: a new Metrics on the same file
	// shows the last scrub.
	m2, err := New(src, Options{StatePath: m.o.StatePath})
	if err != nil {
		t.Fatal(err)
	}
	var b2 bytes.Buffer
	m2.WriteText(&b2)
	if v, ok := value(parse(t, b2.Bytes()), "coffer_scrub_last_problems", "kind", "missing"); !ok || v != 4 {
		t.Errorf("after a restart: %v %v", v, ok)
	}
}

func TestCollectError(t *testing.T) {
	m := testMetrics(t, &fakeSource{err: errors.New("index gone")})
	var b bytes.Buffer
	if err := m.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if v, ok := value(parse(t, b.Bytes()), "coffer_collect_success"); !ok || v != 0 {
		t.Errorf("coffer_collect_success = %v %v", v, ok)
	}
}

func TestHandlerToken(t *testing.T) {
	m := testMetrics(t, &fakeSource{})
	srv := httptest.NewServer(m.Handler("tok", func() error { return nil }))
	defer srv.Close()
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/metrics", "", 401},
		{"/metrics", "Bearer nope", 401},
		{"/healthz", "", 401},
		{"/metrics", "Bearer tok", 200},
		{"/healthz", "Bearer tok", 200},
	} {
		req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s with %q: %d, want %d", tc.path, tc.auth, resp.StatusCode, tc.want)
		}
	}
	sick := httptest.NewServer(m.Handler("", func() error { return errors.New("down") }))
	defer sick.Close()
	if resp, err := http.Get(sick.URL + "/healthz"); err != nil || resp.StatusCode != 503 {
		t.Errorf("unhealthy: %v %v", resp, err)
	}
}

func TestTextfile(t *testing.T) {
	m := testMetrics(t, &fakeSource{})
	p := filepath.Join(t.TempDir(), "coffer.prom")
	if err := m.WriteTextfile(p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := value(parse(t, b), "coffer_packs"); !ok || v != 7 {
		t.Errorf("textfile: %v %v", v, ok)
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestState(t *testing.T) {
	for name, in := range map[string]string{"not JSON": "{", "too large": strings.Repeat(" ", maxStateFile+1)} {
		if _, err := decodeState([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	p := filepath.Join(t.TempDir(), "s.json")
	if st, err := LoadState(p); err != nil || st.Scrub != nil {
		t.Fatalf("missing file: %+v %v", st, err)
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil { // as a power cut may leave it
		t.Fatal(err)
	}
	if st, err := LoadState(p); err != nil || st.Scrub != nil {
		t.Fatalf("empty file: %+v %v", st, err)
	}
	if err := Record(p, engine.Event{Kind: engine.EventRepairFinished, Counts: map[string]int64{"repaired": 3}}); err != nil {
		t.Fatal(err)
	}
	if err := Record(p, engine.Event{Kind: engine.EventBackupFinished}); err != nil {
		t.Fatal(err)
	}
	st, err := LoadState(p)
	if err != nil || st.Scrub == nil || !st.Scrub.Repair || st.Scrub.Counts["repaired"] != 3 {
		t.Fatalf("%+v %v", st, err)
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"scrub":{"time":"2026-03-01T12:00:00Z","counts":{"missing":3}},"audit":{"ok":true}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b)
		if err != nil {
			return
		}
		m, err := New(&fakeSource{}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		m.state = *st
		if err := m.WriteText(&bytes.Buffer{}); err != nil {
			t.Fatal(err)
		}
	})
}
