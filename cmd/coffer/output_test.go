package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestJSONOutput checks that --json output of every listing command parses
// as one JSON value with the expected shape, and that the text mode is not
// JSON (so the flag is what switches it).
func TestJSONOutput(t *testing.T) {
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("alpha\n"))
	writeFile(t, filepath.Join(src, "sub", "b.txt"), bytes.Repeat([]byte("beta\n"), 1000))

	// backup --json: one snapshot object.
	var snap struct {
		ID    string   `json:"id"`
		Paths []string `json:"paths"`
		Tags  []string `json:"tags"`
		Stats struct {
			Files int64 `json:"total_files_processed"`
		} `json:"summary"`
	}
	res := r.must(t, nil, "--json", "backup", src, "--tag", "t1")
	decodeJSON(t, res, &snap)
	if len(snap.ID) != 32 || snap.Stats.Files != 2 || !slices.Equal(snap.Tags, []string{"t1"}) || len(snap.Paths) != 1 {
		t.Errorf("backup --json: %+v\n%s", snap, res)
	}
	var stdinSnap struct {
		ID    string   `json:"id"`
		Paths []string `json:"paths"`
	}
	res = r.must(t, strings.NewReader("from stdin\n"), "--json", "backup", "--stdin", "--stdin-filename", "in.txt")
	decodeJSON(t, res, &stdinSnap)
	if len(stdinSnap.ID) != 32 || !slices.Equal(stdinSnap.Paths, []string{"/in.txt"}) {
		t.Errorf("backup --stdin --json: %+v\n%s", stdinSnap, res)
	}

	var tenants []struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		State string `json:"state"`
	}
	res = r.must(t, nil, "--json", "tenant", "list")
	decodeJSON(t, res, &tenants)
	if len(tenants) != 1 || tenants[0].Name != "acme" || tenants[0].State != "active" || len(tenants[0].ID) != 32 {
		t.Errorf("tenant list --json: %+v\n%s", tenants, res)
	}

	var snaps []struct {
		ID string `json:"id"`
	}
	res = r.must(t, nil, "--json", "snapshots")
	decodeJSON(t, res, &snaps)
	if len(snaps) != 2 || snaps[0].ID != snap.ID || snaps[1].ID != stdinSnap.ID {
		t.Errorf("snapshots --json: %+v, want %s then %s\n%s", snaps, snap.ID, stdinSnap.ID, res)
	}

	var entries []struct {
		Path string `json:"path"`
		Type string `json:"type"`
		Size uint64 `json:"size"`
	}
	res = r.must(t, nil, "--json", "ls", snap.ID[:8])
	decodeJSON(t, res, &entries)
	want := filepath.ToSlash(filepath.Join(src, "sub", "b.txt"))
	found := false
	for _, e := range entries {
		if e.Path == want {
			found = e.Type == "file" && e.Size == 5000
		}
	}
	if !found {
		t.Errorf("ls --json has no file %s of 5000 bytes:\n%s", want, res)
	}

	var rep struct {
		Tenants   int      `json:"tenants"`
		Snapshots int      `json:"snapshots"`
		Packs     int      `json:"packs"`
		Problems  []string `json:"problems"`
	}
	res = r.must(t, nil, "--json", "check", "--read-data")
	decodeJSON(t, res, &rep)
	if rep.Tenants != 1 || rep.Packs == 0 || len(rep.Problems) != 0 {
		t.Errorf("check --json: %+v\n%s", rep, res)
	}

	// A tenant with no snapshots lists [] rather than null.
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "create", "empty")
	res = mustCoffer(t, nil, "--repo", r.dir, "--tenant", "empty", "--json", "snapshots")
	if strings.TrimSpace(res.stdout) != "[]" {
		t.Errorf("snapshots --json of a tenant without snapshots: %q, want []", res.stdout)
	}

	// Without --json, the same commands print text.
	for _, a := range [][]string{{"tenant", "list"}, {"snapshots"}, {"ls", "latest"}, {"check"}} {
		res := r.must(t, nil, a...)
		if json.Valid([]byte(res.stdout)) {
			t.Errorf("%s without --json printed JSON:\n%s", a, res)
		}
	}
}

