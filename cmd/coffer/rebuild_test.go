package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rebuildSource writes a small source tree (a binary over several chunks, a
// text file, a nested folder, a symlink) and returns its path.
func rebuildSource(t *testing.T, seed uint64) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	big := make([]byte, 1500<<10)
	var s [32]byte
	s[0] = byte(seed)
	_, _ = rand.NewChaCha8(s).Read(big)
	writeFile(t, filepath.Join(src, "data", "big.bin"), big)
	writeFile(t, filepath.Join(src, "notes.txt"), bytes.Repeat([]byte("note\n"), 100))
	writeFile(t, filepath.Join(src, "a", "b", "c.txt"), []byte("deep\n"))
	if err := os.Symlink("notes.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	return src
}

// rebuildRepo makes a repository with tenant acme and one backup of a
// source tree, and returns both.
func rebuildRepo(t *testing.T) (*testRepo, string) {
	t.Helper()
	r := newTestRepo(t, "acme", "--pack-size", "1MiB")
	src := rebuildSource(t, 1)
	r.must(t, nil, "backup", src)
	return r, src
}

// restoreAndCompare restores the latest snapshot and compares it with src.
func restoreAndCompare(t *testing.T, r *testRepo, src string, extra ...string) result {
	t.Helper()
	target := t.TempDir()
	res := mustCoffer(t, nil, cat(cat(extra, r.args()...), "restore", "latest", "--target", target)...)
	compareTrees(t, src, filepath.Join(target, src))
	return res
}

// TestIndexRebuildCommand: coffer index rebuild over an existing index keeps
// the old one aside and the snapshots and their contents stay the same.
func TestIndexRebuildCommand(t *testing.T) {
	r, src := rebuildRepo(t)
	before := r.must(t, nil, "--json", "snapshots").stdout
	res := r.must(t, nil, "index", "rebuild")
	if !strings.Contains(res.stdout, "rebuilt the index of") || !strings.Contains(res.stdout, "1 tenants, 1 snapshots") {
		t.Errorf("index rebuild output:\n%s", res)
	}
	if m, _ := filepath.Glob(filepath.Join(r.dir, "index.broken-*")); len(m) != 1 {
		t.Errorf("previous index not kept aside: %v", m)
	}
	if after := r.must(t, nil, "--json", "snapshots").stdout; after != before {
		t.Errorf("snapshots differ after rebuild:\nbefore: %s\nafter:  %s", before, after)
	}
	restoreAndCompare(t, r, src)
	if res := r.run(t, nil, "check"); res.code != exitOK {
		t.Errorf("check after rebuild:\n%s", res)
	}
}

// TestIndexRebuildRestoreWithoutIndex: after rm -rf REPO/index, restore (and
// snapshots, ls, dump) rebuild the index first and say so on stderr.
func TestIndexRebuildRestoreWithoutIndex(t *testing.T) {
	r, src := rebuildRepo(t)
	if err := os.RemoveAll(filepath.Join(r.dir, "index")); err != nil {
		t.Fatal(err)
	}
	res := restoreAndCompare(t, r, src)
	want := "the index of " + r.dir + " is missing; rebuilt it from 6 drives"
	if !strings.Contains(res.stderr, want) {
		t.Errorf("restore without index does not say it rebuilt (want %q):\n%s", want, res)
	}
	// Now the index is back: no further rebuild.
	res = r.must(t, nil, "snapshots")
	if strings.Contains(res.stderr, "rebuilt") || !strings.Contains(res.stdout, "1 snapshots") {
		t.Errorf("snapshots after the rebuild:\n%s", res)
	}
	for _, cmd := range [][]string{{"snapshots"}, {"ls", "latest"}, {"dump", "latest", filepath.Join(src, "notes.txt")}} {
		if err := os.RemoveAll(filepath.Join(r.dir, "index")); err != nil {
			t.Fatal(err)
		}
		res := r.must(t, nil, cmd...)
		if !strings.Contains(res.stderr, "rebuilt it from 6 drives") {
			t.Errorf("%s without index does not rebuild:\n%s", cmd[0], res)
		}
	}
}

// TestIndexRebuildRestoreCorruptIndex: garbled pebble files; restore
// rebuilds, keeps the broken index aside and restores identically.
func TestIndexRebuildRestoreCorruptIndex(t *testing.T) {
	r, src := rebuildRepo(t)
	entries, err := os.ReadDir(filepath.Join(r.dir, "index"))
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		p := filepath.Join(r.dir, "index", en.Name())
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 || en.Name() == "LOCK" {
			continue
		}
		for i := len(b) / 4; i < len(b); i += 7 {
			b[i] ^= 0x5a
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	res := restoreAndCompare(t, r, src)
	if !strings.Contains(res.stderr, "is unreadable; rebuilt it from 6 drives") || !strings.Contains(res.stderr, "index.broken-") {
		t.Errorf("restore over a corrupt index does not say it rebuilt:\n%s", res)
	}
}

// TestIndexRebuildHeadNodeLost: only the drive folders and the master key
// survive, in new places; index rebuild --drives makes a new repository
// folder from which restore is identical.
func TestIndexRebuildHeadNodeLost(t *testing.T) {
	r, src := rebuildRepo(t)
	place := t.TempDir()
	var drives []string
	ds, _ := filepath.Glob(filepath.Join(r.dir, "drives", "*"))
	for i, d := range ds {
		to := filepath.Join(place, "mnt", "disk"+itoa(i))
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(d, to); err != nil {
			t.Fatal(err)
		}
		drives = append(drives, "x:"+to)
	}
	key := filepath.Join(place, "master.key")
	if err := os.Rename(r.key, key); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(r.dir); err != nil {
		t.Fatal(err)
	}
	newRepo := &testRepo{dir: filepath.Join(place, "new", "repo"), key: key, tenant: "acme"}
	res := mustCoffer(t, nil, "--repo", newRepo.dir, "--master-key-file", key, "index", "rebuild", "--drives", strings.Join(drives, ","))
	if !strings.Contains(res.stdout, "from 6 drives") {
		t.Errorf("index rebuild --drives:\n%s", res)
	}
	restoreAndCompare(t, newRepo, src, "--master-key-file", key)
}

// TestIndexRebuildErrors: a foreign drive in the list, no repository, and
// no key are one-line errors with the documented exit codes.
func TestIndexRebuildErrors(t *testing.T) {
	r, _ := rebuildRepo(t)
	other := newTestRepo(t, "")
	ds, _ := filepath.Glob(filepath.Join(r.dir, "drives", "*"))
	intruder := filepath.Join(other.dir, "drives", "d2")
	var list []string
	for _, d := range ds {
		list = append(list, "r1:"+d)
	}
	res := r.run(t, nil, "index", "rebuild", "--drives", strings.Join(append(list, "r9:"+intruder), ","))
	checkErrorLine(t, res)
	if res.code != exitError || !strings.Contains(res.stderr, intruder) || !strings.Contains(res.stderr, "another repository") {
		t.Errorf("foreign drive: want exit 1 naming %s:\n%s", intruder, res)
	}
	res = coffer(t, nil, "--repo", filepath.Join(t.TempDir(), "none"), "index", "rebuild")
	checkErrorLine(t, res)
	if res.code != exitNoRepo {
		t.Errorf("rebuild of nothing: exit %d:\n%s", res.code, res)
	}
	// The key of another repository: exit 12.
	res = coffer(t, nil, "--repo", r.dir, "--master-key-file", other.key, "index", "rebuild")
	checkErrorLine(t, res)
	if res.code != exitWrongKey {
		t.Errorf("rebuild with another repository's key: exit %d, want %d:\n%s", res.code, exitWrongKey, res)
	}
	// Without the key, restore does not try to rebuild: repository not found.
	if err := os.RemoveAll(filepath.Join(r.dir, "index")); err != nil {
		t.Fatal(err)
	}
	res = r.run(t, nil, "--master-key-file", filepath.Join(t.TempDir(), "nokey"), "snapshots")
	checkErrorLine(t, res)
	if res.code != exitNoRepo {
		t.Errorf("snapshots without index or key: exit %d:\n%s", res.code, res)
	}
}
