package remote

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/engine"
	"coffer/engine/tree"
)

// wrongSigner claims the public key pub but signs with key: a client that
// presents someone else's public key without holding its private key.
type wrongSigner struct {
	pub ed25519.PublicKey
	key ed25519.PrivateKey
}

func (w wrongSigner) Public() crypto.PublicKey { return w.pub }
func (w wrongSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return w.key.Sign(r, d, o)
}

// rawTLS dials addr with a certificate for pub whose signatures come from
// signer, and returns what the client sees: the handshake's outcome, the
// bytes the server sent after it (up to EOF, an error or 5 s) and the
// read's end, as one string; the bytes; and the time from the end of the
// client's handshake to the first answer.
func rawTLS(t *testing.T, addr string, pub ed25519.PublicKey, signer crypto.Signer) (string, []byte, time.Duration) {
	t.Helper()
	ans, data, d := rawTLSErr(addr, pub, signer)
	if strings.HasPrefix(ans, "setup: ") {
		t.Fatal(ans)
	}
	return ans, data, d
}

// rawTLSErr is rawTLS without a test; a failure to make the certificate or
// to connect is returned as "setup: …".
func rawTLSErr(addr string, pub ed25519.PublicKey, signer crypto.Signer) (string, []byte, time.Duration) {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	// The certificate's own signature proves nothing (the server does not
	// check it): a forger signs it with the key it holds.
	certKey, parent := signer, tmpl
	if ws, ok := signer.(wrongSigner); ok {
		certKey = ws.key
		parent = &x509.Certificate{SerialNumber: big.NewInt(2), PublicKey: ws.key.Public()}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, certKey)
	if err != nil {
		return "setup: " + err.Error(), nil, 0
	}
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		return "setup: " + err.Error(), nil, 0
	}
	defer raw.Close()
	c := tls.Client(raw, &tls.Config{
		MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: []string{alpnProto},
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: signer}},
	})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var sb strings.Builder
	if err := c.Handshake(); err != nil {
		fmt.Fprintf(&sb, "handshake: %v", err)
		return sb.String(), nil, 0
	}
	shaken := time.Now()
	var got bytes.Buffer
	buf := make([]byte, 4096)
	var first time.Duration
	for {
		n, err := c.Read(buf)
		if first == 0 && (n > 0 || err != nil) {
			first = time.Since(shaken)
		}
		got.Write(buf[:n])
		if b := got.Bytes(); len(b) >= 8 && len(b) >= 8+int(b[3])+int(b[2])<<8+int(b[7])+int(b[6])<<8 {
			// A whole frame: a refused connection closes next, an
			// admitted one waits for a request.
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		}
		if err != nil {
			fmt.Fprintf(&sb, "handshake ok; read %q; then %v", got.Bytes(), err)
			return sb.String(), got.Bytes(), first
		}
	}
}

