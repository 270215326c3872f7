package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"coffer/engine"
)

// TestExitCodes runs command lines in-process and checks the documented exit
// code and the one-line error on stderr (DESIGN.md section 5).
func TestExitCodes(t *testing.T) {
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("hello\n"))
	r.must(t, nil, "backup", src)

	other := newTestRepo(t, "") // a second repository: its key is wrong for r
	empty := t.TempDir()        // a folder that holds no repository
	missing := filepath.Join(t.TempDir(), "does-not-exist")
	badKey := filepath.Join(t.TempDir(), "bad.key")
	writeFile(t, badKey, []byte("this is not a coffer master key\n"))
	if err := os.Chmod(badKey, 0o600); err != nil { // private: malformed, not exposed
		t.Fatal(err)
	}
	openKey := filepath.Join(t.TempDir(), "open.key")
	copyFile(t, r.key, openKey, 0o644)
	fresh := func() string { return filepath.Join(t.TempDir(), "new") }

	repo := func(a ...string) []string { return append([]string{"--repo", r.dir}, a...) }
	tenant := func(a ...string) []string { return r.args(a...) }

	tests := []struct {
		name  string
		args  []string
		stdin string
		want  int
		// inStderr must appear in the error line.
		inStderr string
		// noRepo: the folder given to init must not have been created.
		noRepo string
	}{
		// Usage errors: 2.
		{name: "unknown flag", args: repo("--bogus", "snapshots"), want: exitUsage},
		{name: "unknown flag of a command", args: tenant("snapshots", "--bogus"), want: exitUsage},
		{name: "unknown command", args: repo("frobnicate"), want: exitUsage},
		// cobra adds "Did you mean this?" suggestions on more lines.
		{name: "unknown command close to a real one", args: repo("snapshot"), want: exitUsage},
		{name: "unknown tenant subcommand", args: repo("tenant", "crate", "bob"), want: exitUsage},
		{name: "tenant create without a name", args: repo("tenant", "create"), want: exitUsage},
		{name: "ls without a snapshot", args: tenant("ls"), want: exitUsage},
		{name: "restore without a snapshot", args: tenant("restore", "--target", t.TempDir()), want: exitUsage},
		{name: "restore without --target", args: tenant("restore", "latest"), want: exitUsage, inStderr: "--target"},
		{name: "backup with no paths", args: tenant("backup"), want: exitUsage},
		{name: "--stdin without --stdin-filename", args: tenant("backup", "--stdin"), stdin: "data", want: exitUsage, inStderr: "--stdin-filename"},
		{name: "--stdin with paths", args: tenant("backup", "--stdin", "--stdin-filename", "x", src), want: exitUsage},
		{name: "flag without its value", args: repo("--tenant"), want: exitUsage},
		{name: "bad --retry-lock", args: tenant("snapshots", "--retry-lock", "soon"), want: exitUsage},
		{name: "no --repo", args: []string{"--tenant", "acme", "snapshots"}, want: exitUsage},
		{name: "no --tenant", args: repo("snapshots"), want: exitUsage},
		{name: "snapshot prefix too short", args: tenant("ls", "abc"), want: exitUsage},
		{name: "bad --pack-size unit", args: []string{"--repo", "", "init", "--pack-size", "12XB"}, want: exitUsage},
		{name: "bad --pack-size number", args: []string{"--repo", "", "init", "--pack-size", "-5MiB"}, want: exitUsage},
		{name: "--pack-size too small", args: []string{"--repo", "", "init", "--pack-size", "1KiB"}, want: exitUsage},
		{name: "--pack-size too large", args: []string{"--repo", "", "init", "--pack-size", "4GiB"}, want: exitUsage},
		{name: "bad --drives", args: []string{"--repo", "", "init", "--drives", "nocolon"}, want: exitUsage},

		// No repository: 10.
		{name: "empty folder", args: []string{"--repo", empty, "--tenant", "acme", "snapshots"}, want: exitNoRepo, inStderr: empty},
		{name: "missing folder", args: []string{"--repo", missing, "tenant", "list"}, want: exitNoRepo, inStderr: missing},
		{name: "missing folder, check", args: []string{"--repo", missing, "check"}, want: exitNoRepo, inStderr: missing},

		// Master key: 12.
		{name: "key of another repository", args: []string{"--repo", r.dir, "--master-key-file", other.key, "tenant", "list"}, want: exitWrongKey},
		{name: "key of another repository, data command", args: []string{"--repo", r.dir, "--master-key-file", other.key, "--tenant", "acme", "snapshots"}, want: exitWrongKey},
		{name: "missing key file", args: []string{"--repo", r.dir, "--master-key-file", filepath.Join(empty, "nokey"), "tenant", "list"}, want: exitWrongKey, inStderr: filepath.Join(empty, "nokey")},
		{name: "malformed key file", args: []string{"--repo", r.dir, "--master-key-file", badKey, "tenant", "list"}, want: exitWrongKey, inStderr: badKey},
		{name: "key file others may read", args: []string{"--repo", r.dir, "--master-key-file", openKey, "tenant", "list"}, want: exitWrongKey, inStderr: "chmod 600 " + openKey},

		// Plain errors: 1.
		{name: "unknown tenant", args: repo("--tenant", "nobody", "snapshots"), want: exitError, inStderr: "nobody"},
		{name: "unknown tenant, restore", args: repo("--tenant", "nobody", "restore", "latest", "--target", t.TempDir()), want: exitError, inStderr: "nobody"},
		{name: "unknown snapshot", args: tenant("ls", "deadbeef00"), want: exitError, inStderr: "deadbeef00"},
		{name: "unknown snapshot, restore", args: tenant("restore", "deadbeefdeadbeef", "--target", t.TempDir()), want: exitError, inStderr: "deadbeef"},
		{name: "unknown path in snapshot", args: tenant("dump", "latest", "/no/such/file"), want: exitError},
		{name: "tenant exists", args: repo("tenant", "create", "acme"), want: exitError, inStderr: "acme"},

		// Success: 0.
		{name: "tenant list", args: repo("tenant", "list"), want: exitOK},
		{name: "snapshots", args: tenant("snapshots"), want: exitOK},
		{name: "ls latest", args: tenant("ls", "latest"), want: exitOK},
		{name: "check", args: repo("check", "--read-data"), want: exitOK},
		{name: "stdin backup", args: tenant("backup", "--stdin", "--stdin-filename", "in.txt"), stdin: "data\n", want: exitOK},
		{name: "help", args: []string{"--help"}, want: exitOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if len(args) >= 2 && args[0] == "--repo" && args[1] == "" {
				tc.noRepo = fresh()
				args = append([]string{"--repo", tc.noRepo}, args[2:]...)
			}
			res := coffer(t, strings.NewReader(tc.stdin), args...)
			if res.code != tc.want {
				t.Errorf("exit %d, want %d:\n%s", res.code, tc.want, res)
			}
			if tc.want != exitOK && res.code != exitOK {
				checkErrorLine(t, res)
			}
			if tc.inStderr != "" && !strings.Contains(res.stderr, tc.inStderr) {
				t.Errorf("stderr does not name %q:\n%s", tc.inStderr, res)
			}
			if tc.noRepo != "" {
				if _, err := os.Stat(tc.noRepo); err == nil {
					t.Errorf("init with a bad flag created %s", tc.noRepo)
				}
			}
		})
	}
	// The wrong key must not have changed anything: the right key still works.
	r.must(t, nil, "snapshots")
}