// TestInitKeyFileAndLayout checks init: the master key file has mode 0600,
// a warning says to keep it elsewhere, and the default layout is 6 drive
// folders under REPO/drives over racks r1..r3.
func TestInitKeyFileAndLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	res := mustCoffer(t, nil, "--repo", dir, "init")
	key := filepath.Join(dir, "master.key")
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatalf("init did not write %s: %v", key, err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", key, fi.Mode().Perm())
	}
	if !strings.Contains(res.stderr, "warning") || !strings.Contains(res.stderr, key) || !strings.Contains(res.stderr, "production") {
		t.Errorf("init does not warn to keep the key elsewhere in production:\n%s", res)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "drives"))
	if err != nil {
		t.Fatal(err)
	}
	var drives []string
	for _, e := range entries {
		if e.IsDir() {
			drives = append(drives, e.Name())
		}
	}
	if len(drives) != 6 {
		t.Errorf("REPO/drives holds %d folders %v, want 6", len(drives), drives)
	}

	// The racks, through --json on a second repository.
	dir2 := filepath.Join(t.TempDir(), "repo")
	res = mustCoffer(t, nil, "--repo", dir2, "--json", "init")
	var ir struct {
		MasterKeyFile string
		Drives        []struct {
			Rack string `json:"rack"`
			Path string `json:"path"`
		}
	}
	decodeJSON(t, res, &ir)
	racks := map[string]int{}
	for _, d := range ir.Drives {
		racks[d.Rack]++
		if filepath.Dir(d.Path) != filepath.Join(dir2, "drives") {
			t.Errorf("drive %s is not in %s/drives", d.Path, dir2)
		}
	}
	if len(ir.Drives) != 6 || racks["r1"] != 2 || racks["r2"] != 2 || racks["r3"] != 2 {
		t.Errorf("init --json drives: %+v, want 2 in each of r1, r2, r3", ir.Drives)
	}
	if !strings.Contains(res.stderr, "warning") {
		t.Errorf("init --json does not warn about the key:\n%s", res)
	}

	// A key file given by --master-key-file is written there with mode
	// 0600, not in REPO.
	dir3 := filepath.Join(t.TempDir(), "repo")
	key3 := filepath.Join(t.TempDir(), "elsewhere.key")
	res = mustCoffer(t, nil, "--repo", dir3, "--master-key-file", key3, "init")
	if fi, err := os.Stat(key3); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("--master-key-file: %v, mode %v, want 0600", err, fi)
	}
	if _, err := os.Stat(filepath.Join(dir3, "master.key")); err == nil {
		t.Errorf("init wrote REPO/master.key although --master-key-file was given")
	}
	if !strings.Contains(res.stderr, key3) {
		t.Errorf("the warning does not name %s:\n%s", key3, res)
	}
	mustCoffer(t, nil, "--repo", dir3, "--master-key-file", key3, "tenant", "list")
	// Without the key file the repository does not open.
	if r := coffer(t, nil, "--repo", dir3, "tenant", "list"); r.code != exitWrongKey {
		t.Errorf("without --master-key-file: exit %d, want %d:\n%s", r.code, exitWrongKey, r)
	}

	// init on an existing repository fails and leaves the key alone.
	before, _ := os.ReadFile(key)
	res = coffer(t, nil, "--repo", dir, "init")
	if res.code == exitOK {
		t.Errorf("second init succeeded:\n%s", res)
	} else {
		checkErrorLine(t, res)
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
		t.Errorf("second init changed the master key file")
	}
	mustCoffer(t, nil, "--repo", dir, "tenant", "list")
}
