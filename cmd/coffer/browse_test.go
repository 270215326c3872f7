package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"coffer/engine"
)

// browseSetup backs up src, changes it (an added, a deleted and a changed
// file) and backs up again; it returns the two snapshot IDs.
func browseSetup(t *testing.T, r *testRepo, src string) (first, second string) {
	t.Helper()
	writeFile(t, filepath.Join(src, "keep.txt"), []byte("kept\n"))
	writeFile(t, filepath.Join(src, "gone.txt"), []byte("going\n"))
	writeFile(t, filepath.Join(src, "d", "changed.bin"), bytes.Repeat([]byte{1}, 200000))
	writeFile(t, filepath.Join(src, "d", "e", "deep.txt"), []byte("deep\n"))
	if err := os.Symlink("keep.txt", filepath.Join(src, "sym")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "keep.txt"), filepath.Join(src, "d", "hard")); err != nil {
		t.Fatal(err)
	}
	id := regexp.MustCompile(`snapshot (\S+) saved`)
	b1 := r.must(t, nil, "backup", src)
	if err := os.Remove(filepath.Join(src, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "added.txt"), []byte("new\n"))
	writeFile(t, filepath.Join(src, "d", "changed.bin"), bytes.Repeat([]byte{2}, 200000))
	b2 := r.must(t, nil, "backup", src)
	m1, m2 := id.FindStringSubmatch(b1.stdout), id.FindStringSubmatch(b2.stdout)
	if m1 == nil || m2 == nil {
		t.Fatalf("backup output: %s / %s", b1, b2)
	}
	return m1[1], m2[1]
}

// checkBrowse runs find, diff, stats and dump through run (local or
// remote) and checks their output against src.
func checkBrowse(t *testing.T, run func(a ...string) result, src, first, second string) {
	t.Helper()
	// find: keep.txt in both snapshots, gone.txt in the first only.
	f := run("find", "keep.txt", "gone.txt")
	if f.code != exitOK || strings.Count(f.stdout, src+"/keep.txt") != 2 || strings.Count(f.stdout, src+"/gone.txt") != 1 ||
		!strings.Contains(f.stdout, "3 matches in 2 of 2 snapshots") {
		t.Fatalf("find: %s", f)
	}
	var matches []engine.FindMatch
	fj := run("--json", "find", "--path", src+"/d/*", "--snapshot", second)
	if err := json.Unmarshal([]byte(fj.stdout), &matches); err != nil || len(matches) != 3 {
		t.Fatalf("find --json --path: %v %s", err, fj)
	}
	if matches[0].Path != src+"/d/changed.bin" || matches[0].Size != 200000 || !strings.HasPrefix(second, matches[0].Snapshot[:8]) {
		t.Fatalf("find match %+v", matches[0])
	}
	if bad := run("find", "["); bad.code != exitUsage {
		t.Fatalf("bad pattern: %s", bad)
	}
	// diff: + - M lines and a summary.
	d := run("diff", first, second)
	for _, l := range []string{"+ " + src + "/added.txt\n", "- " + src + "/gone.txt\n", "M " + src + "/d/changed.bin\n", "1 added (4 B), 1 removed (6 B), 1 changed"} {
		if !strings.Contains(d.stdout, l) {
			t.Fatalf("diff lacks %q: %s", l, d)
		}
	}
	if strings.Contains(d.stdout, "keep.txt") {
		t.Fatalf("diff lists an unchanged file: %s", d)
	}
	var dj struct {
		Changes []engine.DiffChange `json:"changes"`
		Summary engine.DiffStats    `json:"summary"`
	}
	if err := json.Unmarshal([]byte(run("--json", "diff", "--metadata", first, second).stdout), &dj); err != nil || dj.Summary.Added != 1 || dj.Summary.Metadata == 0 {
		t.Fatalf("diff --json: %v %+v", err, dj)
	}
	// stats --json.
	var st engine.SnapshotsStats
	sj := run("--json", "stats", second)
	if err := json.Unmarshal([]byte(sj.stdout), &st); err != nil || st.Files != 5 || st.RestoreBytes != 5+4+5+200000 || st.UniqueBytes != st.RestoreBytes || st.DedupRatio != 1 {
		t.Fatalf("stats --json: %v %s", err, sj)
	}
	if s := run("stats", "--mode", "raw-data"); s.code != exitOK || !strings.Contains(s.stdout, "dedup ratio:") {
		t.Fatalf("stats raw-data: %s", s)
	}
	// dump: a folder as tar extracts to the same files; a file as its content.
	tarOut := run("dump", second, src)
	if tarOut.code != exitOK {
		t.Fatalf("dump folder: %s", tarOut)
	}
	if _, err := exec.LookPath("tar"); err == nil {
		x := t.TempDir()
		cmd := exec.Command("tar", "-x", "-p", "--same-owner", "-f", "-", "-C", x)
		cmd.Stdin = strings.NewReader(tarOut.stdout)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tar -x: %v %s", err, out)
		}
		compareTrees(t, src, filepath.Join(x, filepath.Base(src)))
		var a, b os.FileInfo
		a, _ = os.Stat(filepath.Join(x, filepath.Base(src), "keep.txt"))
		b, _ = os.Stat(filepath.Join(x, filepath.Base(src), "d", "hard"))
		if a == nil || b == nil || !os.SameFile(a, b) {
			t.Errorf("the hard link is not one inode after tar -x")
		}
	}
	if z := run("dump", "--archive", "zip", second, src+"/d"); z.code != exitOK || !strings.HasPrefix(z.stdout, "PK") {
		t.Fatalf("dump zip: %s", z)
	}
	if c := run("dump", second, src+"/d/changed.bin"); c.stdout != string(bytes.Repeat([]byte{2}, 200000)) {
		t.Fatalf("dump file: %d bytes", len(c.stdout))
	}
	if bad := run("dump", "--archive", "rar", second, src); bad.code != exitUsage {
		t.Fatalf("bad archive: %s", bad)
	}
}