// TestExitNoRepoMessage checks that a missing repository is reported in one
// sentence naming the folder and what to do.
func TestExitNoRepoMessage(t *testing.T) {
	dir := t.TempDir()
	res := coffer(t, nil, "--repo", dir, "--tenant", "acme", "backup", dir)
	if res.code != exitNoRepo {
		t.Fatalf("exit %d, want %d:\n%s", res.code, exitNoRepo, res)
	}
	checkErrorLine(t, res)
	if !strings.Contains(res.stderr, dir) || !strings.Contains(res.stderr, "init") {
		t.Errorf("the error should name %s and say to run coffer init:\n%s", dir, res)
	}
	if _, err := os.Stat(filepath.Join(dir, "index")); err == nil {
		t.Errorf("a command on a missing repository created %s/index", dir)
	}
}

// TestExitRepoLocked holds the repository through engine.Open in this
// process (flock locks belong to the open file, so a second open file in the
// same process conflicts just as another process would) and checks exit 11
// naming the holder, then --retry-lock waiting for the holder to let go.
func TestExitRepoLocked(t *testing.T) {
	r := newTestRepo(t, "acme")
	holder, err := engine.Open(r.dir, engine.Options{Command: "test-holder"})
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			holder.Close()
		}
	}()

	for _, a := range [][]string{
		r.args("snapshots"),
		r.args("tenant", "list"),
		r.args("backup", t.TempDir()),
		r.args("check"),
		r.args("snapshots", "--retry-lock", "200ms"),
	} {
		start := time.Now()
		res := coffer(t, nil, a...)
		if res.code != exitRepoLocked {
			t.Errorf("exit %d, want %d:\n%s", res.code, exitRepoLocked, res)
			continue
		}
		checkErrorLine(t, res)
		if !strings.Contains(res.stderr, "test-holder") || !strings.Contains(res.stderr, "pid "+strconv.Itoa(os.Getpid())) {
			t.Errorf("the error does not name the holder (pid %d, test-holder):\n%s", os.Getpid(), res)
		}
		if !strings.Contains(res.stderr, r.dir) {
			t.Errorf("the error does not name the repository %s:\n%s", r.dir, res)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("took %s to report a held repository", el)
		}
	}

	// --retry-lock 2s: the holder lets go after ~300 ms, the command waits
	// and succeeds.
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(300 * time.Millisecond)
		holder.Close()
	}()
	start := time.Now()
	res := coffer(t, nil, r.args("snapshots", "--retry-lock", "2s")...)
	<-done
	released = true
	if res.code != exitOK {
		t.Fatalf("with --retry-lock 2s: exit %d, want 0:\n%s", res.code, res)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("succeeded after %s, before the holder let go: was the repository held at all?", el)
	}
	// After the command, the repository is free again.
	r.must(t, nil, "snapshots")
	e, err := engine.Open(r.dir, engine.Options{})
	if err != nil {
		t.Fatalf("the CLI did not release the repository: %v", err)
	}
	e.Close()
}

