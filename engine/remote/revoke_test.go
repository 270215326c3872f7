package remote

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/engine"
)

// startServer serves f's engine on a second listener with cfg (its Log goes
// to the returned event log) and returns its address.
func (f *fixture) startServer(t *testing.T, cfg Config) (string, *eventLog) {
	t.Helper()
	events := &eventLog{}
	cfg.Log = events.log
	addr, _, _ := serveOn(t, f.e, "127.0.0.1:0", cfg)
	return addr, events
}

func (l *eventLog) contains(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.ev {
		if strings.Contains(e, sub) {
			return true
		}
	}
	return false
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestRemoteCutOnRevoke: removing a key cuts its idle session at once (the
// client learns why at its next request), and locking a tenant cuts its
// backup in progress instead of waiting for it. The idle timeout is a
// minute, so without the cut the lock would wait that long and the test
// would time out.
func TestRemoteCutOnRevoke(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	addr, events := f.startServer(t, Config{IdleTimeout: time.Minute})
	dial := func(tenant string, roles ...string) (*Client, ed25519.PrivateKey) {
		priv, _ := GenerateKey()
		if _, err := f.e.AddClientKey(ctx, tenant, priv.Public().(ed25519.PublicKey), "", roles); err != nil {
			t.Fatal(err)
		}
		cl, err := Dial(ctx, addr, priv, f.fp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl, priv
	}

	// An idle session of a removed key.
	cl, priv := dial("alice", "restore")
	other, _ := dial("alice", "restore")
	if _, err := cl.Snapshots(ctx); err != nil {
		t.Fatal(err)
	}
	fp := engine.KeyFingerprint(priv.Public().(ed25519.PublicKey))
	if err := f.e.RemoveClientKey(ctx, "alice", fp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed key's session to be cut", func() bool { return events.count("conn.close") == 1 })
	if events.count("conn.cut") != 1 {
		t.Fatalf("cut sessions: %d, want 1 (only the removed key's)", events.count("conn.cut"))
	}
	if _, err := cl.Snapshots(ctx); !errors.Is(err, ErrRefused) {
		t.Fatalf("cut session: %v, want ErrRefused", err)
	}
	if _, err := other.Snapshots(ctx); err != nil {
		t.Fatalf("the tenant's other key lost its session: %v", err)
	}

	// A backup in progress of a tenant being locked.
	bob, _ := dial("bob", "backup")
	pr, pw := io.Pipe()
	type result struct {
		s   *engine.Snapshot
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := bob.BackupStream(ctx, pr, "db.dump", BackupOptions{Host: "h"})
		done <- result{s, err}
	}()
	waitFor(t, "bob's backup session to begin", func() bool { return events.contains("op" + opBegin) })
	go pw.Write(make([]byte, 1<<20)) // the session is mid-stream
	start := time.Now()
	if _, err := f.e.LockTenant(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("lock waited %v for the backup session", d)
	}
	pw.CloseWithError(errors.New("end of test stream"))
	if r := <-done; r.err == nil {
		t.Fatalf("the cut backup saved snapshot %s", r.s.ID)
	}
	tn, err := f.e.OpenTenant(ctx, "bob")
	if err == nil {
		ss, _ := tn.Snapshots(ctx)
		if len(ss) != 1 {
			t.Fatalf("bob has %d snapshots after the cut backup, want 1", len(ss))
		}
	} else if !errors.Is(err, engine.ErrTenantLocked) {
		t.Fatal(err)
	}
	if _, err := other.Snapshots(ctx); err != nil {
		t.Fatalf("locking bob cut alice: %v", err)
	}
}

// TestRemoteTenantConnLimit: one tenant cannot hold more than
// MaxTenantConns sessions; other tenants are unaffected, and a closed
// session frees its place.
func TestRemoteTenantConnLimit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	addr, events := f.startServer(t, Config{MaxTenantConns: 2})
	key := func(tenant string) ed25519.PrivateKey {
		priv, _ := GenerateKey()
		if _, err := f.e.AddClientKey(ctx, tenant, priv.Public().(ed25519.PublicKey), "", []string{"restore"}); err != nil {
			t.Fatal(err)
		}
		return priv
	}
	a := key("alice")
	var open []*Client
	for i := 0; i < 2; i++ {
		cl, err := Dial(ctx, addr, a, f.fp)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, cl)
	}
	if _, err := Dial(ctx, addr, key("alice"), f.fp); !errors.Is(err, ErrBusy) {
		t.Fatalf("third session of alice: %v, want ErrBusy", err)
	}
	b, err := Dial(ctx, addr, key("bob"), f.fp)
	if err != nil {
		t.Fatalf("bob refused while alice is at her limit: %v", err)
	}
	b.Close()
	open[0].Close()
	waitFor(t, "a closed session to free its place", func() bool { return events.count("conn.close") >= 2 })
	cl, err := Dial(ctx, addr, a, f.fp)
	if err != nil {
		t.Fatalf("after a close: %v", err)
	}
	cl.Close()
	open[1].Close()
}

// TestRemoteFingerprintList: during a server-key rotation a client pins the
// old and the new fingerprint; any listed one is accepted, none other.
func TestRemoteFingerprintList(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	priv, _ := GenerateKey()
	if _, err := f.e.AddClientKey(ctx, "alice", priv.Public().(ed25519.PublicKey), "", []string{"restore"}); err != nil {
		t.Fatal(err)
	}
	other, _ := GenerateKey()
	otherFP := engine.KeyFingerprint(other.Public().(ed25519.PublicKey))
	cl, err := Dial(ctx, f.addr, priv, otherFP+", "+f.fp)
	if err != nil {
		t.Fatalf("new fingerprint second in the list: %v", err)
	}
	cl.Close()
	if _, err := Dial(ctx, f.addr, priv, otherFP+","+otherFP); !errors.Is(err, ErrFingerprint) {
		t.Fatalf("no listed fingerprint matches: %v", err)
	}
	if _, err := Dial(ctx, f.addr, priv, f.fp+",md5:00"); !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("malformed entry: %v", err)
	}
}

// TestRemoteMaxBackups: with one backup place, a second tenant's backup
// waits for it (up to BackupWait, then busy) and runs once the first ends.
func TestRemoteMaxBackups(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	addr, _ := f.startServer(t, Config{MaxBackups: 1, BackupWait: 3 * time.Second})
	dial := func(tenant string) *Client {
		priv, _ := GenerateKey()
		if _, err := f.e.AddClientKey(ctx, tenant, priv.Public().(ed25519.PublicKey), "", []string{"backup"}); err != nil {
			t.Fatal(err)
		}
		cl, err := Dial(ctx, addr, priv, f.fp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	alice, bob := dial("alice"), dial("bob")
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := alice.BackupStream(ctx, pr, "a.bin", BackupOptions{Host: "h"})
		done <- err
	}()
	pw.Write([]byte("alice's first bytes")) // her session is open once the walker reads
	if _, err := bob.BackupStream(ctx, strings.NewReader("bob"), "b.bin", BackupOptions{Host: "h"}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second backup with one place: %v, want ErrBusy", err)
	}
	// Bob waits for the place; alice ends within his wait.
	bobDone := make(chan error, 1)
	go func() {
		_, err := bob.BackupStream(ctx, strings.NewReader("bob"), "b.bin", BackupOptions{Host: "h"})
		bobDone <- err
	}()
	time.Sleep(100 * time.Millisecond)
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-bobDone; err != nil {
		t.Fatalf("backup that waited for the place: %v", err)
	}
}

// TestConfigDefaults: a zero Config gets every limit, and a backup waits
// for a place as long as a client may stay idle (a zero wait made every
// other backup busy).
func TestConfigDefaults(t *testing.T) {
	var c Config
	c.fill()
	if c.MaxConns <= 0 || c.MaxTenantConns <= 0 || c.MaxBackups <= 0 || c.IdleTimeout <= 0 ||
		c.MaxHandshakes <= 0 || c.MaxHandshakesPerAddr <= 0 || c.RefusalDelay <= 0 ||
		c.HandshakeTimeout <= 0 || c.WriteTimeout <= 0 || c.ShutdownTimeout <= 0 || c.Log == nil {
		t.Fatalf("zero Config left a limit unset: %+v", c)
	}
	if c.BackupWait != c.IdleTimeout {
		t.Fatalf("BackupWait %v, want the idle timeout %v", c.BackupWait, c.IdleTimeout)
	}
}

// TestRemotePanicEndsOneSession: a panic while serving one session (here
// from the log, at its first request) ends that session only; the server
// goes on serving others.
func TestRemotePanicEndsOneSession(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var mu sync.Mutex
	var events []string
	panicked := false
	addr, _, _ := serveOn(t, f.e, "127.0.0.1:0", Config{Log: func(ev string, _ ...any) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, ev)
		if ev == "request" && !panicked {
			panicked = true
			panic("test: a bug while serving")
		}
	}})
	priv, _ := GenerateKey()
	if _, err := f.e.AddClientKey(ctx, "alice", priv.Public().(ed25519.PublicKey), "", []string{"restore"}); err != nil {
		t.Fatal(err)
	}
	first, err := Dial(ctx, addr, priv, f.fp)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := first.Snapshots(ctx); err == nil {
		t.Fatal("the session that met the panic went on")
	}
	second, err := Dial(ctx, addr, priv, f.fp)
	if err != nil {
		t.Fatalf("server gone after a panic: %v", err)
	}
	defer second.Close()
	if _, err := second.Snapshots(ctx); err != nil {
		t.Fatalf("server after a panic: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(events, "conn.panic") {
		t.Fatalf("no conn.panic event: %v", events)
	}
}
