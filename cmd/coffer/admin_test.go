package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"coffer/engine"
	"coffer/engine/remote"
)

// TestAdminSocket: while coffer serve holds a repository, operator commands
// on the same --repo run through its admin socket, on the live server: a
// key removal and a lock cut the sessions concerned, relative paths are
// the caller's, backup and a wrong master key are refused with their exit
// codes, and once the server stops the commands open the repository
// themselves again.
func TestAdminSocket(t *testing.T) {
	r := newTestRepo(t, "alice-co")
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "create", "bob-ltd")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("alpha\n"))
	r.must(t, nil, "backup", src)
	keys := t.TempDir()
	mustCoffer(t, nil, "keygen", "--out", filepath.Join(keys, "id"))

	addr, fp, out, stop := startServeStop(t, r.dir)
	if fi, err := os.Stat(filepath.Join(r.dir, adminSocketName)); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("admin socket: %v %v", fi, err)
	}

	// A relative PUBKEYFILE is the caller's, not the server's.
	t.Chdir(keys)
	add := mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "add", "alice-co", "id.pub", "--role", "restore")
	if !strings.Contains(add.stdout, "SHA256:") {
		t.Fatalf("key add through the socket: %s", add)
	}
	list := mustCoffer(t, nil, "--repo", r.dir, "--json", "tenant", "key", "list", "alice-co")
	var ks []struct {
		Fingerprint string `json:"fingerprint"`
	}
	decodeJSON(t, list, &ks)
	if len(ks) != 1 {
		t.Fatalf("keys: %s", list)
	}
	priv, err := remote.ReadPrivateKey(filepath.Join(keys, "id"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cl, err := remote.Dial(ctx, addr, priv, fp)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Snapshots(ctx); err != nil {
		t.Fatal(err)
	}
	// Removing the key through the socket cuts the open session.
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "remove", "alice-co", ks[0].Fingerprint)
	if _, err := cl.Snapshots(ctx); !errors.Is(err, remote.ErrRefused) {
		t.Fatalf("session of a key removed through the admin socket: %v", err)
	}
	if !strings.Contains(out.String(), "conn.cut") {
		t.Fatalf("server log has no cut session:\n%s", out.String())
	}

	// Lifecycle and listings run on the live server.
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "lock", "bob-ltd")
	var ts []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	decodeJSON(t, mustCoffer(t, nil, "--repo", r.dir, "--json", "tenant", "list"), &ts)
	locked := false
	for _, tn := range ts {
		locked = locked || (tn.Name == "bob-ltd" && tn.State == "locked")
	}
	if !locked {
		t.Fatalf("bob-ltd not locked: %+v", ts)
	}
	if res := r.run(t, nil, "snapshots"); res.code != exitOK || !strings.Contains(res.stdout, "1 snapshots") {
		t.Fatalf("snapshots through the socket: %s", res)
	}
	if res := coffer(t, nil, "--repo", r.dir, "--tenant", "bob-ltd", "snapshots"); res.code != exitTenantLocked {
		t.Fatalf("locked tenant through the socket: %s", res)
	} else {
		checkErrorLine(t, res)
	}
	if res := coffer(t, nil, "--repo", r.dir, "scrub"); res.code != exitOK {
		t.Fatalf("scrub through the socket: %s", res)
	}
	if res := coffer(t, nil, "--repo", r.dir, "tenant", "frobnicate"); res.code != exitUsage {
		t.Fatalf("usage error through the socket: %s", res)
	}
	audit := mustCoffer(t, nil, "--repo", r.dir, "audit")
	for _, action := range []string{"tenant.key.add", "tenant.key.remove", "tenant.lock"} {
		if !strings.Contains(audit.stdout, action) {
			t.Fatalf("audit log lacks %s:\n%s", action, audit.stdout)
		}
	}

	// Backup and restore run here as clients of the server, through its
	// data socket; a second serve is refused.
	r.must(t, nil, "backup", src)
	back := t.TempDir()
	r.must(t, nil, "restore", "latest", "--target", back)
	compareTrees(t, src, filepath.Join(back, src))
	res := coffer(t, nil, "--repo", r.dir, "serve", "--listen", "127.0.0.1:0")
	if res.code != exitRepoLocked || !strings.Contains(res.stderr, "holds") {
		t.Fatalf("want exit 11 naming the holder: %s", res)
	}
	checkErrorLine(t, res)
	// A master key of another repository proves nothing.
	other := newTestRepo(t, "")
	res = coffer(t, nil, "--repo", r.dir, "--master-key-file", other.key, "tenant", "list")
	if res.code != exitWrongKey {
		t.Fatalf("wrong master key through the socket: %s", res)
	}
	checkErrorLine(t, res)
	if !strings.Contains(out.String(), "admin.command") {
		t.Fatalf("server log has no admin commands:\n%s", out.String())
	}
	// (Names with "-", which base64 fingerprints never hold.)
	for _, secret := range []string{"alice-co", "bob-ltd", "id.pub"} {
		if strings.Contains(out.String(), secret) {
			t.Fatalf("server log names %q:\n%s", secret, out.String())
		}
	}

	// Stopped: the socket is gone and commands open the repository.
	stop()
	if _, err := os.Stat(filepath.Join(r.dir, adminSocketName)); !os.IsNotExist(err) {
		t.Fatalf("admin socket left behind: %v", err)
	}
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "unlock", "bob-ltd")

	// A socket left by a server that died is ignored.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(r.dir, adminSocketName), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "list")
}