// TestExitLockHeldDuringBackup checks that a long-running CLI command (a
// stdin backup that waits on its input) holds the repository and serves a
// second command through its sockets instead of making it exit 11, and
// that the first process stays until the command it serves is done.
func TestExitLockHeldDuringBackup(t *testing.T) {
	r := newTestRepo(t, "acme")
	pr, pw := io.Pipe()
	first := make(chan result, 1)
	go func() { first <- coffer(t, pr, r.args("backup", "--stdin", "--stdin-filename", "slow.bin")...) }()

	// Wait until the first command holds the lock (its holder text is written).
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(r.dir, "lock"))
		if strings.Contains(string(b), "coffer backup") {
			break
		}
		if time.Now().After(deadline) {
			pw.Close()
			t.Fatalf("the backup never took the lock; lock file holds %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res := coffer(t, nil, r.args("snapshots")...)
	if res.code != exitOK || !strings.Contains(res.stdout, "0 snapshots") {
		t.Errorf("snapshots during a backup: exit %d, want 0:\n%s", res.code, res)
	}
	res = coffer(t, nil, "--repo", r.dir, "tenant", "list")
	if res.code != exitOK || !strings.Contains(res.stdout, "acme") {
		t.Errorf("tenant list during a backup: exit %d, want 0:\n%s", res.code, res)
	}
	pw.Write([]byte("slow data\n"))
	pw.Close()
	if fr := <-first; fr.code != exitOK {
		t.Fatalf("the stdin backup failed:\n%s", fr)
	}
	res = r.must(t, nil, "dump", "latest", "/slow.bin")
	if res.stdout != "slow data\n" {
		t.Errorf("dump gave %q", res.stdout)
	}
}

// TestExitCheckDamage deletes one shard file and expects check to exit 14
// and name the damage on stdout.
func TestExitCheckDamage(t *testing.T) {
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte(strings.Repeat("some content\n", 1000)))
	r.must(t, nil, "backup", src)
	r.must(t, nil, "check")

	shards := shardFiles(t, r.dir)
	if len(shards) == 0 {
		t.Fatalf("no shard files under %s/drives/*/t/*/p", r.dir)
	}
	if err := os.Remove(shards[0]); err != nil {
		t.Fatal(err)
	}
	for _, a := range [][]string{{"check"}, {"check", "--read-data"}} {
		res := coffer(t, nil, append([]string{"--repo", r.dir}, a...)...)
		if res.code != exitDamage {
			t.Errorf("after deleting %s: exit %d, want %d:\n%s", shards[0], res.code, exitDamage, res)
			continue
		}
		checkErrorLine(t, res)
		if !strings.Contains(res.stdout, "damage") {
			t.Errorf("stdout does not report the damage:\n%s", res)
		}
	}
	// The data is still readable from the other shards.
	res := r.must(t, nil, "dump", "latest", filepath.ToSlash(filepath.Join(src, "a.txt")))
	if res.stdout != strings.Repeat("some content\n", 1000) {
		t.Errorf("dump after losing one shard gave %d bytes", len(res.stdout))
	}
}

