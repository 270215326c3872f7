package main

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

	"coffer/engine"
)

// reportCoffer runs one command line like run does, with the report command
// added to the root when root.go does not register it (yet).
func reportCoffer(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	root := newRootCmd(g)
	registered := false
	for _, c := range root.Commands() {
		if c.Name() == "report" {
			registered = true
		}
	}
	if !registered {
		c := newReportCmd(g)
		root.AddCommand(c)
		addExitHelp(c)
	}
	root.SetArgs(args)
	root.SetIn(g.stdin)
	root.SetOut(&out)
	root.SetErr(&errb)
	code := exitOK
	if err := root.ExecuteContext(context.Background()); err != nil {
		code = exitCode(err)
		fmt.Fprintln(&errb, "coffer: "+message(err))
	}
	return result{args: args, code: code, stdout: out.String(), stderr: errb.String()}
}

var cliReportAt = time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)

const cliReportSecret = "qz-secret-name-4417"

// reportRepo makes a repository with three tenants: "fresh" backed up 2 days
// before cliReportAt, "old" 8 days before, "empty" never (and without a
// contact). Backups go through the engine so their times can be chosen.
func reportRepo(t *testing.T) *testRepo {
	t.Helper()
	r := newTestRepo(t, "")
	e, err := engine.Open(r.dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), cliReportSecret)
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, cliReportSecret+".txt"), bytes.Repeat([]byte("compressible report data\n"), 20000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, contact string
		ago           time.Duration // 0 = no backup
	}{
		{"fresh", "fresh@customer.example", 2 * 24 * time.Hour},
		{"old", "old@customer.example", 8 * 24 * time.Hour},
		{"empty", "", 0},
		{"gone", "gone@customer.example", 24 * time.Hour},
	} {
		if _, err := e.CreateTenant(ctx, tc.name, engine.TenantOptions{Contact: tc.contact}); err != nil {
			t.Fatal(err)
		}
		if tc.ago == 0 {
			continue
		}
		tn, err := e.OpenTenant(ctx, tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tn.Backup(ctx, []string{src}, engine.BackupOptions{Host: cliReportSecret, Time: cliReportAt.Add(-tc.ago)}); err != nil {
			t.Fatal(err)
		}
	}
	// A locked tenant is reported too, with its deletion date.
	if _, err := e.LockTenant(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReportCLI(t *testing.T) {
	r := reportRepo(t)
	at := cliReportAt.Format(time.RFC3339)

	// Human output: a table and one line per flagged tenant.
	h := reportCoffer(t, "--repo", r.dir, "report", "--at", at)
	if h.code != exitOK {
		t.Fatalf("report failed:\n%s", h)
	}
	for _, want := range []string{"NAME", "fresh", "locked", "empty: " + engine.ReportFlag, "old: " + engine.ReportFlag} {
		if !strings.Contains(h.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, h.stdout)
		}
	}
	if strings.Contains(h.stdout, "fresh: "+engine.ReportFlag) || strings.Contains(h.stdout, "gone: "+engine.ReportFlag) || strings.Contains(h.stdout, cliReportSecret) {
		t.Errorf("output flags fresh or holds snapshot names:\n%s", h.stdout)
	}

	// --json parses and flags exactly the tenants without a recent backup.
	j := reportCoffer(t, "--repo", r.dir, "report", "--at", at, "--json")
	if j.code != exitOK {
		t.Fatalf("report --json failed:\n%s", j)
	}
	var rep engine.Report
	if err := json.Unmarshal([]byte(j.stdout), &rep); err != nil {
		t.Fatalf("report --json: %v\n%s", err, j.stdout)
	}
	flagged := map[string]bool{}
	for _, tr := range rep.Tenants {
		flagged[tr.Name] = tr.NotRun
	}
	if len(flagged) != 4 || flagged["fresh"] || flagged["gone"] || !flagged["old"] || !flagged["empty"] {
		t.Errorf("flagged %v, want old and empty", flagged)
	}
	for _, tr := range rep.Tenants {
		if (tr.Name == "gone") != (tr.State == engine.StateLocked && tr.DeleteAfter != nil) {
			t.Errorf("%s: state %s, delete after %v", tr.Name, tr.State, tr.DeleteAfter)
		}
	}
	if !rep.At.Equal(cliReportAt) || rep.Totals.Flagged != 2 {
		t.Errorf("report at %s with %d flagged", rep.At, rep.Totals.Flagged)
	}
	if strings.Contains(j.stdout, cliReportSecret) {
		t.Errorf("JSON holds snapshot names:\n%s", j.stdout)
	}
	var raw map[string]any
	_ = json.Unmarshal([]byte(j.stdout), &raw)
	if raw["audit_head"] == nil || rep.AuditHead == nil || rep.AuditHead.MAC == "" {
		t.Errorf("JSON has no audit chain head: %v", raw["audit_head"])
	}
}

func TestReportCLIOut(t *testing.T) {
	r := reportRepo(t)
	out := filepath.Join(t.TempDir(), "mail")
	res := reportCoffer(t, "--repo", r.dir, "report", "--at", "2026-03-15T14:00:00+02:00", "--out", out, "--from", "reports@provider.example")
	if res.code != exitOK {
		t.Fatalf("report --out failed:\n%s", res)
	}
	for _, tc := range []struct {
		name, to string
		flagged  bool
	}{
		{"fresh", "fresh@customer.example", false},
		{"old", "old@customer.example", true},
		{"empty", "", true},
	} {
		b, err := os.ReadFile(filepath.Join(out, tc.name+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(b), "\n") != strings.Count(string(b), "\r\n") {
			t.Errorf("%s: lines do not all end in CRLF", tc.name)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.to == "" {
			if v, ok := msg.Header["To"]; ok {
				t.Errorf("%s: To %q without a contact", tc.name, v)
			}
		} else if a, err := mail.ParseAddress(msg.Header.Get("To")); err != nil || a.Address != tc.to {
			t.Errorf("%s: To %q, want %s", tc.name, msg.Header.Get("To"), tc.to)
		}
		want := "Coffer weekly backup report for " + tc.name + ", week ending 2026-03-15"
		if tc.flagged {
			want += " " + engine.ReportFlag
		}
		if got := msg.Header.Get("Subject"); got != want {
			t.Errorf("%s: subject %q, want %q", tc.name, got, want)
		}
		if d, err := msg.Header.Date(); err != nil || !d.Equal(cliReportAt) {
			t.Errorf("%s: Date %q (%v), want %s", tc.name, msg.Header.Get("Date"), err, cliReportAt)
		}
		if msg.Header.Get("From") != "reports@provider.example" {
			t.Errorf("%s: From %q", tc.name, msg.Header.Get("From"))
		}
		if strings.Contains(string(b), cliReportSecret) {
			t.Errorf("%s: message holds snapshot names", tc.name)
		}
	}
	sum, err := os.ReadFile(filepath.Join(out, engine.OperatorSummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(sum), "empty: no contact") || !strings.Contains(string(sum), "old: "+engine.ReportFlag) {
		t.Errorf("operator summary:\n%s", sum)
	}
	if !strings.Contains(res.stdout, "wrote 4 messages") {
		t.Errorf("output does not say what was written:\n%s", res.stdout)
	}
}

func TestReportCLIUsage(t *testing.T) {
	r := reportRepo(t)
	for _, a := range [][]string{
		{"report", "--at", "yesterday"},
		{"report", "--at", "2026-03-15"},
		{"report", "--at", "2026-03-15T12:00:00Z", "--from", "not an address"},
		{"report", "extra"},
	} {
		res := reportCoffer(t, append([]string{"--repo", r.dir}, a...)...)
		if res.code != exitUsage {
			t.Errorf("want exit %d:\n%s", exitUsage, res)
		}
		checkErrorLine(t, res)
	}
	// A bad --at is a usage error even before the repository is looked at.
	if res := reportCoffer(t, "report", "--at", "soon"); res.code != exitUsage {
		t.Errorf("want exit %d:\n%s", exitUsage, res)
	}
}
