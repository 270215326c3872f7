package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/engine"
)

// auditCLI runs "coffer ARGS" like run does, with the audit command added to
// the root if root.go does not register it yet.
func auditCLI(t *testing.T, a ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	root := newRootCmd(g)
	if c, _, err := root.Find([]string{"audit"}); err != nil || c == root {
		root.AddCommand(newAuditCmd(g))
	}
	root.SetArgs(a)
	root.SetOut(&out)
	root.SetErr(&errb)
	code := exitOK
	if err := root.ExecuteContext(context.Background()); err != nil {
		code = exitCode(err)
		errb.WriteString("coffer: " + message(err) + "\n")
	}
	return result{args: a, code: code, stdout: out.String(), stderr: errb.String()}
}

func TestAuditCLI(t *testing.T) {
	const name = "zq-audit-cli-tenant-marker"
	r := newTestRepo(t, name)

	list := auditCLI(t, "--repo", r.dir, "audit")
	if list.code != exitOK {
		t.Fatalf("audit failed:\n%s", list)
	}
	lines := strings.Split(strings.TrimSpace(list.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "SEQ") {
		t.Fatalf("want a header and 2 entries:\n%s", list)
	}
	f1, f2 := strings.Fields(lines[1]), strings.Fields(lines[2])
	if len(f1) < 6 || f1[0] != "1" || f1[3] != "init" || f1[4] != "-" || f1[5] != "ok" {
		t.Errorf("init line %q", lines[1])
	}
	if len(f2) < 6 || f2[0] != "2" || f2[3] != "tenant.create" || len(f2[4]) != 8 || f2[5] != "ok" {
		t.Errorf("tenant.create line %q", lines[2])
	}
	if strings.Contains(list.stdout, name) {
		t.Errorf("the audit listing names the tenant:\n%s", list)
	}

	js := auditCLI(t, "--repo", r.dir, "--json", "audit")
	var entries []engine.AuditEntry
	if err := json.Unmarshal([]byte(js.stdout), &entries); err != nil || js.code != exitOK {
		t.Fatalf("--json output is not a JSON array (%v):\n%s", err, js)
	}
	if len(entries) != 2 || entries[1].Action != "tenant.create" || len(entries[1].Tenant) != 32 || !strings.HasPrefix(entries[1].Tenant, f2[4]) {
		t.Fatalf("entries %+v", entries)
	}

	ok := auditCLI(t, "--repo", r.dir, "audit", "--verify", "--anchor", "2:"+entries[1].MAC)
	if ok.code != exitOK || !strings.Contains(ok.stdout, "verified: 2 entries") {
		t.Fatalf("verify failed:\n%s", ok)
	}
	okJSON := auditCLI(t, "--repo", r.dir, "--json", "audit", "--verify")
	var rep engine.AuditVerifyReport
	if err := json.Unmarshal([]byte(okJSON.stdout), &rep); err != nil || rep.Entries != 2 || rep.HeadSeq != 2 {
		t.Fatalf("verify --json (%v):\n%s", err, okJSON)
	}

	// Usage errors.
	for _, a := range [][]string{
		{"audit", "--anchor", "2:" + entries[1].MAC},
		{"audit", "--verify", "--anchor", "two:abc"},
		{"audit", "extra"},
	} {
		res := auditCLI(t, append([]string{"--repo", r.dir}, a...)...)
		if res.code != exitUsage {
			t.Errorf("want exit 2:\n%s", res)
		}
		checkErrorLine(t, res)
	}

	// An anchor from an earlier report that the log no longer matches.
	bad := auditCLI(t, "--repo", r.dir, "audit", "--verify", "--anchor", "2:"+strings.Repeat("0", 64))
	if bad.code != exitDamage {
		t.Fatalf("want exit 14:\n%s", bad)
	}
	checkErrorLine(t, bad)

	// Someone rewrites the head anchored on every drive: exit 14.
	heads, _ := filepath.Glob(filepath.Join(r.dir, "drives", "*", "r", "audit-head"))
	if len(heads) == 0 {
		t.Fatal("no audit head on the drives")
	}
	forged := binary.LittleEndian.AppendUint64([]byte("CFR1\x05\x00"), 5)
	forged = append(forged, make([]byte, 32)...)
	for _, p := range heads {
		if err := os.WriteFile(p, forged, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dmg := auditCLI(t, "--repo", r.dir, "audit", "--verify")
	if dmg.code != exitDamage || !strings.Contains(dmg.stdout, "problem: ") {
		t.Fatalf("want exit 14 with the problem listed:\n%s", dmg)
	}
	checkErrorLine(t, dmg)
}
