package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLockedTenantExit13 checks that every data command of a locked tenant
// fails with exit 13 and a sentence saying the tenant is locked, and that
// unlock gives access back.
func TestLockedTenantExit13(t *testing.T) {
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), []byte("content"))
	r.must(t, nil, "backup", src)
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "lock", "acme")
	for _, cmd := range [][]string{
		{"backup", src},
		{"backup", "--stdin", "--stdin-filename", "x"},
		{"snapshots"},
		{"ls", "latest"},
		{"restore", "latest", "--target", t.TempDir()},
		{"dump", "latest", filepath.Join(src, "f")},
	} {
		res := r.run(t, strings.NewReader("data"), cmd...)
		if res.code != exitTenantLocked || !strings.Contains(res.stderr, "locked") {
			t.Errorf("locked tenant, %v: want exit 13 saying locked:\n%s", cmd, res)
		}
		checkErrorLine(t, res)
	}
	list := mustCoffer(t, nil, "--repo", r.dir, "tenant", "list")
	if !strings.Contains(list.stdout, "locked") {
		t.Errorf("tenant list does not show the lock:\n%s", list)
	}
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "unlock", "acme")
	res := r.must(t, nil, "dump", "latest", filepath.Join(src, "f"))
	if res.stdout != "content" {
		t.Errorf("dump after unlock: %q", res.stdout)
	}
}

func TestShredSweepRotateCLI(t *testing.T) {
	r := newTestRepo(t, "")
	for _, n := range []string{"a", "b"} {
		mustCoffer(t, nil, "--repo", r.dir, "tenant", "create", n)
	}
	escrow := filepath.Join(t.TempDir(), "escrow.key")
	t.Setenv("COFFER_MASTER_KEY_ESCROW", escrow)
	res := coffer(t, nil, "--repo", r.dir, "tenant", "shred", "a")
	if res.code != exitUsage {
		t.Errorf("shred without --confirm:\n%s", res)
	}
	res = coffer(t, nil, "--repo", r.dir, "tenant", "shred", "a", "--confirm", "b")
	if res.code != exitUsage {
		t.Errorf("shred with the wrong --confirm:\n%s", res)
	}
	res = mustCoffer(t, nil, "--repo", r.dir, "tenant", "shred", "a", "--confirm", "a")
	if !strings.Contains(res.stdout, "epoch 1 was destroyed") || !strings.Contains(res.stderr, "destroy every other copy of master key epoch 1") {
		t.Errorf("shred output:\n%s", res)
	}
	if b, err := os.ReadFile(escrow); err != nil || !strings.Contains(string(b), "epoch: 2") {
		t.Errorf("escrow copy not written with epoch 2: %v", err)
	}
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "lock", "b")
	// --at is a clock like any other: the records show b locked just now.
	res = mustCoffer(t, nil, "--repo", r.dir, "tenant", "sweep", "--at", "2999-01-01T00:00:00Z")
	if strings.Contains(res.stdout, "shredded tenant") || !strings.Contains(res.stdout, "nothing to do") ||
		!strings.Contains(res.stderr, "was kept: the clock (2999-01-01T00:00:00Z) says its grace period is over, but the records show it locked for") {
		t.Errorf("sweep far in the future must keep a tenant locked just now, saying why:\n%s", res)
	}
	res = coffer(t, nil, "--repo", r.dir, "tenant", "sweep", "--at", "yesterday")
	if res.code != exitUsage {
		t.Errorf("sweep --at yesterday:\n%s", res)
	}
	res = mustCoffer(t, nil, "--repo", r.dir, "key", "rotate", "--json")
	if !strings.Contains(res.stdout, `"new_epoch": 3`) {
		t.Errorf("key rotate --json:\n%s", res)
	}
	mustCoffer(t, nil, "--repo", r.dir, "check")
}
