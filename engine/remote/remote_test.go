package remote

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/engine"
)

// fixture is a repository with two tenants, a backup of a small tree in
// each, and a server on loopback.
type fixture struct {
	e      *engine.Engine
	src    string
	snapA  *engine.Snapshot
	snapB  *engine.Snapshot
	addr   string
	fp     string
	events *eventLog
	stop   func()
}

type eventLog struct {
	mu sync.Mutex
	ev []string
}

func (l *eventLog) log(event string, kv ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ev = append(l.ev, fmt.Sprint(append([]any{event}, kv...)...))
}

func (l *eventLog) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.ev {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	e, dir := newTestEngine(t, 1<<20, "alice", "bob")
	src := t.TempDir()
	files := map[string][]byte{
		"a.txt":         []byte("hello remote\n"),
		"sub/big.bin":   bytes.Repeat([]byte("0123456789abcdef"), 200000), // 3.2 MB: several data frames
		"sub/deep/x.md": []byte("# x\n"),
		"empty":         {},
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	f := &fixture{e: e, src: src, events: &eventLog{}}
	for _, name := range []string{"alice", "bob"} {
		tn, err := e.OpenTenant(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		s, err := tn.Backup(ctx, []string{src}, engine.BackupOptions{Host: "h"})
		if err != nil {
			t.Fatal(err)
		}
		if name == "alice" {
			f.snapA = s
		} else {
			f.snapB = s
		}
	}
	if _, created, err := LoadOrCreateServerKey(dir); err != nil || !created {
		t.Fatalf("server key: %v %v", created, err)
	}
	f.addr, f.fp, f.stop = serveOn(t, e, "127.0.0.1:0", Config{Log: f.events.log, IdleTimeout: 5 * time.Second})
	return f
}

// client registers a new key for tenant with roles and dials with it.
func (f *fixture) client(t *testing.T, tenant string, roles ...string) (*Client, ed25519.PrivateKey) {
	t.Helper()
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.AddClientKey(context.Background(), tenant, priv.Public().(ed25519.PublicKey), "", roles); err != nil {
		t.Fatal(err)
	}
	cl, err := Dial(context.Background(), f.addr, priv, f.fp)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl, priv
}

func TestRemoteRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cl, _ := f.client(t, "alice", "restore")
	ss, err := cl.Snapshots(ctx)
	if err != nil || len(ss) != 1 || ss[0].ID != f.snapA.ID {
		t.Fatalf("Snapshots = %v, %v", ss, err)
	}
	var paths []string
	if err := cl.List(ctx, "latest", "/", func(en engine.Entry) error { paths = append(paths, en.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(paths) < 6 {
		t.Fatalf("List: %v", paths)
	}
	var buf bytes.Buffer
	if err := cl.Dump(ctx, f.snapA.ID[:8], filepath.Join(f.src, "sub/big.bin"), &buf); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(f.src, "sub/big.bin"))
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("Dump: %d bytes, want %d", buf.Len(), len(want))
	}
	target := t.TempDir()
	st, err := cl.Restore(ctx, "latest", target, engine.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 4 || len(st.Warnings) != 0 {
		t.Fatalf("Restore stats %+v", st)
	}
	for _, name := range []string{"a.txt", "sub/big.bin", "sub/deep/x.md", "empty"} {
		got, err := os.ReadFile(filepath.Join(target, f.src, name))
		want, _ := os.ReadFile(filepath.Join(f.src, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s restored differently: %v", name, err)
		}
		fi, _ := os.Stat(filepath.Join(target, f.src, name))
		wi, _ := os.Stat(filepath.Join(f.src, name))
		if fi == nil || fi.Mode() != wi.Mode() || !fi.ModTime().Equal(wi.ModTime()) {
			t.Errorf("%s: mode or time differ", name)
		}
	}
	if l, err := os.Readlink(filepath.Join(target, f.src, "link")); err != nil || l != "a.txt" {
		t.Errorf("link: %q %v", l, err)
	}
	// Only some paths.
	target2 := t.TempDir()
	if _, err := cl.Restore(ctx, "latest", target2, engine.RestoreOptions{Includes: []string{filepath.Join(f.src, "sub/deep")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(target2, f.src, "a.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("include: a.txt restored too (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(target2, f.src, "sub/deep/x.md")); err != nil {
		t.Errorf("include: %v", err)
	}
}

func TestRemoteRefusedBeforeData(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// Unregistered key.
	stranger, _ := GenerateKey()
	if _, err := Dial(ctx, f.addr, stranger, f.fp); !errors.Is(err, ErrRefused) {
		t.Fatalf("unregistered key: %v", err)
	}
	// Wrong server fingerprint: the client stops in the handshake, before
	// its certificate goes out, so the server sees no key at all.
	cl, priv := f.client(t, "alice", "restore")
	cl.Close()
	wrongFP := engine.KeyFingerprint(stranger.Public().(ed25519.PublicKey))
	if _, err := Dial(ctx, f.addr, priv, wrongFP); !errors.Is(err, ErrFingerprint) {
		t.Fatalf("wrong fingerprint: %v", err)
	}
	// Plain TCP: no TLS, no answer but a closed connection.
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	frame := &bytes.Buffer{}
	writeFrame(frame, request{Op: opSnapshots}, nil)
	c.Write(frame.Bytes())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c)
	c.Close()
	if bytes.Contains(got, []byte("snapshots")) || bytes.Contains(got, []byte(f.snapA.ID)) {
		t.Fatalf("plain TCP got an answer: %q", got)
	}
	// Removed key: an open session is cut at once (its next request gets
	// the refusal without being served), and a new connection is refused
	// like an unknown key.
	cl, priv = f.client(t, "alice", "restore")
	if _, err := cl.Snapshots(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.e.RemoveClientKey(ctx, "alice", engine.KeyFingerprint(priv.Public().(ed25519.PublicKey))); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Snapshots(ctx); !errors.Is(err, ErrRefused) {
		t.Fatalf("removed key, open session: %v", err)
	}
	if _, err := Dial(ctx, f.addr, priv, f.fp); !errors.Is(err, ErrRefused) {
		t.Fatalf("removed key, new session: %v", err)
	}
	// Locked tenant: same.
	cl, priv = f.client(t, "bob", "restore")
	if _, err := f.e.LockTenant(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Snapshots(ctx); !errors.Is(err, ErrRefused) {
		t.Fatalf("locked tenant, open session: %v", err)
	}
	if _, err := Dial(ctx, f.addr, priv, f.fp); !errors.Is(err, ErrRefused) {
		t.Fatalf("locked tenant, new session: %v", err)
	}
	if n := f.events.count("request"); n != 1 {
		t.Errorf("%d requests served, want 1 (refused connections and cut sessions must not reach a request)", n)
	}
	if n := f.events.count("conn.cut"); n != 2 {
		t.Errorf("%d sessions cut, want 2", n)
	}
}

// TestRemoteTenantIsolation: a key of alice asking for bob's real snapshot
// gets the answer a random ID gets, byte for byte once the ID is masked.
func TestRemoteTenantIsolation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cl, _ := f.client(t, "alice", "restore")
	random := strings.Repeat("5a", 16)
	probe := func(ref string) string {
		var msgs []string
		err := cl.List(ctx, ref, "/", func(engine.Entry) error { return nil })
		msgs = append(msgs, fmt.Sprint(err))
		err = cl.Dump(ctx, ref, "/x", io.Discard)
		msgs = append(msgs, fmt.Sprint(err))
		_, err = cl.Restore(ctx, ref, t.TempDir(), engine.RestoreOptions{})
		msgs = append(msgs, fmt.Sprint(err))
		return strings.ReplaceAll(strings.Join(msgs, "|"), ref, "REF")
	}
	a, b := probe(f.snapB.ID), probe(random)
	if a != b {
		t.Fatalf("bob's snapshot and a random ID answered differently:\n%s\n%s", a, b)
	}
	if !strings.Contains(a, "snapshot not found") {
		t.Fatalf("answer: %s", a)
	}
	ss, err := cl.Snapshots(ctx)
	if err != nil || len(ss) != 1 || ss[0].ID != f.snapA.ID {
		t.Fatalf("alice sees %v, %v", ss, err)
	}
}

func TestRemoteRoles(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cl, _ := f.client(t, "alice", "backup")
	if _, err := cl.Snapshots(ctx); err != nil {
		t.Fatalf("backup role lists snapshots: %v", err)
	}
	if err := cl.List(ctx, "latest", "/", func(engine.Entry) error { return nil }); err != nil {
		t.Fatalf("backup role reads trees: %v", err)
	}
	if err := cl.Dump(ctx, "latest", filepath.Join(f.src, "a.txt"), io.Discard); !errors.Is(err, ErrRefused) {
		t.Fatalf("backup role dump: %v", err)
	}
}

func TestRemoteServerKeyAndOpenSSH(t *testing.T) {
	dir := t.TempDir()
	k1, created, err := LoadOrCreateServerKey(dir)
	if err != nil || !created {
		t.Fatal(created, err)
	}
	fi, err := os.Stat(filepath.Join(dir, ServerKeyName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server key mode %v %v", fi.Mode(), err)
	}
	k2, created, err := LoadOrCreateServerKey(dir)
	if err != nil || created || !k1.Equal(k2) {
		t.Fatalf("server key did not survive: %v %v", created, err)
	}
	// Key pairs written by keygen read back.
	p := filepath.Join(dir, "id")
	priv, _ := GenerateKey()
	if err := WriteKeyPair(p, priv, "me@host"); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyPair(p, priv, ""); err == nil {
		t.Fatal("WriteKeyPair overwrote a key")
	}
	back, err := ReadPrivateKey(p)
	if err != nil || !back.Equal(priv) {
		t.Fatalf("ReadPrivateKey: %v", err)
	}
	pub, comment, err := ReadPublicKey(p + ".pub")
	if err != nil || !pub.Equal(priv.Public()) || comment != "me@host" {
		t.Fatalf("ReadPublicKey: %v %q", err, comment)
	}
	// OpenSSH keys from ssh-keygen, with the same fingerprint it prints.
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("no ssh-keygen")
	}
	sp := filepath.Join(dir, "ssh")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "c", "-f", sp).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	spriv, err := ReadPrivateKey(sp)
	if err != nil {
		t.Fatal(err)
	}
	spub, _, err := ReadPublicKey(sp + ".pub")
	if err != nil || !spub.Equal(spriv.Public()) {
		t.Fatalf("OpenSSH public key: %v", err)
	}
	out, err := exec.Command("ssh-keygen", "-l", "-E", "sha256", "-f", sp+".pub").Output()
	if err != nil {
		t.Fatal(err)
	}
	if fp := engine.KeyFingerprint(spub); !strings.Contains(string(out), fp) {
		t.Fatalf("fingerprint %s, ssh-keygen says %s", fp, out)
	}
	// And ssh-keygen reads ours.
	out, err = exec.Command("ssh-keygen", "-l", "-E", "sha256", "-f", p+".pub").Output()
	if err != nil || !strings.Contains(string(out), engine.KeyFingerprint(pub)) {
		t.Fatalf("ssh-keygen on our key: %v %s", err, out)
	}
}

func TestRemoteFrameLimits(t *testing.T) {
	var b bytes.Buffer
	b.Write([]byte{0, 0x10, 0, 0, 0, 0, 0, 0}) // header of 1 MiB > MaxHeader
	var r request
	if _, err := readFrame(&b, &r); !errors.Is(err, ErrProtocol) {
		t.Fatalf("oversized header: %v", err)
	}
}

// FuzzReadFrame: frames come from the network.
func FuzzReadFrame(f *testing.F) {
	var b bytes.Buffer
	writeFrame(&b, request{Op: "ls", Snapshot: "latest"}, []byte("x"))
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		var r request
		readFrame(bytes.NewReader(data), &r)
	})
}

// TestRemoteGracefulShutdown: stopping the server with an idle session open
// returns at once (not after the idle timeout) and ends the session.
func TestRemoteGracefulShutdown(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cl, _ := f.client(t, "alice", "restore")
	if _, err := cl.Snapshots(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.stop()
	f.stop = nil
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	if _, err := cl.Snapshots(ctx); err == nil {
		t.Fatal("session survived shutdown")
	}
	if _, err := net.DialTimeout("tcp", f.addr, time.Second); err == nil {
		t.Fatal("still listening")
	}
}
