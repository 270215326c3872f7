package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"coffer/engine"
)

// fgCoffer runs one command line like coffer, registering forget and prune
// if the root command does not have them yet.
func fgCoffer(t testing.TB, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	root := newRootCmd(g)
	for _, mk := range []func(*globals) *cobra.Command{newForgetCmd, newPruneCmd} {
		c := mk(g)
		if found, _, err := root.Find([]string{c.Name()}); err != nil || found == root {
			addExitHelp(c)
			root.AddCommand(c)
		}
	}
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	code := exitOK
	if err := root.ExecuteContext(context.Background()); err != nil {
		code = exitCode(err)
		fmt.Fprintln(&errb, "coffer: "+message(err))
	}
	return result{args: args, code: code, stdout: out.String(), stderr: errb.String()}
}

func (r *testRepo) fg(t testing.TB, a ...string) result {
	t.Helper()
	return fgCoffer(t, r.args(a...)...)
}

func (r *testRepo) fgMust(t testing.TB, a ...string) result {
	t.Helper()
	res := r.fg(t, a...)
	if res.code != exitOK {
		t.Fatalf("command failed:\n%s", res)
	}
	return res
}

// fgSnapshots returns the tenant's snapshots through the CLI.
func fgSnapshots(t testing.TB, r *testRepo) []engine.Snapshot {
	t.Helper()
	var ss []engine.Snapshot
	if err := json.Unmarshal([]byte(r.must(t, nil, "snapshots", "--json").stdout), &ss); err != nil {
		t.Fatal(err)
	}
	return ss
}

func TestForgetPruneCLIUsage(t *testing.T) {
	r := newTestRepo(t, "acme")
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"forget"}, exitUsage},
		{[]string{"forget", "--dry-run"}, exitUsage},
		{[]string{"forget", "0123456789abcdef", "--keep-last", "1"}, exitUsage},
		{[]string{"forget", "--keep-within", "3w"}, exitUsage},
		{[]string{"forget", "--keep-daily", "-1"}, exitUsage},
		{[]string{"forget", "--keep-daily", "many"}, exitUsage},
		{[]string{"forget", "abc"}, exitUsage},
		{[]string{"forget", "0123456789abcdef"}, exitError},
		{[]string{"prune", "--max-unused", "200"}, exitUsage},
		{[]string{"prune", "extra"}, exitUsage},
	} {
		res := r.fg(t, c.args...)
		if res.code != c.want {
			t.Errorf("%v: exit %d, want %d:\n%s", c.args, res.code, c.want, res)
		}
		checkErrorLine(t, res)
	}
	if res := r.fg(t, "forget", "--keep-daily", "unlimited", "--dry-run"); res.code != exitOK {
		t.Errorf("--keep-daily unlimited:\n%s", res)
	}
}

func TestForgetPruneCLI(t *testing.T) {
	r := newTestRepo(t, "acme")
	root := t.TempDir()
	src1, src2 := filepath.Join(root, "one"), filepath.Join(root, "two")
	big := make([]byte, 900<<10)
	for i := range big {
		big[i] = byte(i*131 + i/977)
	}
	writeFile(t, filepath.Join(src1, "big"), big)
	writeFile(t, filepath.Join(src2, "small"), []byte("kept content"))
	r.must(t, nil, "backup", src1)
	r.must(t, nil, "backup", src2)
	r.must(t, nil, "backup", src2) // same group as the previous one
	ss := fgSnapshots(t, r)
	if len(ss) != 3 {
		t.Fatalf("%d snapshots", len(ss))
	}

	// Dry run of a policy: JSON with groups and reasons, nothing removed.
	res := r.fgMust(t, "forget", "--keep-last", "1", "--dry-run", "--json")
	var rep engine.ForgetReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("forget --json: %v\n%s", err, res)
	}
	if !rep.DryRun || len(rep.Groups) != 2 || len(rep.Removed) != 1 || rep.Removed[0].ID != ss[1].ID {
		t.Errorf("dry run report: %+v", rep)
	}
	for _, g := range rep.Groups {
		for _, k := range g.Keep {
			if !strings.Contains(strings.Join(k.Reasons, ","), "last snapshot") {
				t.Errorf("kept %s for %v", k.ID[:8], k.Reasons)
			}
		}
	}
	res = r.fgMust(t, "forget", "--keep-last", "1", "--dry-run")
	if !strings.Contains(res.stdout, "would forget 1 snapshot") || !strings.Contains(res.stdout, "last snapshot") {
		t.Errorf("dry run output:\n%s", res)
	}
	if n := len(fgSnapshots(t, r)); n != 3 {
		t.Fatalf("dry run removed snapshots: %d left", n)
	}

	// Forget the first snapshot by prefix, then prune: its big file goes.
	shards := len(shardFiles(t, r.dir))
	res = r.fgMust(t, "forget", ss[0].ID[:8], "--prune")
	if !strings.Contains(res.stdout, "forgot 1 snapshot") || !strings.Contains(res.stdout, "freed") {
		t.Errorf("forget --prune output:\n%s", res)
	}
	if after := len(shardFiles(t, r.dir)); after >= shards {
		t.Errorf("shard files %d → %d: prune removed nothing", shards, after)
	}
	left := fgSnapshots(t, r)
	if len(left) != 2 || left[0].ID != ss[1].ID {
		t.Fatalf("after forget: %+v", left)
	}
	r.must(t, nil, "check", "--read-data")
	target := t.TempDir()
	r.must(t, nil, "restore", "latest", "--target", target)
	if b, err := os.ReadFile(filepath.Join(target, src2, "small")); err != nil || string(b) != "kept content" {
		t.Errorf("restore after prune: %q, %v", b, err)
	}

	// Operator prune of all tenants, as JSON: nothing left to free.
	res = fgCoffer(t, "--repo", r.dir, "prune", "--json")
	if res.code != exitOK {
		t.Fatalf("operator prune:\n%s", res)
	}
	var prep engine.PruneReport
	if err := json.Unmarshal([]byte(res.stdout), &prep); err != nil || prep.Tenants != 1 || prep.PacksDeleted != 0 {
		t.Errorf("operator prune report: %+v, %v", prep, err)
	}
	res = r.fgMust(t, "prune", "--dry-run", "--max-unused", "0%")
	if !strings.Contains(res.stdout, "would prune (dry run) tenant acme") {
		t.Errorf("prune --dry-run output:\n%s", res)
	}

	// A locked tenant: exit 13 for forget and its prune.
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "lock", "acme")
	for _, a := range [][]string{{"forget", "latest"}, {"prune"}} {
		res := r.fg(t, a...)
		if res.code != exitTenantLocked {
			t.Errorf("%v on a locked tenant: exit %d, want 13:\n%s", a, res.code, res)
		}
		checkErrorLine(t, res)
	}
	if n := len(fgSnapshots2(t, r)); n != 2 {
		t.Errorf("locked tenant lost snapshots: %d", n)
	}
}

// fgSnapshots2 counts snapshots of a locked tenant through the engine.
func fgSnapshots2(t testing.TB, r *testRepo) []*engine.Snapshot {
	t.Helper()
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "unlock", r.tenant)
	ss := fgSnapshots(t, r)
	out := make([]*engine.Snapshot, len(ss))
	for i := range ss {
		out[i] = &ss[i]
	}
	return out
}