// TestRemoteRefusalsUniform: the answers before admission tell nothing
// about which keys are registered. A client presenting a public key with a
// signature by another key (no private key) gets byte-identical answers
// for a stranger's key, an active tenant's, a locked tenant's, a removed
// key and a shredded tenant's, in the same time: the handshake checks the
// signature before anything looks at the key. A client holding its key
// gets the one refusal frame for an unknown key, a removed key and a
// locked or shredded tenant, at RefusalDelay after its handshake. On the
// code before, a forged signature over an active tenant's key got "error
// decrypting message" where the others got "bad certificate", 0.85 ms
// later.
func TestRemoteRefusalsUniform(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// The refusals must come no sooner than this after the client's
	// handshake; the client's own clock starts late by its scheduling
	// delay, so the check allows slack.
	const delay, slack = 150 * time.Millisecond, 50 * time.Millisecond
	addr, _ := f.startServer(t, Config{RefusalDelay: delay})
	newKey := func(tenant string) ed25519.PrivateKey {
		priv, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if tenant != "" {
			if _, err := f.e.AddClientKey(ctx, tenant, priv.Public().(ed25519.PublicKey), "", []string{"backup"}); err != nil {
				t.Fatal(err)
			}
		}
		return priv
	}
	if _, err := f.e.CreateTenant(ctx, "carol", engine.TenantOptions{}); err != nil {
		t.Fatal(err)
	}
	keys := map[string]ed25519.PrivateKey{
		"stranger": newKey(""),
		"active":   newKey("alice"),
		"locked":   newKey("bob"),
		"removed":  newKey("alice"),
		"shredded": newKey("carol"),
	}
	if _, err := f.e.LockTenant(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := f.e.RemoveClientKey(ctx, "alice", engine.KeyFingerprint(keys["removed"].Public().(ed25519.PublicKey))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.LockTenant(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.ShredTenant(ctx, "carol", "carol"); err != nil {
		t.Fatal(err)
	}
	pubOf := func(name string) ed25519.PublicKey { return keys[name].Public().(ed25519.PublicKey) }
	forger, _ := GenerateKey()
	names := []string{"stranger", "active", "locked", "removed", "shredded"}

	// Forged signatures: one answer for every key.
	forged := map[string]string{}
	for _, n := range names {
		forged[n], _, _ = rawTLS(t, addr, pubOf(n), wrongSigner{pub: pubOf(n), key: forger})
	}
	for _, n := range names {
		if forged[n] != forged["stranger"] {
			t.Errorf("forged signature over the %s key: %s\nover a stranger's key: %s", n, forged[n], forged["stranger"])
		}
	}
	if strings.Contains(forged["stranger"], "hello") {
		t.Fatalf("a forged signature was admitted: %s", forged["stranger"])
	}
	t.Logf("forged signature: %s", forged["stranger"])

	// Real signatures: one refusal frame for every key not admitted, at
	// the same time.
	var want bytes.Buffer
	writeFrame(&want, refusedKey, nil)
	real := map[string]string{}
	var refusal []byte
	for _, n := range names {
		ans, data, d := rawTLS(t, addr, pubOf(n), keys[n])
		real[n] = ans
		if n == "stranger" {
			refusal = data
		}
		if n != "active" && d < delay-slack {
			t.Errorf("%s key refused %v after the handshake, before the refusal delay %v", n, d, delay)
		}
	}
	if !strings.Contains(real["active"], `\"hello\"`) {
		t.Fatalf("the active key was not admitted: %s", real["active"])
	}
	for _, n := range names[2:] {
		if real[n] != real["stranger"] {
			t.Errorf("%s key: %s\nunknown key: %s", n, real[n], real["stranger"])
		}
	}
	if !bytes.Equal(refusal, want.Bytes()) {
		t.Errorf("refusal %s is not the refusal frame %q", real["stranger"], want.Bytes())
	}
	if _, err := Dial(ctx, addr, keys["locked"], f.fp); !errors.Is(err, ErrRefused) {
		t.Errorf("Dial with the locked tenant's key: %v", err)
	}

	if testing.Short() {
		return
	}
	// Timing, as TestRemoteTimingIsolation measures it: pairs in
	// alternating order, medians and trimmed means.
	measure := func(kind string, a, b string, pairs int, run func(name string) time.Duration) {
		var da, db []time.Duration
		for i := 0; i < pairs; i++ {
			order := []string{a, b}
			if i%2 == 1 {
				order = []string{b, a}
			}
			for _, n := range order {
				d := run(n)
				if n == a {
					da = append(da, d)
				} else {
					db = append(db, d)
				}
			}
		}
		ma, mb := medianDuration(da), medianDuration(db)
		ta, tb := trimmedMeanDuration(da, 0.1), trimmedMeanDuration(db, 0.1)
		t.Logf("%s: %s median %v trimmed %v | %s median %v trimmed %v", kind, a, ma, ta, b, mb, tb)
		if timingDiffers(ma, mb, timingRel) && timingDiffers(ta, tb, timingRel) {
			t.Errorf("%s: %s and %s take measurably different times", kind, a, b)
		}
	}
	measure("forged handshake", "stranger", "active", 40, func(n string) time.Duration {
		start := time.Now()
		rawTLS(t, addr, pubOf(n), wrongSigner{pub: pubOf(n), key: forger})
		return time.Since(start)
	})
	measure("refusal", "stranger", "locked", 20, func(n string) time.Duration {
		_, _, d := rawTLS(t, addr, pubOf(n), keys[n])
		return d
	})
}

// floodFrom opens n TCP connections to addr that send nothing, from the
// loopback source addresses src(i); they close at cleanup.
func floodFrom(t *testing.T, addr string, n int, src func(i int) string) {
	t.Helper()
	var conns []net.Conn
	for i := 0; i < n; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src(i))}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
}

// TestRemoteHandshakeFlood: 200 idle TCP connections (from one address, or
// from 200) do not keep a customer out: connections in the handshake have
// their own budget, a share per source address, and the oldest makes room
// for a newcomer. On the code before, they held every connection place for
// the handshake timeout and the customer's snapshots failed with EOF.
func TestRemoteHandshakeFlood(t *testing.T) {
	for _, c := range []struct {
		name string
		src  func(i int) string
	}{
		{"one-address", func(int) string { return "127.0.0.2" }},
		{"many-addresses", func(i int) string { return fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			priv, err := GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.e.AddClientKey(ctx, "alice", priv.Public().(ed25519.PublicKey), "", []string{"backup"}); err != nil {
				t.Fatal(err)
			}
			addr, events := f.startServer(t, Config{HandshakeTimeout: 30 * time.Second})
			floodFrom(t, addr, 200, c.src)
			time.Sleep(200 * time.Millisecond) // the server has accepted them
			for i := 0; i < 3; i++ {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				cl, err := Dial(cctx, addr, priv, f.fp)
				if err != nil {
					cancel()
					t.Fatalf("customer's connection %d during the flood: %v", i, err)
				}
				ss, err := cl.Snapshots(cctx)
				cl.Close()
				cancel()
				if err != nil || len(ss) != 1 {
					t.Fatalf("customer's snapshots during the flood: %d, %v", len(ss), err)
				}
			}
			if !events.contains("idle") {
				t.Errorf("no idle connection of the flood lost its place")
			}
		})
	}
}

// TestRemoteBackupPlacePerTenant: a tenant's extra backup sessions wait for
// the tenant's own lock without taking a backup place, so another tenant's
// backup starts at once. On the code before, they took every place first
// and the other tenant waited for BackupWait, then got busy.
func TestRemoteBackupPlacePerTenant(t *testing.T) {
	f := newIngestFixture(t)
	f.stop()
	addr, fp, _ := serveOn(t, f.e, "127.0.0.1:0", Config{MaxBackups: 2, BackupWait: 20 * time.Second})
	f.addr, f.fp = addr, fp
	alice := f.key(t, "alice", "backup")
	first := f.dial(t, alice)
	session(t, first) // holds alice's lock and a place
	clients := []*Client{first}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		cl := f.dial(t, alice)
		clients = append(clients, cl)
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &uploader{cl: cl, known: map[[32]byte]struct{}{}}
			w.begin(context.Background()) // waits for alice's lock until the connections close
		}()
	}
	time.Sleep(300 * time.Millisecond) // alice's extra sessions wait
	bob := f.dial(t, f.key(t, "bob", "backup"))
	start := time.Now()
	w := session(t, bob)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("bob's backup waited %v for a place", d)
	}
	if _, err := w.commit(context.Background(), &engine.Snapshot{Time: time.Now(), Host: "h", Paths: []string{"/x"}, Tree: emptyTree(t, w)}); err != nil {
		t.Fatalf("bob's commit: %v", err)
	}
	for _, cl := range clients {
		cl.Close()
	}
	wg.Wait()
}

