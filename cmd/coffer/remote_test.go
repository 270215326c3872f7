package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/engine"
	"coffer/engine/remote"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServe runs coffer serve's work function on loopback for the
// repository in dir and returns its address and fingerprint.
func startServe(t *testing.T, dir string) (addr, fp string, out *lockedBuffer) {
	t.Helper()
	addr, fp, out, _ = startServeStop(t, dir)
	return addr, fp, out
}

// startServeStop is startServe that also returns a function that stops the
// server (and closes its engine) before the test ends; it may be called
// more than once.
func startServeStop(t *testing.T, dir string) (addr, fp string, out *lockedBuffer, stop func()) {
	t.Helper()
	e, err := engine.Open(dir, engine.Options{Command: "coffer serve"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out = &lockedBuffer{}
	g := &globals{stdout: out, stderr: out}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, g, e, ln, remoteConfigForTest()) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
			e.Close()
		})
	}
	t.Cleanup(stop)
	re := regexp.MustCompile(`server fingerprint: (SHA256:\S+)`)
	for i := 0; i < 1000; i++ {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return ln.Addr().String(), m[1], out, stop
		}
		runtimeGosched()
	}
	t.Fatalf("serve printed no fingerprint: %s", out.String())
	return
}

func TestRemoteCLI(t *testing.T) {
	r := newTestRepo(t, "alice")
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "create", "bob")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("alpha\n"))
	writeFile(t, filepath.Join(src, "d", "b.bin"), bytes.Repeat([]byte{7}, 300000))
	r.must(t, nil, "backup", src)

	keys := t.TempDir()
	id := filepath.Join(keys, "id")
	kg := mustCoffer(t, nil, "keygen", "--out", id)
	if fi, err := os.Stat(id); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode: %v %v", fi, err)
	}
	if pub, err := os.ReadFile(id + ".pub"); err != nil || !strings.HasPrefix(string(pub), "ssh-ed25519 AAAA") {
		t.Fatalf("public key: %q %v", pub, err)
	}
	fpLine := regexp.MustCompile(`fingerprint: (SHA256:\S+)`).FindStringSubmatch(kg.stdout)
	if fpLine == nil {
		t.Fatalf("keygen printed no fingerprint: %s", kg)
	}
	if res := coffer(t, nil, "keygen", "--out", id); res.code == exitOK {
		t.Fatalf("keygen overwrote a key: %s", res)
	}
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "add", "alice", id+".pub", "--role", "restore,backup")
	res := coffer(t, nil, "--repo", r.dir, "tenant", "key", "add", "alice", id+".pub", "--role", "sudo")
	if res.code != exitUsage {
		t.Fatalf("bad role: %s", res)
	}
	list := mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "list", "alice")
	if !strings.Contains(list.stdout, fpLine[1]) || !strings.Contains(list.stdout, "backup,restore") {
		t.Fatalf("key list: %s", list)
	}
	if bob := mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "list", "bob"); strings.Contains(bob.stdout, fpLine[1]) {
		t.Fatalf("bob lists alice's key: %s", bob)
	}

	// An admin key for forget and prune (keys are added while no server
	// holds the repository).
	adminID := filepath.Join(keys, "admin")
	mustCoffer(t, nil, "keygen", "--out", adminID)
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "add", "alice", adminID+".pub", "--role", "admin")

	addr, fp, out := startServe(t, r.dir)
	rem := []string{"--remote", addr, "--identity", id, "--server-fingerprint", fp}
	snaps := mustCoffer(t, nil, cat(rem, "snapshots")...)
	if !strings.Contains(snaps.stdout, "1 snapshots") {
		t.Fatalf("remote snapshots: %s", snaps)
	}
	ls := mustCoffer(t, nil, cat(rem, "ls", "latest")...)
	if !strings.Contains(ls.stdout, "/d/b.bin") {
		t.Fatalf("remote ls: %s", ls)
	}
	dump := mustCoffer(t, nil, cat(rem, "dump", "latest", filepath.Join(src, "a.txt"))...)
	if dump.stdout != "alpha\n" {
		t.Fatalf("remote dump: %s", dump)
	}
	target := t.TempDir()
	mustCoffer(t, nil, cat(rem, "restore", "latest", "--target", target)...)
	compareTrees(t, src, filepath.Join(target, src))

	// The same through the environment.
	t.Setenv("COFFER_REMOTE", addr)
	t.Setenv("COFFER_IDENTITY", id)
	t.Setenv("COFFER_SERVER_FINGERPRINT", fp)
	mustCoffer(t, nil, "snapshots")
	os.Unsetenv("COFFER_REMOTE")
	os.Unsetenv("COFFER_IDENTITY")
	os.Unsetenv("COFFER_SERVER_FINGERPRINT")

	// Wrong fingerprint: refused with one line, before any data.
	bad := coffer(t, nil, "--remote", addr, "--identity", id, "--server-fingerprint", fpLine[1], "snapshots")
	checkErrorLine(t, bad)
	if !strings.Contains(bad.stderr, "fingerprint") {
		t.Fatalf("wrong fingerprint: %s", bad)
	}
	// Backup over the wire, then a remote restore of it. (The local
	// backup above is the parent only if host and paths match; here they
	// do, so the unchanged files are not read again.)
	rb := mustCoffer(t, nil, cat(rem, "backup", "--tag", "wire", src)...)
	if !strings.Contains(rb.stdout, "2 unchanged") || !strings.Contains(rb.stdout, "sent") {
		t.Fatalf("remote backup: %s", rb)
	}
	writeFile(t, filepath.Join(src, "c.txt"), []byte("gamma\n"))
	second := mustCoffer(t, nil, cat(rem, "backup", src)...)
	sid := regexp.MustCompile(`snapshot (\S+) saved`).FindStringSubmatch(second.stdout)
	if sid == nil || !strings.Contains(second.stdout, "2 unchanged") {
		t.Fatalf("second remote backup: %s", second)
	}
	mustCoffer(t, strings.NewReader("from stdin\n"), cat(rem, "backup", "--stdin", "--stdin-filename", "in.txt")...)
	if d := mustCoffer(t, nil, cat(rem, "dump", "latest", "/in.txt")...); d.stdout != "from stdin\n" {
		t.Fatalf("remote stdin backup: %s", d)
	}
	snaps = mustCoffer(t, nil, cat(rem, "snapshots")...)
	if !strings.Contains(snaps.stdout, "4 snapshots") {
		t.Fatalf("remote snapshots after backups: %s", snaps)
	}
	target = t.TempDir()
	mustCoffer(t, nil, cat(rem, "restore", sid[1], "--target", target)...)
	compareTrees(t, src, filepath.Join(target, src))
	// Forget and prune need an admin key: this one (backup, restore) is
	// refused, and nothing is forgotten.
	for _, args := range [][]string{{"forget", "latest"}, {"forget", "--keep-last", "1", "--dry-run"}, {"prune"}, {"prune", "--dry-run"}} {
		nb := coffer(t, nil, cat(rem, args...)...)
		checkErrorLine(t, nb)
		if !strings.Contains(nb.stderr, "refused") {
			t.Fatalf("remote %v with a backup,restore key: %s", args, nb)
		}
	}
	adm := []string{"--remote", addr, "--identity", adminID, "--server-fingerprint", fp}
	// Groups: src (3 snapshots) and in.txt (1). --keep-last 1 removes 2.
	dry := mustCoffer(t, nil, cat(adm, "forget", "--keep-last", "1", "--dry-run")...)
	if !strings.Contains(dry.stdout, "Applying policy") || !strings.Contains(dry.stdout, "would forget 2 snapshots, 2 kept") {
		t.Fatalf("remote forget --dry-run: %s", dry)
	}
	if snaps = mustCoffer(t, nil, cat(rem, "snapshots")...); !strings.Contains(snaps.stdout, "4 snapshots") {
		t.Fatalf("dry run forgot: %s", snaps)
	}
	fg := mustCoffer(t, nil, cat(adm, "forget", "--keep-last", "1", "--prune", "--max-unused", "0")...)
	if !strings.Contains(fg.stdout, "forgot 2 snapshots, 2 kept") || !strings.Contains(fg.stdout, "pruned tenant alice") {
		t.Fatalf("remote forget --prune: %s", fg)
	}
	if snaps = mustCoffer(t, nil, cat(rem, "snapshots")...); !strings.Contains(snaps.stdout, "2 snapshots") || !strings.Contains(snaps.stdout, sid[1]) {
		t.Fatalf("after remote forget: %s", snaps)
	}
	target = t.TempDir()
	mustCoffer(t, nil, cat(rem, "restore", sid[1], "--target", target)...)
	compareTrees(t, src, filepath.Join(target, src))
	pd := mustCoffer(t, nil, cat(adm, "prune", "--dry-run")...)
	if !strings.Contains(pd.stdout, "would prune (dry run) tenant alice") {
		t.Fatalf("remote prune --dry-run: %s", pd)
	}
	pj := mustCoffer(t, nil, cat(adm, "--json", "prune")...)
	if !strings.Contains(pj.stdout, `"physical_bytes_after"`) {
		t.Fatalf("remote prune --json: %s", pj)
	}
	fj := mustCoffer(t, nil, cat(adm, "--json", "forget", "latest", "--dry-run")...)
	if !strings.Contains(fj.stdout, `"dry_run": true`) && !strings.Contains(fj.stdout, `"dry_run":true`) {
		t.Fatalf("remote forget --json: %s", fj)
	}
	nf := coffer(t, nil, cat(adm, "forget", strings.Repeat("5a", 16))...)
	checkErrorLine(t, nf)
	if !strings.Contains(nf.stderr, "not found") {
		t.Fatalf("remote forget of a random ID: %s", nf)
	}
	// An unknown key is refused (removed keys and locked tenants get the
	// same answer: engine/remote TestRemoteRefusedBeforeData).
	other := filepath.Join(keys, "other")
	mustCoffer(t, nil, "keygen", "--out", other)
	unknown := coffer(t, nil, "--remote", addr, "--identity", other, "--server-fingerprint", fp, "snapshots")
	checkErrorLine(t, unknown)
	if !strings.Contains(unknown.stderr, "refused") {
		t.Fatalf("unknown key: %s", unknown)
	}
	// Structured log lines carry no tenant name or file names.
	logs := out.String()
	if !strings.Contains(logs, "msg=request") || strings.Contains(logs, "alice") || strings.Contains(logs, "a.txt") {
		t.Fatalf("server log: %s", logs)
	}
}

func remoteConfigForTest() remote.Config { return remote.Config{} }

func runtimeGosched() { time.Sleep(5 * time.Millisecond) }
