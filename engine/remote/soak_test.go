package remote

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"coffer/engine"
	"coffer/engine/tree"
)

// TestSoak: a `coffer serve` process serves 32 honest clients (16 tenants,
// two keys each) that back up, list and restore in a loop for several
// minutes, while a hostile client loops over the attacks of issue 14:
// forged signatures over registered keys, refused keys, idle connection
// floods from one address and from many, a tenant's backup sessions
// hogging places, trees with 64 KiB names, a deep chain with long names, a
// 2^40-path DAG, unknown operations with huge names and oversized frames.
// Every honest operation must succeed (every restore byte-identical), every
// attack must be answered as designed, the server's RSS must stay under
// COFFER_SOAK_MAX_RSS_MB (default 1024), its log lines short, and check
// --read-data must be clean afterwards. It logs the figures
// (docs/benchmarks.md).
//
// Skipped unless COFFER_SOAK=1; COFFER_SOAK_DURATION sets the length
// (default 3m):
//
//	COFFER_SOAK=1 COFFER_SOAK_DURATION=5m go test -run TestSoak -v -timeout 60m ./engine/remote/
func TestSoak(t *testing.T) {
	if os.Getenv("COFFER_SOAK") != "1" {
		t.Skip("the soak runs for minutes: set COFFER_SOAK=1 (and COFFER_SOAK_DURATION)")
	}
	dur := 3 * time.Minute
	if v := os.Getenv("COFFER_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("COFFER_SOAK_DURATION=%q: %v", v, err)
		}
		dur = d
	}
	maxRSS := int64(1024)
	if v := os.Getenv("COFFER_SOAK_MAX_RSS_MB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("COFFER_SOAK_MAX_RSS_MB=%q", v)
		}
		maxRSS = n
	}
	const tenants, perTenant = 16, 2
	ctx := context.Background()

	bin := filepath.Join(t.TempDir(), "coffer")
	if out, err := exec.Command("go", "build", "-o", bin, "coffer/cmd/coffer").CombinedOutput(); err != nil {
		t.Fatalf("build coffer: %v\n%s", err, out)
	}

	// The repository, its tenants and keys, made before the server owns it.
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := engine.Init(ctx, dir, engine.InitOptions{PackSize: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addKey := func(tenant string, roles ...string) ed25519.PrivateKey {
		priv, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.AddClientKey(ctx, tenant, priv.Public().(ed25519.PublicKey), "", roles); err != nil {
			t.Fatal(err)
		}
		return priv
	}
	var honest []ed25519.PrivateKey
	for i := 0; i < tenants; i++ {
		name := fmt.Sprintf("t%02d", i)
		if _, err := e.CreateTenant(ctx, name, engine.TenantOptions{}); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < perTenant; j++ {
			honest = append(honest, addKey(name, engine.RoleBackup, engine.RoleRestore))
		}
	}
	for _, name := range []string{"mallory", "gone"} {
		if _, err := e.CreateTenant(ctx, name, engine.TenantOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mallory := addKey("mallory", engine.RoleBackup)
	gone := addKey("gone", engine.RoleBackup)
	if _, err := e.LockTenant(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	stranger, _ := GenerateKey()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// The server, in its own process, so its RSS is its own.
	logPath := filepath.Join(t.TempDir(), "serve.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	srv := exec.Command(bin, "--repo", dir, "serve", "--listen", "127.0.0.1:0", "--idle-timeout", "2m")
	srv.Stderr = logFile
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.Process.Kill()
			srv.Wait()
		}
	}()
	var addr, fp string
	sc := bufio.NewScanner(stdout)
	reFP, reAddr := regexp.MustCompile(`server fingerprint: (\S+)`), regexp.MustCompile(`listening on (\S+)`)
	for sc.Scan() && (addr == "" || fp == "") {
		if m := reFP.FindStringSubmatch(sc.Text()); m != nil {
			fp = m[1]
		}
		if m := reAddr.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
	}
	if addr == "" || fp == "" {
		t.Fatalf("serve printed no address or fingerprint")
	}
	go func() {
		for sc.Scan() {
		}
	}()

	// RSS of the server, sampled every half second.
	var rssMu sync.Mutex
	var rss []int64 // KiB
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			if kb := procRSS(srv.Process.Pid); kb > 0 {
				rssMu.Lock()
				rss = append(rss, kb)
				rssMu.Unlock()
			}
			select {
			case <-tick.C:
			case <-stopSampling:
				return
			}
		}
	}()

	deadline := time.Now().Add(dur)
	st := &soakStats{lat: map[string][]time.Duration{}}
	var wg sync.WaitGroup
	for i, key := range honest {
		wg.Add(1)
		go func() {
			defer wg.Done()
			soakHonest(t, i, key, addr, fp, deadline, st)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		soakHostile(t, addr, fp, deadline, st, honest[0], mallory, gone, stranger)
	}()
	wg.Wait()
	close(stopSampling)
	<-sampleDone

	srv.Process.Signal(syscall.SIGTERM)
	if err := srv.Wait(); err != nil {
		t.Errorf("coffer serve ended with %v", err)
	}
	stopped = true

	e, err = engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := e.Check(ctx, engine.CheckOptions{ReadData: true})
	if err != nil || len(rep.Problems) > 0 {
		t.Errorf("check --read-data after the soak: %v %v", err, rep.Problems)
	}
	e.Close()

	// Figures.
	t.Logf("soak: %v, %d honest clients (%d tenants), one hostile client", dur, len(honest), tenants)
	kinds := make([]string, 0, len(st.lat))
	for k := range st.lat {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		d := slices.Clone(st.lat[k])
		slices.Sort(d)
		t.Logf("  %-22s %6d  p50 %8v  p95 %8v  max %8v", k, len(d), d[len(d)/2].Round(time.Millisecond),
			d[len(d)*95/100].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
	}
	t.Logf("  honest failures: %d, attacks answered otherwise than designed: %d", st.failures.Load(), st.badAttacks.Load())
	rssMu.Lock()
	r := slices.Clone(rss)
	rssMu.Unlock()
	if len(r) > 0 {
		first := r[0]
		slices.Sort(r)
		t.Logf("  server RSS: at start %d MiB, median %d MiB, max %d MiB (%d samples)", first>>10, r[len(r)/2]>>10, r[len(r)-1]>>10, len(r))
		if r[len(r)-1]>>10 > maxRSS {
			t.Errorf("server RSS reached %d MiB, over %d MiB", r[len(r)-1]>>10, maxRSS)
		}
	}
	logData, _ := os.ReadFile(logPath)
	lines := strings.Split(strings.TrimSpace(string(logData)), "\n")
	longest := 0
	for _, l := range lines {
		if strings.Contains(l, "conn.panic") {
			t.Errorf("the server logged a panic: %.300s", l)
		}
		longest = max(longest, len(l))
	}
	t.Logf("  server log: %d lines, longest %d bytes", len(lines), longest)
	reasons := map[string]int{}
	for _, l := range lines {
		for _, ev := range []string{"conn.refused", "conn.evicted", "conn.busy"} {
			if strings.Contains(l, "msg="+ev) {
				if i := strings.Index(l, "reason="); i >= 0 {
					reasons[ev+" "+l[i+len("reason="):]]++
				}
			}
		}
	}
	t.Logf("  refusals and evictions by reason: %v", reasons)
	customers := 0
	for _, l := range lines {
		if strings.Contains(l, "conn.evicted") && strings.Contains(l, "source=127.0.0.1 ") {
			customers++
		}
	}
	t.Logf("  of them evictions of connections from the customers' address 127.0.0.1: %d (Dial tries again)", customers)
	if longest > 2000 {
		t.Errorf("a server log line has %d bytes", longest)
	}
	if st.failures.Load() > 0 || st.badAttacks.Load() > 0 {
		t.Errorf("%d honest operations failed, %d attacks were answered otherwise than designed", st.failures.Load(), st.badAttacks.Load())
	}
}

type soakStats struct {
	mu                   sync.Mutex
	lat                  map[string][]time.Duration // guarded by mu
	failures, badAttacks atomic.Int64
	reported             atomic.Int64
}

func (s *soakStats) record(kind string, d time.Duration) {
	s.mu.Lock()
	s.lat[kind] = append(s.lat[kind], d)
	s.mu.Unlock()
}

// fail counts a failure, reporting the first 20.
func (s *soakStats) fail(t *testing.T, counter *atomic.Int64, format string, args ...any) {
	counter.Add(1)
	if s.reported.Add(1) <= 20 {
		t.Errorf(format, args...)
	}
}

// procRSS is the resident set of process pid in KiB, or 0.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}

// soakHonest is one honest client: each round it changes two of its files,
// backs up, lists the snapshots and the new snapshot's entries, and
// restores it, comparing every file, until deadline.
func soakHonest(t *testing.T, id int, key ed25519.PrivateKey, addr, fp string, deadline time.Time, st *soakStats) {
	ctx := context.Background()
	rng := mrand.New(mrand.NewPCG(uint64(id), 14))
	src, err := os.MkdirTemp("", "soak-src-")
	if err != nil {
		st.fail(t, &st.failures, "client %d: %v", id, err)
		return
	}
	defer os.RemoveAll(src)
	const files = 24
	write := func(i int) {
		b := make([]byte, 1000+rng.IntN(120<<10))
		fillPseudoRandom(rng, b)
		p := filepath.Join(src, fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%02d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, b, 0o640)
	}
	for i := 0; i < files; i++ {
		write(i)
	}
	entries := files + 4
	// The snapshot's paths start with src's own folders: ls counts them too.
	for d := filepath.Dir(src); d != "/"; d = filepath.Dir(d) {
		entries++
	}
	entries++ // src itself
	op := func(kind string, f func() error) bool {
		start := time.Now()
		err := f()
		if err != nil {
			st.fail(t, &st.failures, "client %d: %s: %v", id, kind, err)
			return false
		}
		st.record(kind, time.Since(start))
		return true
	}
	for round := 0; time.Now().Before(deadline); round++ {
		write(rng.IntN(files))
		write(rng.IntN(files))
		time.Sleep(5 * time.Millisecond) // the snapshot starts after every mtime
		var cl *Client
		if !op("dial", func() error {
			var err error
			cl, err = Dial(ctx, addr, key, fp)
			return err
		}) {
			time.Sleep(time.Second)
			continue
		}
		var snap *engine.Snapshot
		ok := op("backup", func() error {
			var err error
			snap, err = cl.Backup(ctx, []string{src}, BackupOptions{Host: fmt.Sprintf("client%d", id)})
			return err
		}) && op("snapshots", func() error {
			ss, err := cl.Snapshots(ctx)
			if err == nil && !slices.ContainsFunc(ss, func(s *engine.Snapshot) bool { return s.ID == snap.ID }) {
				err = fmt.Errorf("the new snapshot %s is not listed", snap.ID[:8])
			}
			return err
		}) && op("ls", func() error {
			n := 0
			err := cl.List(ctx, snap.ID, "/", func(engine.Entry) error { n++; return nil })
			if err == nil && n != entries {
				err = fmt.Errorf("listed %d entries, want %d", n, entries)
			}
			return err
		})
		if ok {
			op("restore", func() error {
				target, err := os.MkdirTemp("", "soak-restore-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(target)
				if _, err := cl.Restore(ctx, snap.ID, target, engine.RestoreOptions{}); err != nil {
					return err
				}
				return sameTree(src, filepath.Join(target, src))
			})
		}
		cl.Close()
	}
}

// sameTree compares the regular files below src with those below got.
func sameTree(src, got string) error {
	n := 0
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		a, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("%s restored differently", rel)
		}
		n++
		return nil
	})
	if err == nil && n == 0 {
		err = errors.New("no files compared")
	}
	return err
}

// soakHostile loops over the attacks until deadline.
func soakHostile(t *testing.T, addr, fp string, deadline time.Time, st *soakStats, victim, mallory, gone, stranger ed25519.PrivateKey) {
	ctx := context.Background()
	bad := func(format string, args ...any) { st.fail(t, &st.badAttacks, "hostile: "+format, args...) }
	victimPub := victim.Public().(ed25519.PublicKey)
	forger, _ := GenerateKey()
	var want bytes.Buffer
	writeFrame(&want, refusedKey, nil)
	attack := func(kind string, f func()) {
		start := time.Now()
		f()
		st.record("attack "+kind, time.Since(start))
	}
	for round := 0; time.Now().Before(deadline); round++ {
		attack("forged-signature", func() {
			ans, _, _ := rawTLSErr(addr, victimPub, wrongSigner{pub: victimPub, key: forger})
			if !strings.Contains(ans, "error decrypting message") {
				bad("forged signature over a registered key: %s", ans)
			}
		})
		attack("refused-key", func() {
			_, data, _ := rawTLSErr(addr, stranger.Public().(ed25519.PublicKey), stranger)
			if !bytes.Equal(data, want.Bytes()) {
				bad("unknown key got %q", data)
			}
			if _, err := Dial(ctx, addr, gone, fp); !errors.Is(err, ErrRefused) {
				bad("locked tenant's key: %v", err)
			}
		})
		attack("idle-flood", func() {
			var conns []net.Conn
			for i := 0; i < 150; i++ {
				src := fmt.Sprintf("127.0.%d.%d", 20+round%50, 1+i)
				if i%3 == 0 {
					src = "127.0.0.3" // one address's share
				}
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
				if c, err := d.Dial("tcp", addr); err == nil {
					conns = append(conns, c)
				}
			}
			time.Sleep(2 * time.Second)
			for _, c := range conns {
				c.Close()
			}
		})
		attack("trees", func() {
			cl, err := Dial(ctx, addr, mallory, fp)
			if err != nil {
				bad("mallory's dial: %v", err)
				return
			}
			defer cl.Close()
			w := &uploader{cl: cl, known: map[[32]byte]struct{}{}}
			if err := w.begin(ctx); err != nil {
				bad("mallory's backup: %v", err)
				return
			}
			if _, err := soakChain(w, 400, func(int) string { return strings.Repeat("n", 64<<10) }); !errors.Is(err, engine.ErrTreeLimit) {
				bad("64 KiB names: %v", err)
			}
			root, err := soakChain(w, 400, func(l int) string { return fmt.Sprintf("%04d", l) + strings.Repeat("x", 3996) })
			if err == nil {
				_, err = w.commit(ctx, &engine.Snapshot{Time: time.Now(), Host: "m", Paths: []string{"/x"}, Tree: root})
			}
			if !errors.Is(err, engine.ErrTreeLimit) {
				bad("deep chain: %v", err)
			}
			if err := w.begin(ctx); err != nil {
				bad("mallory's second backup: %v", err)
				return
			}
			enc, _ := (&tree.Tree{}).Encode()
			below := w.hasher.Sum(enc)
			blobs := []putBlob{{typ: engine.TreeBlob, id: below, data: enc}}
			for l := 0; l < 40; l++ {
				enc, _ := (&tree.Tree{Nodes: []tree.Node{
					{Name: "a", Type: tree.Dir, Mode: 0o755, Subtree: tree.ID(below)},
					{Name: "b", Type: tree.Dir, Mode: 0o755, Subtree: tree.ID(below)},
				}}).Encode()
				below = w.hasher.Sum(enc)
				blobs = append(blobs, putBlob{typ: engine.TreeBlob, id: below, data: enc})
			}
			err = w.put(ctx, blobs)
			if err == nil {
				_, err = w.commit(ctx, &engine.Snapshot{Time: time.Now(), Host: "m", Paths: []string{"/x"}, Tree: below.String()})
			}
			if !errors.Is(err, engine.ErrTreeLimit) {
				bad("2^40 DAG: %v", err)
			}
		})
		attack("backup-hog", func() {
			// Mallory's sessions all ask for a backup at once: one gets
			// her lock, the rest wait on it without taking places.
			var hog []*Client
			for i := 0; i < 10; i++ {
				cl, err := Dial(ctx, addr, mallory, fp)
				if err != nil {
					bad("mallory's dial %d: %v", i, err)
					continue
				}
				hog = append(hog, cl)
				cl.send(ctx, request{Op: opBegin})
			}
			time.Sleep(3 * time.Second)
			for _, cl := range hog {
				cl.Close()
			}
		})
		attack("junk-requests", func() {
			cl, err := Dial(ctx, addr, mallory, fp)
			if err != nil {
				bad("mallory's dial: %v", err)
				return
			}
			defer cl.Close()
			cl.mu.Lock()
			cl.c.SetDeadline(time.Now().Add(10 * time.Second))
			writeFrame(cl.bw, request{Op: strings.Repeat("x", 60000)}, nil)
			cl.bw.Flush()
			var r response
			if _, err := readFrame(cl.br, &r); err != nil || r.Code != codeInvalid || len(r.Message) > 200 {
				bad("unknown operation: %v %+v", err, r.Code)
			}
			// A frame header claiming 1 GiB: the connection is closed.
			var hdr [8]byte
			binary.BigEndian.PutUint32(hdr[0:4], 1<<30)
			cl.bw.Write(hdr[:])
			cl.bw.Flush()
			if _, err := readFrame(cl.br, &r); err == nil {
				bad("an oversized frame got an answer: %+v", r)
			}
			cl.mu.Unlock()
		})
	}
}

// soakChain is chainUpload without a testing.T: a chain of depth folders
// named by name(level), deepest first, in puts of about 4 MiB.
func soakChain(w *uploader, depth int, name func(int) string) (string, error) {
	enc, _ := (&tree.Tree{}).Encode()
	below := w.hasher.Sum(enc)
	batch := []putBlob{{typ: engine.TreeBlob, id: below, data: enc}}
	size := len(enc)
	for l := depth - 1; l >= 0; l-- {
		enc, err := (&tree.Tree{Nodes: []tree.Node{{Name: name(l), Type: tree.Dir, Mode: 0o755, Subtree: tree.ID(below)}}}).Encode()
		if err != nil {
			return "", err
		}
		below = w.hasher.Sum(enc)
		batch = append(batch, putBlob{typ: engine.TreeBlob, id: below, data: enc})
		size += len(enc)
		if size > 4<<20 || l == 0 {
			if err := w.put(context.Background(), batch); err != nil {
				return "", err
			}
			batch, size = nil, 0
		}
	}
	return below.String(), nil
}
