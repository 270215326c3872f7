package main

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain clears the environment variables the CLI reads, so a developer's
// shell (COFFER_REPO=...) cannot change what the tests see. Tests that need
// one set it with t.Setenv.
func TestMain(m *testing.M) {
	for _, v := range []string{"COFFER_REPO", "COFFER_MASTER_KEY_FILE", "COFFER_TENANT", "COFFER_REMOTE", "COFFER_IDENTITY", "COFFER_SERVER_FINGERPRINT"} {
		os.Unsetenv(v)
	}
	os.Exit(m.Run())
}

// result is what one in-process run of the CLI produced.
type result struct {
	args   []string
	code   int
	stdout string
	stderr string
}

func (r result) String() string {
	return "coffer " + strings.Join(r.args, " ") + "\n  exit " + itoa(r.code) +
		"\n  stdout: " + clip(r.stdout) + "\n  stderr: " + clip(r.stderr)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "…"
	}
	return s
}

// coffer runs one command line through run, in this process.
func coffer(t testing.TB, stdin io.Reader, args ...string) result {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errb bytes.Buffer
	code := run(args, stdin, &out, &errb)
	return result{args: args, code: code, stdout: out.String(), stderr: errb.String()}
}

// mustCoffer runs a command line that must succeed.
func mustCoffer(t testing.TB, stdin io.Reader, args ...string) result {
	t.Helper()
	r := coffer(t, stdin, args...)
	if r.code != exitOK {
		t.Fatalf("command failed:\n%s", r)
	}
	return r
}

// testRepo is a repository made through the CLI in a test folder.
type testRepo struct {
	dir    string // repository folder
	key    string // master key file
	tenant string // tenant created by newTestRepo ("" if none)
}

// newTestRepo runs "coffer init" in a new folder and, if tenant is not "",
// "coffer tenant create tenant".
func newTestRepo(t testing.TB, tenant string, initArgs ...string) *testRepo {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	r := &testRepo{dir: dir, key: filepath.Join(dir, "master.key"), tenant: tenant}
	mustCoffer(t, nil, append([]string{"--repo", dir, "init"}, initArgs...)...)
	if tenant != "" {
		mustCoffer(t, nil, "--repo", dir, "tenant", "create", tenant)
	}
	return r
}

// args prefixes a command line with --repo (and --tenant, when the repository
// has one).
func (r *testRepo) args(a ...string) []string {
	out := []string{"--repo", r.dir}
	if r.tenant != "" {
		out = append(out, "--tenant", r.tenant)
	}
	return append(out, a...)
}

func (r *testRepo) run(t testing.TB, stdin io.Reader, a ...string) result {
	t.Helper()
	return coffer(t, stdin, r.args(a...)...)
}

func (r *testRepo) must(t testing.TB, stdin io.Reader, a ...string) result {
	t.Helper()
	return mustCoffer(t, stdin, r.args(a...)...)
}

// checkErrorLine checks the contract for a failed command: its stderr is
// exactly one line, starting with "coffer: ", with no sign of a Go panic or
// stack trace.
func checkErrorLine(t testing.TB, r result) {
	t.Helper()
	if r.code == exitOK {
		t.Errorf("command succeeded, want an error:\n%s", r)
		return
	}
	s := r.stderr
	if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		t.Errorf("stderr must be exactly one line, got %d lines:\n%s", strings.Count(s, "\n"), r)
	}
	if !strings.HasPrefix(s, "coffer: ") {
		t.Errorf("stderr must start with \"coffer: \":\n%s", r)
	}
	for _, bad := range []string{"panic", "goroutine ", ".go:", "runtime/", "\t"} {
		if strings.Contains(s, bad) {
			t.Errorf("stderr holds %q (a panic or stack trace?):\n%s", bad, r)
		}
	}
}

// writeFile writes a file, creating its folders.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// shardFiles lists the shard files of packs under a repository's drives
// (REPO/drives/*/t/*/p/**).
func shardFiles(t testing.TB, repoDir string) []string {
	t.Helper()
	var out []string
	drives, err := filepath.Glob(filepath.Join(repoDir, "drives", "*", "t", "*", "p"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range drives {
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				out = append(out, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// compareTrees checks that got holds the same files, folders, symlinks and
// contents as want, skipping names in skip (at any depth) on the want side.
// Names in skip must be absent from got.
func compareTrees(t testing.TB, want, got string, skip ...string) {
	t.Helper()
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		if skipped[d.Name()] && rel != "." {
			if _, err := os.Lstat(filepath.Join(got, rel)); err == nil {
				t.Errorf("%s: excluded, but restored", rel)
			}
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		seen[rel] = true
		gp := filepath.Join(got, rel)
		wi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		gi, err := os.Lstat(gp)
		if err != nil {
			t.Errorf("%s: missing from the restore: %v", rel, err)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if wi.Mode().Type() != gi.Mode().Type() {
			t.Errorf("%s: type %v, restored as %v", rel, wi.Mode().Type(), gi.Mode().Type())
			return nil
		}
		if wi.Mode().Perm() != gi.Mode().Perm() {
			t.Errorf("%s: mode %v, restored as %v", rel, wi.Mode().Perm(), gi.Mode().Perm())
		}
		switch {
		case wi.Mode().IsRegular():
			a, err1 := os.ReadFile(p)
			b, err2 := os.ReadFile(gp)
			if err1 != nil || err2 != nil {
				t.Errorf("%s: read: %v, %v", rel, err1, err2)
			} else if !bytes.Equal(a, b) {
				t.Errorf("%s: restored content differs (%d bytes, restored %d)", rel, len(a), len(b))
			}
			if !wi.ModTime().Equal(gi.ModTime()) {
				t.Errorf("%s: mtime %v, restored as %v", rel, wi.ModTime(), gi.ModTime())
			}
		case wi.Mode()&fs.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(gp)
			if a != b {
				t.Errorf("%s: link target %q, restored as %q", rel, a, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(got, p)
		if !seen[rel] && !skipped[d.Name()] {
			t.Errorf("%s: restored, but not in the source", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// decodeJSON parses a command's stdout as JSON into v.
func decodeJSON(t testing.TB, r result, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r)
	}
	if dec.More() {
		t.Fatalf("stdout holds more than one JSON value:\n%s", r)
	}
}

// cat returns a new slice: a followed by b (never aliasing a).
func cat(a []string, b ...string) []string {
	return append(append([]string(nil), a...), b...)
}