func FuzzAdminFrame(f *testing.F) {
	var b bytes.Buffer
	writeAdminFrame(&b, 'O', []byte("hello"))
	f.Add(b.Bytes())
	f.Add([]byte{'X', 0, 0, 0, 4, 0, 0, 0, 1})
	f.Add([]byte{'R', 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, p, err := readAdminFrame(bytes.NewReader(data), 1<<16)
		if err != nil {
			return
		}
		var again bytes.Buffer
		if err := writeAdminFrame(&again, typ, p); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Bytes(), data[:5+len(p)]) {
			t.Fatalf("frame does not round-trip")
		}
	})
}

type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("test: a bug in a command") }

// TestAdminPanic: a command that panics inside coffer serve ends with exit 1
// for its caller, and the server's engine stays usable.
func TestAdminPanic(t *testing.T) {
	r := newTestRepo(t, "alice")
	e, err := engine.Open(r.dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var logged []string
	a := &adminServer{e: e, log: func(ev string, _ ...any) { logged = append(logged, ev) }}
	var errb bytes.Buffer
	g := &globals{stdin: strings.NewReader(""), stdout: panicWriter{}, stderr: &errb, getenv: func(string) string { return "" }, lent: e}
	if code := a.run(context.Background(), g, []string{"--repo", r.dir, "tenant", "list"}); code != exitError {
		t.Fatalf("exit %d, want %d; stderr %q", code, exitError, errb.String())
	}
	if !strings.Contains(errb.String(), "internal error") || len(logged) != 1 || logged[0] != "admin.panic" {
		t.Fatalf("stderr %q, log %v", errb.String(), logged)
	}
	if _, err := e.Tenants(context.Background()); err != nil {
		t.Fatalf("engine after the panic: %v", err)
	}
}

// TestAdminSocketConcurrent: operator commands through the admin socket run
// at the same time as remote backups and each other, on one engine, and
// nothing fails: scrub --repair, check, a master-key rotation, forget and
// prune, the report and the audit verification, while backups write. (It
// found three races: audit --verify taking a fresh entry for a cut log, a
// tenant read just before a rotation dropped its epoch, and a key file
// read just before a rotation rewrote it.)
func TestAdminSocketConcurrent(t *testing.T) {
	r := newTestRepo(t, "alice")
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "create", "bob")
	keys := t.TempDir()
	var ids []string
	for _, tn := range []string{"alice", "bob"} {
		id := filepath.Join(keys, tn)
		mustCoffer(t, nil, "keygen", "--out", id)
		mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "add", tn, id+".pub", "--role", "backup")
		ids = append(ids, id)
	}
	srcs := make([]string, 2)
	for i := range srcs {
		srcs[i] = filepath.Join(t.TempDir(), "src")
		for j := 0; j < 4; j++ {
			writeFile(t, filepath.Join(srcs[i], fmt.Sprintf("f%d", j)), bytes.Repeat([]byte(fmt.Sprintf("%d-%d ", i, j)), 300000))
		}
	}
	addr, fp, _, _ := startServeStop(t, r.dir)
	var wg sync.WaitGroup
	fails := make(chan string, 64)
	for round := 0; round < 4; round++ {
		for i, id := range ids {
			wg.Go(func() {
				res := coffer(t, nil, "--remote", addr, "--identity", id, "--server-fingerprint", fp, "backup", "--host", "h", "--force", srcs[i])
				if res.code != exitOK {
					fails <- res.String()
				}
			})
		}
		for _, a := range [][]string{{"scrub", "--repair"}, {"check"}, {"key", "rotate"}, {"tenant", "list"}, {"--tenant", "alice", "forget", "--keep-last", "2", "--prune"},
			{"--tenant", "bob", "prune"}, {"report"}, {"drive", "list"}, {"audit", "--verify"}} {
			wg.Go(func() {
				res := coffer(t, nil, append([]string{"--repo", r.dir}, a...)...)
				if res.code != exitOK {
					fails <- res.String()
				}
			})
		}
		wg.Wait()
	}
	close(fails)
	for f := range fails {
		t.Error(f)
	}
	if res := coffer(t, nil, "--repo", r.dir, "check", "--read-data"); res.code != exitOK {
		t.Fatalf("check after the concurrent run: %s", res)
	}
	if res := coffer(t, nil, "--repo", r.dir, "audit", "--verify"); res.code != exitOK {
		t.Fatalf("audit after the concurrent run: %s", res)
	}
}