// emptyTree uploads an empty tree in w's session and returns its ID.
func emptyTree(t *testing.T, w *uploader) string {
	t.Helper()
	enc, err := (&tree.Tree{}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	id := w.hasher.Sum(enc)
	if err := w.put(context.Background(), []putBlob{{typ: engine.TreeBlob, id: id, data: enc}}); err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// chainUpload uploads a chain of depth folders named by name(level) in w's
// session (deepest first, batches of about 4 MiB) and returns the root's
// ID, or the first put's error.
func chainUpload(t *testing.T, w *uploader, depth int, name func(int) string) (string, error) {
	t.Helper()
	return soakChain(w, depth, name)
}

// TestRemoteHostileTrees: a backup key's hostile trees are refused and the
// server goes on serving: a chain of 400 folders with 64 KiB names (the
// put is refused: names over MaxNameLen), the same chain with 4000-byte
// names (the commit is refused: its paths are 1.6 MB, and measuring it
// keeps no paths), and 41 trees of 2 folders each describing 2^40 paths
// (refused at commit, within seconds). Nothing is recorded, another
// tenant is served throughout, and check is clean. On the code before, the
// first ran the server out of memory and the last was recorded (and its
// listing never ended).
func TestRemoteHostileTrees(t *testing.T) {
	f := newIngestFixture(t)
	ctx := context.Background()
	cl := f.dial(t, f.key(t, "alice", "backup"))
	bob := f.dial(t, f.key(t, "bob", "backup"))
	bobServed := func() {
		t.Helper()
		if _, err := bob.Snapshots(ctx); err != nil {
			t.Fatalf("bob is not served: %v", err)
		}
	}

	w := session(t, cl)
	if _, err := chainUpload(t, w, 400, func(int) string { return strings.Repeat("n", 64<<10) }); !errors.Is(err, engine.ErrTreeLimit) {
		t.Fatalf("put of 64 KiB names: %v", err)
	}
	bobServed()

	root, err := chainUpload(t, w, 400, func(l int) string { return fmt.Sprintf("%04d", l) + strings.Repeat("x", 3996) })
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = w.commit(context.Background(), &engine.Snapshot{Time: time.Now(), Host: "h", Paths: []string{"/x"}, Tree: root})
	if !errors.Is(err, engine.ErrTreeLimit) || !strings.Contains(err.Error(), "path longer than") {
		t.Fatalf("commit of the deep chain: %v", err)
	}
	t.Logf("deep chain refused in %v: %v", time.Since(start), err)
	bobServed()

	w = session(t, cl)
	enc, _ := (&tree.Tree{}).Encode()
	below := w.hasher.Sum(enc)
	blobs := []putBlob{{typ: engine.TreeBlob, id: below, data: enc}}
	for l := 0; l < 40; l++ {
		enc, err := (&tree.Tree{Nodes: []tree.Node{
			{Name: "a", Type: tree.Dir, Mode: 0o755, Subtree: tree.ID(below)},
			{Name: "b", Type: tree.Dir, Mode: 0o755, Subtree: tree.ID(below)},
		}}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		below = w.hasher.Sum(enc)
		blobs = append(blobs, putBlob{typ: engine.TreeBlob, id: below, data: enc})
	}
	if err := w.put(context.Background(), blobs); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = w.commit(context.Background(), &engine.Snapshot{Time: time.Now(), Host: "h", Paths: []string{"/x"}, Tree: below.String()})
	if !errors.Is(err, engine.ErrTreeLimit) || !strings.Contains(err.Error(), "entries counted per path") {
		t.Fatalf("commit of the 2^40 DAG: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("refusing the DAG took %v", d)
	}
	bobServed()
	if ss, err := cl.Snapshots(ctx); err != nil || len(ss) != 0 {
		t.Fatalf("alice has %d snapshots (%v), want none", len(ss), err)
	}
	checkRepo(t, f.e)
}

// TestRemoteLogBounded: an unknown operation is logged as "unknown", and
// nothing the client sent reaches the log (a 60 000-byte operation name).
// On the code before, the log line held the name verbatim.
func TestRemoteLogBounded(t *testing.T) {
	f := newFixture(t)
	cl, _ := f.client(t, "alice", "backup")
	op := strings.Repeat("x", 60000)
	ans, _ := probeRoundTrip(t, cl, request{Op: op}, nil, nil)
	if !strings.Contains(ans, "error/invalid/") || len(ans) > 1000 {
		t.Fatalf("answer to an unknown operation: %.300s", ans)
	}
	if _, err := cl.Snapshots(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.events.mu.Lock()
	defer f.events.mu.Unlock()
	found := false
	for _, e := range f.events.ev {
		if strings.Contains(e, "xxxxxxxx") {
			t.Fatalf("the client's operation reached the log: %.200s…", e)
		}
		if len(e) > 2000 {
			t.Fatalf("log line of %d bytes: %.200s…", len(e), e)
		}
		if strings.HasPrefix(e, "request") && strings.Contains(e, "opunknown") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no request logged with op unknown: %q", f.events.ev)
	}
}
