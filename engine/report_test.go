package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/index"
)

// reportAt is the end of the week in the report tests.
var reportAt = time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)

// reportSecret is written into every file name, path and host name of the
// report tests' backups: no report output may contain it.
const reportSecret = "zq-secret-path-7731"

// reportSource writes a folder of compressible files and returns its path.
func reportSource(t *testing.T, seed int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), reportSecret)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		p := filepath.Join(dir, fmt.Sprintf("%s-%d.txt", reportSecret, i))
		if err := os.WriteFile(p, reportContent(seed, i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// reportContent is file i of the source folder of the given seed: about
// 300 KiB of text that compresses well.
func reportContent(seed, i int) []byte {
	var b bytes.Buffer
	for j := range 4000 {
		fmt.Fprintf(&b, "line %d of file %d, seed %d: the quick brown fox jumps over the lazy dog\n", j, i, seed)
	}
	return b.Bytes()
}

// reportSourceBytes is the logical size of reportSource(t, seed).
func reportSourceBytes(seed int) int64 {
	var n int64
	for i := range 3 {
		n += int64(len(reportContent(seed, i)))
	}
	return n
}

// reportBackup backs up a new source folder with the snapshot time at.
func reportBackup(t *testing.T, tn *Tenant, seed int, at time.Time) *Snapshot {
	t.Helper()
	s, err := tn.Backup(context.Background(), []string{reportSource(t, seed)}, BackupOptions{Host: reportSecret + "-host", Tags: []string{reportSecret}, Time: at})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	return s
}

func reportCreate(t *testing.T, e *Engine, name string, o TenantOptions) *Tenant {
	t.Helper()
	if _, err := e.CreateTenant(context.Background(), name, o); err != nil {
		t.Fatal(err)
	}
	tn, err := e.OpenTenant(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

func reportFind(t *testing.T, r *Report, name string) *TenantReport {
	t.Helper()
	for i := range r.Tenants {
		if r.Tenants[i].Name == name {
			return &r.Tenants[i]
		}
	}
	t.Fatalf("tenant %q not in the report", name)
	return nil
}

// reportFixture makes the four tenants of the test: one backed up 2
// days before reportAt, one 8 days before (and once after reportAt, which
// must not count), one never, and one locked with a recent backup.
func reportFixture(t *testing.T) *Engine {
	t.Helper()
	e := itOpen(t, itInit(t, InitOptions{}))
	recent := reportCreate(t, e, "recent", TenantOptions{Contact: "Ops Team <ops@recent.example>", Quota: 10 << 20})
	reportBackup(t, recent, 1, reportAt.Add(-5*24*time.Hour))
	reportBackup(t, recent, 2, reportAt.Add(-2*24*time.Hour))
	stale := reportCreate(t, e, "stale", TenantOptions{Contact: "it@stale.example"})
	reportBackup(t, stale, 3, reportAt.Add(-8*24*time.Hour))
	reportBackup(t, stale, 4, reportAt.Add(time.Hour)) // after the report time
	reportCreate(t, e, "never", TenantOptions{})
	locked := reportCreate(t, e, "locked", TenantOptions{Contact: "boss@locked.example"})
	reportBackup(t, locked, 5, reportAt.Add(-24*time.Hour))
	if _, err := e.LockTenant(context.Background(), "locked"); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestReportFlagsTenantsWithoutBackupInLastWeek(t *testing.T) {
	e := reportFixture(t)
	r, err := e.Report(context.Background(), reportAt)
	if err != nil {
		t.Fatal(err)
	}
	if !r.At.Equal(reportAt) || !r.PeriodStart.Equal(reportAt.Add(-7*24*time.Hour)) {
		t.Errorf("period %s..%s, want %s..%s", r.PeriodStart, r.At, reportAt.Add(-7*24*time.Hour), reportAt)
	}
	var flagged []string
	for _, tr := range r.Flagged() {
		flagged = append(flagged, tr.Name)
	}
	if got := strings.Join(flagged, ","); got != "never,stale" {
		t.Errorf("flagged %q, want never,stale", got)
	}
	for _, tr := range r.Tenants {
		if tr.NotRun != (tr.Flag == ReportFlag) {
			t.Errorf("%s: NotRun %v but Flag %q", tr.Name, tr.NotRun, tr.Flag)
		}
	}

	rec := reportFind(t, r, "recent")
	if rec.Snapshots != 2 || rec.LastBackup == nil || !rec.LastBackup.Equal(reportAt.Add(-2*24*time.Hour)) {
		t.Errorf("recent: %d snapshots, last %v", rec.Snapshots, rec.LastBackup)
	}
	st := reportFind(t, r, "stale")
	if st.Snapshots != 1 || st.LastBackup == nil || !st.LastBackup.Equal(reportAt.Add(-8*24*time.Hour)) {
		t.Errorf("stale: %d snapshots, last %v; the snapshot after the report time must not count", st.Snapshots, st.LastBackup)
	}
	nv := reportFind(t, r, "never")
	if nv.Snapshots != 0 || nv.LastBackup != nil || nv.StoredBytes != 0 || nv.PhysicalBytes != 0 || nv.Contact != "" {
		t.Errorf("never: %+v", nv)
	}
	lk := reportFind(t, r, "locked")
	if lk.State != StateLocked || lk.NotRun || lk.Snapshots != 1 {
		t.Errorf("locked: state %s, flagged %v, %d snapshots", lk.State, lk.NotRun, lk.Snapshots)
	}
	if lk.LockedAt == nil || lk.DeleteAfter == nil || !lk.DeleteAfter.Equal(lk.LockedAt.Add(DefaultGracePeriod)) {
		t.Errorf("locked: locked at %v, delete after %v, want lock time + %s", lk.LockedAt, lk.DeleteAfter, DefaultGracePeriod)
	}
	if rec.DeleteAfter != nil || rec.LockedAt != nil {
		t.Errorf("recent: an active tenant has no deletion date")
	}
	if r.Totals.Tenants != 4 || r.Totals.Flagged != 2 || r.Totals.Locked != 1 || r.Totals.Active != 3 || r.Totals.NoContact != 1 || r.Totals.Snapshots != 4 {
		t.Errorf("totals %+v", r.Totals)
	}
	seq, mac, err := e.AuditHead()
	if err != nil {
		t.Fatal(err)
	}
	if r.AuditHead == nil || r.AuditHead.Seq != seq || r.AuditHead.MAC != mac || mac == "" {
		t.Errorf("audit head %+v, engine says seq %d mac %q", r.AuditHead, seq, mac)
	}
}

// TestReportBoundary documents the rule: a backup counts for the week when
// at-7d < its time <= at. One exactly 7 days old does not count; one at the
// report time itself does; one after it is not seen at all.
func TestReportBoundary(t *testing.T) {
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := reportCreate(t, e, "edge", TenantOptions{})
	t0 := reportAt.Add(-3 * 24 * time.Hour)
	reportBackup(t, tn, 1, t0)
	for _, c := range []struct {
		name      string
		at        time.Time
		flagged   bool
		snapshots int
	}{
		{"exactly 7 days after", t0.Add(ReportPeriod), true, 1},
		{"one second less than 7 days after", t0.Add(ReportPeriod - time.Second), false, 1},
		{"at the backup time", t0, false, 1},
		{"one second before the backup", t0.Add(-time.Second), true, 0},
	} {
		r, err := e.Report(context.Background(), c.at)
		if err != nil {
			t.Fatal(err)
		}
		tr := reportFind(t, r, "edge")
		if tr.NotRun != c.flagged || tr.Snapshots != c.snapshots {
			t.Errorf("%s: flagged %v with %d snapshots, want %v with %d", c.name, tr.NotRun, tr.Snapshots, c.flagged, c.snapshots)
		}
	}
}

func TestReportSizes(t *testing.T) {
	e := reportFixture(t)
	r, err := e.Report(context.Background(), reportAt)
	if err != nil {
		t.Fatal(err)
	}
	// The seed of each tenant's latest backup at reportAt (reportFixture).
	latestSeed := map[string]int{"recent": 2, "stale": 3, "locked": 5}
	var tot ReportTotals
	for _, tr := range r.Tenants {
		tot.add(&tr)
		te, err := e.findTenant(tr.Name)
		if err != nil {
			t.Fatal(err)
		}
		id := index.TenantID(te.rec.ID)
		var stored, packBytes, physical int64
		if err := e.db.Blobs(id, func(_ index.BlobID, l index.BlobLoc) error { stored += int64(l.Length); return nil }); err != nil {
			t.Fatal(err)
		}
		var k, m int64
		if err := e.db.Packs(id, func(p index.PackRec) error {
			packBytes += int64(p.DataLen)
			physical += int64(p.ShardLen) * int64(p.K+p.M)
			k, m = int64(p.K), int64(p.M)
			// Each shard holds ceil(DataLen/K) bytes, perhaps padded.
			if minShard := (int64(p.DataLen) + k - 1) / k; int64(p.ShardLen) < minShard {
				t.Errorf("%s: pack shard %d < %d", tr.Name, p.ShardLen, minShard)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if tr.StoredBytes != stored || tr.PackBytes != packBytes || tr.PhysicalBytes != physical {
			t.Errorf("%s: stored %d packs %d physical %d, index says %d %d %d", tr.Name, tr.StoredBytes, tr.PackBytes, tr.PhysicalBytes, stored, packBytes, physical)
		}
		if tr.Snapshots == 0 {
			continue
		}
		if want := reportSourceBytes(latestSeed[tr.Name]); tr.LatestLogicalBytes != want {
			t.Errorf("%s: latest logical size %d, want %d", tr.Name, tr.LatestLogicalBytes, want)
		}
		if tr.StoredBytes <= 0 || tr.StoredBytes > tr.PackBytes {
			t.Errorf("%s: stored %d, in packs %d", tr.Name, tr.StoredBytes, tr.PackBytes)
		}
		// The text compresses well: even all of a tenant's stored bytes are
		// less than the logical size of its latest backup.
		if tr.StoredBytes >= tr.LatestLogicalBytes {
			t.Errorf("%s: stored %d >= logical %d for compressible data", tr.Name, tr.StoredBytes, tr.LatestLogicalBytes)
		}
		// physical ≈ pack bytes × (k+m)/k: at least that, at most one
		// block of padding per shard more.
		if lo := packBytes * (k + m) / k; physical < lo || physical > lo+(k+m)*tr.Packs*int64(DefaultBlockSize) {
			t.Errorf("%s: physical %d, pack bytes %d × (%d+%d)/%d = %d", tr.Name, physical, packBytes, k, m, k, lo)
		}
	}
	if tot != r.Totals {
		t.Errorf("totals %+v, sum of tenants %+v", r.Totals, tot)
	}
	rec := reportFind(t, r, "recent")
	if rec.QuotaUsedPercent == nil || *rec.QuotaUsedPercent != float64(rec.StoredBytes)*100/float64(10<<20) {
		t.Errorf("recent: quota use %v for %d of %d bytes", rec.QuotaUsedPercent, rec.StoredBytes, 10<<20)
	}
	if reportFind(t, r, "stale").QuotaUsedPercent != nil {
		t.Errorf("stale has no quota, but a quota use")
	}
}

func TestReportMessages(t *testing.T) {
	e := reportFixture(t)
	r, err := e.Report(context.Background(), reportAt)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "out")
	written, err := r.WriteMessages(dir, "Backup Desk <backup@provider.example>")
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 5 {
		t.Errorf("wrote %q, want 4 messages and the summary", written)
	}
	wantTo := map[string]string{"recent": "ops@recent.example", "stale": "it@stale.example", "locked": "boss@locked.example", "never": ""}
	for name, to := range wantTo {
		raw, err := os.ReadFile(filepath.Join(dir, name+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) || !bytes.HasSuffix(raw, []byte("\r\n")) {
			t.Errorf("%s: not CRLF line endings", name)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		tr := reportFind(t, r, name)
		if to == "" {
			if _, ok := msg.Header["To"]; ok {
				t.Errorf("%s: has a To: header without a contact", name)
			}
		} else {
			addrs, err := msg.Header.AddressList("To")
			if err != nil || len(addrs) != 1 || addrs[0].Address != to {
				t.Errorf("%s: To %v (%v), want %s", name, addrs, err, to)
			}
		}
		subj := msg.Header.Get("Subject")
		want := "Coffer weekly backup report for " + name + ", week ending 2026-03-15"
		if tr.NotRun {
			want += " *** BACKUPS NOT RUN IN LAST WEEK ***"
		}
		if subj != want {
			t.Errorf("%s: subject %q, want %q", name, subj, want)
		}
		if d, err := msg.Header.Date(); err != nil || !d.Equal(reportAt) {
			t.Errorf("%s: date %v (%v)", name, d, err)
		}
		from, err := mail.ParseAddress(msg.Header.Get("From"))
		if err != nil || from.Address != "backup@provider.example" {
			t.Errorf("%s: from %v (%v)", name, from, err)
		}
		if id := msg.Header.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@provider.example>") {
			t.Errorf("%s: Message-ID %q", name, id)
		}
		if msg.Header.Get("Mime-Version") != "1.0" || msg.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("%s: MIME headers %v", name, msg.Header)
		}
		if strings.Contains(string(raw), reportSecret) {
			t.Errorf("%s: message holds a path, file or host name of a snapshot", name)
		}
		body := string(raw)
		if (name == "locked") != strings.Contains(body, "Data will be deleted on") {
			t.Errorf("%s: deletion date shown only for the locked tenant:\n%s", name, body)
		}
		if tr.NotRun != strings.Contains(body[strings.Index(body, "\r\n\r\n"):], ReportFlag) {
			t.Errorf("%s: flag in body does not match flagged=%v", name, tr.NotRun)
		}
	}
	sum, err := os.ReadFile(filepath.Join(dir, OperatorSummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	s := string(sum)
	for _, want := range []string{"never: " + ReportFlag, "stale: " + ReportFlag, "never: no contact", fmt.Sprintf("Audit chain head: seq %d, mac %s", r.AuditHead.Seq, r.AuditHead.MAC)} {
		if !strings.Contains(s, want) {
			t.Errorf("operator summary lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "recent: "+ReportFlag) || strings.Contains(s, "locked: "+ReportFlag) || strings.Contains(s, reportSecret) {
		t.Errorf("operator summary flags a backed-up tenant or holds snapshot names:\n%s", s)
	}
	js, _ := json.Marshal(r)
	if strings.Contains(string(js), reportSecret) {
		t.Errorf("report JSON holds a path, file or host name of a snapshot")
	}
	// A rerun replaces the files and leaves no temporary files behind.
	if _, err := r.WriteMessages(dir, ""); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 5 {
		t.Errorf("after a rerun the folder holds %d files, want 5", len(ents))
	}
}

// TestReportMessageHeaderInjection checks that a contact holding a line break
// cannot add headers: it gets no To: header.
func TestReportMessageHeaderInjection(t *testing.T) {
	r := &Report{At: reportAt, PeriodStart: reportAt.Add(-ReportPeriod), Tenants: []TenantReport{
		{Name: "evil", ID: "00", State: StateActive, Contact: "a@b.example\r\nBcc: all@victim.example", NotRun: true, Flag: ReportFlag},
	}}
	from, _ := mail.ParseAddress("coffer@host.example")
	raw := r.message(&r.Tenants[0], from, "<x@host.example>")
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := msg.Header["Bcc"]; ok {
		t.Errorf("contact injected a header:\n%s", raw)
	}
	if _, ok := msg.Header["To"]; ok {
		t.Errorf("an invalid contact became a To: header:\n%s", raw)
	}
	if !strings.Contains(r.OperatorSummary(), "evil: contact") {
		t.Errorf("operator summary does not note the invalid contact")
	}
}

func TestReportCancelled(t *testing.T) {
	e := reportFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Report(ctx, reportAt); err == nil {
		t.Errorf("Report with a cancelled context succeeded")
	}
	if _, err := e.Report(context.Background(), time.Time{}); err == nil {
		t.Errorf("Report at the zero time succeeded")
	}
}

// reportDocReport is the report of the example message printed in
// docs/design.md.
func reportDocReport() *Report {
	at := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	last := at.Add(-9 * 24 * time.Hour)
	pct := 12.5
	r := &Report{
		Repository: "ab000000000000000000000000000000", At: at, PeriodStart: at.Add(-ReportPeriod), Generated: at,
		Tenants: []TenantReport{{
			Name: "acme", ID: "0123456789abcdef0123456789abcdef", State: StateActive, Contact: "ops@acme.example",
			Quota: 100 << 30, QuotaUsedPercent: &pct, Snapshots: 12, LastBackup: &last,
			LatestLogicalBytes: 40 << 30, StoredBytes: 25 << 29, Blobs: 210000, PackBytes: 26 << 29, Packs: 830,
			PhysicalBytes: 39 << 29, NotRun: true, Flag: ReportFlag,
		}},
	}
	r.Totals.add(&r.Tenants[0])
	return r
}

// TestReportDocExample checks that the example message in
// docs/design.md is what the code writes.
func TestReportDocExample(t *testing.T) {
	r := reportDocReport()
	from, _ := mail.ParseAddress("coffer@backup1.provider.example")
	got := r.message(&r.Tenants[0], from, "<coffer-report.20260315T120000Z.00112233aabbccdd@backup1.provider.example>")
	if os.Getenv("COFFER_PRINT_DOC_EXAMPLES") != "" {
		t.Logf("\n%s", bytes.ReplaceAll(got, []byte("\r\n"), []byte("\n")))
	}
	want := docExample(t, "report-message")
	if g := bytes.ReplaceAll(got, []byte("\r\n"), []byte("\n")); !bytes.Equal(g, want) {
		t.Errorf("docs/design.md example differs from the code's message:\n%s", g)
	}
}