// TestExitInterrupted: a cancelled context maps to 130.
func TestExitInterrupted(t *testing.T) {
	if got := exitCode(context.Canceled); got != exitInterrupted {
		t.Errorf("exitCode(context.Canceled) = %d, want %d", got, exitInterrupted)
	}
}

// TestHelpExitCodes: the exit-code table ends the root's help and is the
// help topic exit-codes, and a command's help is not cluttered with it.
func TestHelpExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"--help"}, true},
		{[]string{"help", "exit-codes"}, true},
		{[]string{"help", "backup"}, false},
		{[]string{"restore", "--help"}, false},
		{[]string{"tenant", "lock", "--help"}, false},
	} {
		res := coffer(t, nil, tc.args...)
		if res.code != exitOK {
			t.Fatalf("coffer %q: exit %d\n%s", tc.args, res.code, res)
		}
		if got := strings.Contains(res.stdout, "130  interrupted"); got != tc.want {
			t.Errorf("coffer %q shows the exit codes: %v, want %v", tc.args, got, tc.want)
		}
	}
	if root := coffer(t, nil, "--help").stdout; strings.Index(root, "Exit codes:") < strings.Index(root, "Usage:") {
		t.Error("the root's help shows the exit codes before its usage")
	}
}

// TestJSONErrors: with --json an error is one JSON object on stderr,
// restic's exit_error, and each entry a partial backup left out is an error
// object naming it.
func TestJSONErrors(t *testing.T) {
	r := newTestRepo(t, "acme")
	res := r.run(t, nil, "--json", "dump", "latest", "/no/such/file")
	var e struct {
		Type    string `json:"message_type"`
		Code    int    `json:"code"`
		Message string `json:"message"`
		Item    string `json:"item"`
	}
	if err := json.Unmarshal([]byte(res.stderr), &e); err != nil || e.Type != "exit_error" || e.Code != exitError || res.code != exitError || e.Message == "" {
		t.Fatalf("--json error: %+v, %v\n%s", e, err, res)
	}
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "ok"), []byte("fine"))
	missing := filepath.Join(t.TempDir(), "gone")
	res = r.run(t, nil, "--json", "backup", src, missing)
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	if res.code != exitPartial || len(lines) != 2 {
		t.Fatalf("--json partial backup:\n%s", res)
	}
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil || e.Type != "error" || e.Item != missing {
		t.Errorf("--json warning line: %+v, %v", e, err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &e); err != nil || e.Type != "exit_error" || e.Code != exitPartial {
		t.Errorf("--json exit line: %+v, %v", e, err)
	}
}