func TestBrowseCLI(t *testing.T) {
	r := newTestRepo(t, "alice")
	src := filepath.Join(t.TempDir(), "src")
	first, second := browseSetup(t, r, src)
	checkBrowse(t, func(a ...string) result { return r.run(t, nil, a...) }, src, first, second)

	// tag: audited, shown by snapshots.
	const marker = "clientmarker"
	tg := r.must(t, nil, "tag", first, second, "--add", marker+",x")
	if !strings.Contains(tg.stdout, "2 of 2 snapshots changed") {
		t.Fatalf("tag: %s", tg)
	}
	r.must(t, nil, "tag", first, "--remove", "x")
	r.must(t, nil, "tag", second, "--set", "")
	if s := r.must(t, nil, "snapshots"); strings.Count(s.stdout, marker) != 1 {
		t.Fatalf("snapshots after tag: %s", s)
	}
	if bad := r.run(t, nil, "tag", first); bad.code != exitUsage {
		t.Fatalf("tag without a change: %s", bad)
	}
	if a := r.must(t, nil, "audit", "--json"); strings.Count(a.stdout, `"action": "tag"`) != 3 || strings.Contains(a.stdout, marker) {
		t.Fatalf("audit of tag: %s", a)
	}

	// rewrite: the deep file leaves both snapshots; prune frees its data.
	if bad := r.run(t, nil, "rewrite"); bad.code != exitUsage {
		t.Fatalf("rewrite without --exclude: %s", bad)
	}
	dry := r.must(t, nil, "rewrite", "--exclude", "deep.txt", "--dry-run")
	if !strings.Contains(dry.stdout, "2 snapshots to rewrite (dry run)") {
		t.Fatalf("rewrite --dry-run: %s", dry)
	}
	rw := r.must(t, nil, "rewrite", "--exclude", "/"+strings.TrimPrefix(src, "/")+"/d/e", "--forget")
	if !strings.Contains(rw.stdout, "2 snapshots rewritten, 0 unchanged, 2 forgotten") {
		t.Fatalf("rewrite: %s", rw)
	}
	if f := r.must(t, nil, "find", "deep.txt"); !strings.Contains(f.stdout, "0 matches in 0 of 2 snapshots") {
		t.Fatalf("find after rewrite: %s", f)
	}
	var ss []engine.Snapshot
	if err := json.Unmarshal([]byte(r.must(t, nil, "--json", "snapshots").stdout), &ss); err != nil || len(ss) != 2 || !strings.HasPrefix(ss[0].Original, first) {
		t.Fatalf("snapshots after rewrite: %v %+v", err, ss)
	}
	r.must(t, nil, "prune")
	r.must(t, nil, "check", "--read-data")
	r.must(t, nil, "audit", "--verify")

	v := mustCoffer(t, nil, "version")
	if !strings.HasPrefix(v.stdout, "coffer ") || !strings.Contains(v.stdout, "protocol 2") || !strings.Contains(v.stdout, "go1.") {
		t.Fatalf("version: %s", v)
	}
}

// TestBrowseRemoteCLI: find, diff, stats and dump through --remote with a
// restore key read the server's snapshots as locally; tag and rewrite
// need an admin key, and then work as locally.
func TestBrowseRemoteCLI(t *testing.T) {
	r := newTestRepo(t, "alice")
	src := filepath.Join(t.TempDir(), "src")
	first, second := browseSetup(t, r, src)
	keys := t.TempDir()
	id := filepath.Join(keys, "id")
	mustCoffer(t, nil, "keygen", "--out", id)
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "add", "alice", id+".pub", "--role", "restore")
	addr, fp, _ := startServe(t, r.dir)
	rem := []string{"--remote", addr, "--identity", id, "--server-fingerprint", fp}
	run := func(a ...string) result { return coffer(t, nil, cat(rem, a...)...) }
	checkBrowse(t, run, src, first, second)
	// tag and rewrite need an admin key.
	for _, a := range [][]string{{"tag", first, "--add", "x"}, {"rewrite", "--exclude", "x"}} {
		if res := run(a...); res.code == exitOK || !strings.Contains(res.stderr, "refused") {
			t.Fatalf("%v with a restore key: %s", a, res)
		}
	}
	adminID := filepath.Join(keys, "admin")
	mustCoffer(t, nil, "keygen", "--out", adminID)
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "add", "alice", adminID+".pub", "--role", "admin")
	adm := []string{"--remote", addr, "--identity", adminID, "--server-fingerprint", fp}
	if tg := mustCoffer(t, nil, cat(adm, "tag", first, "--add", "wire")...); !strings.Contains(tg.stdout, "1 of 1 snapshots changed") {
		t.Fatalf("remote tag: %s", tg)
	}
	if s := mustCoffer(t, nil, cat(rem, "snapshots")...); !strings.Contains(s.stdout, "wire") {
		t.Fatalf("snapshots after remote tag: %s", s)
	}
	rw := mustCoffer(t, nil, cat(adm, "rewrite", "--exclude", "/"+strings.TrimPrefix(src, "/")+"/d/e", "--forget")...)
	if !strings.Contains(rw.stdout, "2 snapshots rewritten, 0 unchanged, 2 forgotten") {
		t.Fatalf("remote rewrite: %s", rw)
	}
	if f := run("find", "deep.txt"); !strings.Contains(f.stdout, "0 matches in 0 of 2 snapshots") {
		t.Fatalf("find after the remote rewrite: %s", f)
	}
	mustCoffer(t, nil, cat(adm, "prune")...)
}