// TestAdminSocketRefusesMalformed: a request with a relative folder or more
// than four proofs ends the connection without running anything.
func TestAdminSocketRefusesMalformed(t *testing.T) {
	r := newTestRepo(t, "acme-co")
	_, _, out, _ := startServeStop(t, r.dir)
	for name, req := range map[string]adminRequest{
		"relative folder": {Args: []string{"--repo", r.dir, "tenant", "lock", "acme-co"}, Cwd: "rel", Proofs: [][]byte{{1}}},
		"five proofs":     {Args: []string{"--repo", r.dir, "tenant", "lock", "acme-co"}, Cwd: "/", Proofs: make([][]byte, 5)},
	} {
		c, err := net.Dial("unix", filepath.Join(r.dir, adminSocketName))
		if err != nil {
			t.Fatal(err)
		}
		if typ, _, err := readAdminFrame(c, adminNonceSize); err != nil || typ != 'N' {
			t.Fatalf("%s: no nonce: %v", name, err)
		}
		body, _ := json.Marshal(req)
		if err := writeAdminFrame(c, 'R', body); err != nil {
			t.Fatal(err)
		}
		if typ, _, err := readAdminFrame(c, maxAdminFrame); err == nil {
			t.Fatalf("%s: got a %q frame, want the connection closed", name, typ)
		}
		c.Close()
	}
	if !strings.Contains(out.String(), "reason=protocol") || strings.Contains(out.String(), "admin.command") {
		t.Fatalf("server log:\n%s", out.String())
	}
	if res := mustCoffer(t, nil, "--repo", r.dir, "--json", "tenant", "list"); !strings.Contains(res.stdout, `"active"`) {
		t.Fatalf("a refused request changed the tenant: %s", res)
	}
}
