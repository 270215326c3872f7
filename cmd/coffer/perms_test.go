package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyFile copies the file from to to with mode.
func copyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(to, mode); err != nil { // not subject to umask
		t.Fatal(err)
	}
}

// TestInitPrivate: init into a folder that exists with mode 0755 leaves
// the repository's folders private to the operator (0700: the repository
// folder, index/, drives/) and its key and config copy 0600, so a local
// user can read neither tenant IDs nor key fingerprints. On the code
// before, the folder and index/ stayed world-readable.
func TestInitPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mustCoffer(t, nil, "--repo", dir, "init")
	mustCoffer(t, nil, "--repo", dir, "tenant", "create", "acme")
	mode := func(p string) os.FileMode {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	for p, want := range map[string]os.FileMode{
		dir:                                0o700,
		filepath.Join(dir, "index"):        0o700,
		filepath.Join(dir, "drives"):       0o700,
		filepath.Join(dir, "master.key"):   0o600,
		filepath.Join(dir, "config.json"):  0o600,
		filepath.Join(dir, "drives", "d1"): 0o700,
	} {
		if got := mode(p); got != want {
			t.Errorf("%s has mode %04o, want %04o", p, got, want)
		}
	}
	// No folder of the repository lets others in.
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if m := mode(p); m&0o077 != 0 {
			t.Errorf("folder %s has mode %04o", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKeyFilePermissions: a master key file or a client identity that its
// group or others may read is refused, as ssh refuses one, with one
// sentence naming the file and the fix (chmod 600) and exit 12; after the
// fix the command runs. On the code before, such files were used without
// a word.
func TestKeyFilePermissions(t *testing.T) {
	r := newTestRepo(t, "acme")
	id := filepath.Join(t.TempDir(), "id")
	mustCoffer(t, nil, "keygen", "--out", id)
	cases := []struct {
		name string
		file string
		args []string
	}{
		{"master key", r.key, r.args("snapshots")},
		{"master key, operator command", r.key, []string{"--repo", r.dir, "tenant", "list"}},
		{"identity", id, []string{"--remote", "127.0.0.1:1", "--identity", id, "--server-fingerprint", "SHA256:AAAA", "snapshots"}},
	}
	for _, c := range cases {
		for _, m := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
			if err := os.Chmod(c.file, m); err != nil {
				t.Fatal(err)
			}
			res := coffer(t, nil, c.args...)
			if res.code != exitWrongKey || !strings.Contains(res.stderr, c.file) || !strings.Contains(res.stderr, "chmod 600 "+c.file) {
				t.Errorf("%s with mode %04o: want exit %d naming the file and chmod 600:\n%s", c.name, m, exitWrongKey, res)
			}
			checkErrorLine(t, res)
		}
		if err := os.Chmod(c.file, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r.must(t, nil, "snapshots")
	if res := coffer(t, nil, cases[2].args...); res.code == exitWrongKey {
		t.Errorf("identity with mode 0600 still refused:\n%s", res)
	}
}
