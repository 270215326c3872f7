package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoFlow is scripts/demo.sh in-process, so the demo cannot rot: init,
// create a tenant, back up a folder twice (the second time nothing is read
// again), lose two drives in different racks, restore, compare, and check
// reports the lost drives as damage.
func TestDemoFlow(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	repoDir := filepath.Join(base, "repo")
	target := filepath.Join(base, "restore")

	// A small project: text, a binary spanning several chunks, nested
	// folders, an empty file and folder, a symlink, an executable, and the
	// folders the demo excludes.
	big := make([]byte, 3<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "README.md"), []byte("# demo\n"))
	writeFile(t, filepath.Join(src, "data", "big.bin"), big)
	writeFile(t, filepath.Join(src, "data", "copy.bin"), big) // deduplicated
	writeFile(t, filepath.Join(src, "pkg", "a", "b", "c.go"), bytes.Repeat([]byte("package c\n"), 3000))
	writeFile(t, filepath.Join(src, "empty.txt"), nil)
	writeFile(t, filepath.Join(src, ".git", "HEAD"), []byte("ref: refs/heads/main\n"))
	writeFile(t, filepath.Join(src, "bin", "coffer"), []byte("binary"))
	if err := os.Mkdir(filepath.Join(src, "emptydir"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("README.md", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho hi\n"))
	if err := os.Chmod(filepath.Join(src, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}

	t.Setenv("COFFER_REPO", repoDir)
	t.Setenv("COFFER_TENANT", "demo")

	mustCoffer(t, nil, "init")
	mustCoffer(t, nil, "tenant", "create", "demo", "--contact", "ops@example.com")
	if res := mustCoffer(t, nil, "tenant", "list"); !strings.Contains(res.stdout, "demo") {
		t.Errorf("tenant list does not show the tenant:\n%s", res)
	}

	type summary struct {
		ID    string `json:"id"`
		Stats struct {
			Files     int64 `json:"total_files_processed"`
			Unchanged int64 `json:"files_unmodified"`
			Blobs     int64 `json:"data_blobs_added"`
			Added     int64 `json:"data_added"`
		} `json:"summary"`
	}
	var first, second summary
	backup := []string{"backup", src, "--exclude", ".git", "--exclude", "bin", "--tag", "demo"}
	decodeJSON(t, mustCoffer(t, nil, cat([]string{"--json"}, backup...)...), &first)
	if first.Stats.Files != 6 {
		t.Errorf("first backup processed %d files, want 6 (excludes not applied?)", first.Stats.Files)
	}
	if first.Stats.Added >= 2*int64(len(big)) {
		t.Errorf("first backup added %d bytes: the copy of big.bin was not deduplicated", first.Stats.Added)
	}
	decodeJSON(t, mustCoffer(t, nil, cat([]string{"--json"}, backup...)...), &second)
	// Only tree blobs may be new: folders above the source (such as /tmp) are
	// recorded in the snapshot, and other processes change their mtimes.
	if second.Stats.Unchanged != second.Stats.Files || second.Stats.Added > 4096 {
		t.Errorf("second backup: %d of %d files unchanged, %d bytes added; want all unchanged and nothing added",
			second.Stats.Unchanged, second.Stats.Files, second.Stats.Added)
	}
	if res := mustCoffer(t, nil, "snapshots"); !strings.Contains(res.stdout, "2 snapshots") {
		t.Errorf("snapshots:\n%s", res)
	}

	// Lose two drives (d1 in rack r1 and d3 in rack r2).
	for _, d := range []string{"d1", "d3"} {
		if err := os.RemoveAll(filepath.Join(repoDir, "drives", d)); err != nil {
			t.Fatal(err)
		}
	}
	res := mustCoffer(t, nil, "restore", "latest", "--target", target)
	if !strings.Contains(res.stderr, "warning") {
		t.Errorf("restore with two drives gone does not warn about them:\n%s", res)
	}
	compareTrees(t, src, filepath.Join(target, src), ".git", "bin")

	// The restore verified every chunk; check reports the lost drives.
	res = coffer(t, nil, "check")
	if res.code != exitDamage {
		t.Errorf("check with two drives gone: exit %d, want %d:\n%s", res.code, exitDamage, res)
	}
	var rep struct {
		Problems []string `json:"problems"`
	}
	res = coffer(t, nil, "--json", "check")
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil || len(rep.Problems) == 0 || res.code != exitDamage {
		t.Errorf("check --json with two drives gone: %v, %d problems:\n%s", err, len(rep.Problems), res)
	}
}
