package remote

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"coffer/engine"
	"coffer/engine/tree"
)

// Timing thresholds of TestRemoteTimingIsolation. A probe kind fails only
// when both its medians and its 10 %-trimmed means differ by more than
// timingRel (timingCommitRel for the commit probes) of the smaller one AND
// by more than timingAbs.
//
// Measured spread (2-core shared VM, load average 2 to 7 from other jobs,
// go test -count=5 run three times, loopback TLS): a cheap probe (ls, dump,
// restore, forget, tree, have, put) takes 0.7 to 7 ms depending on the
// machine's load; real-vs-random differences of its medians were mostly
// under 5 %, at worst 20 % (210 µs; 630 µs at 9 % under the heaviest
// load), and of its trimmed means at worst 21 % (1.6 ms, with the medians
// 9 % apart). A commit probe takes 6 to 30 ms (it writes an audit record);
// its medians differed by at most 13 % (2.2 ms) and its trimmed means by at
// most 9 %. The thresholds leave about twice
// the worst case as slack (they must hold together).
//
// Sensitivity, checked with an artificial delay on the real-ID path (a
// hook in a scratch copy of server.go, never in this tree): 2 ms fails
// every cheap probe kind (+150 to +300 %); 500 µs moved them by about
// +40 % at a load average of 3.5 and passed, so the smallest leak caught is
// about half a probe's duration (0.35 to 1.5 ms here). For commits 2 ms
// (+21 to +24 %) passed and 5 ms (+33 to +67 %) failed.
const (
	timingRel       = 0.50
	timingCommitRel = 0.25
	timingAbs       = 300 * time.Microsecond
)

// timingPairs is the number of real/random probe pairs per kind;
// timingCommitPairs for the commit probes, which take about 10 ms each
// (they write an audit record).
const (
	timingPairs       = 160
	timingCommitPairs = 80
)

// TestRemoteTimingIsolation: a key of alice probing with bob's real
// snapshot, tree and data-blob IDs gets answers identical in bytes (once
// the ID is masked) and in timing (within noise) to probes with random IDs,
// for every request that takes an ID: ls, dump, restore and forget (dry
// run) of a snapshot reference (the full ID; for ls and restore also an
// 8-digit prefix), tree, locate and blobs (restore's data blobs), have (one ID, and 64 at once), a put of a tree
// that references the ID, and a commit naming the ID as root tree or as
// parent. Probes alternate real/random and random/real on
// the same connection, so drift of the machine's load hits both sides
// alike; the distributions are compared by median and trimmed mean.
//
// The byte answers of several of these are tested elsewhere
// (TestRemoteTenantIsolation, TestRemoteBackupIsolation,
// TestRemoteAdminIsolation); here they are checked only so that both
// sides of each pair are known to take the same path through the server.
func TestRemoteTimingIsolation(t *testing.T) {
	if testing.Short() {
		t.Skip("timing measurement takes several seconds")
	}
	ctx := context.Background()
	e, _ := newTestEngine(t, 1<<20, "alice", "bob")

	// Bob: several snapshots of a tree with many small files (many blob
	// IDs), a few folders and one file of several chunks. Alice: one
	// snapshot of her own small tree.
	bobSrc := t.TempDir()
	rng := mrand.New(mrand.NewPCG(7, 11))
	for i := 0; i < 120; i++ {
		b := make([]byte, 500+rng.IntN(3000))
		fillPseudoRandom(rng, b)
		p := filepath.Join(bobSrc, fmt.Sprintf("d%d", i%6), fmt.Sprintf("f%03d", i))
		writeFileAll(t, p, b)
	}
	big := make([]byte, 3<<20)
	fillPseudoRandom(rng, big)
	writeFileAll(t, filepath.Join(bobSrc, "big.bin"), big)
	aliceSrc := t.TempDir()
	writeFileAll(t, filepath.Join(aliceSrc, "a.txt"), []byte("alice's own file\n"))
	time.Sleep(10 * time.Millisecond)

	bt, err := e.OpenTenant(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	var bobSnaps []string
	for i := 0; i < 4; i++ {
		// Each snapshot sees one more changed file.
		writeFileAll(t, filepath.Join(bobSrc, "d0", "changing"), []byte(fmt.Sprint("version ", i)))
		s, err := bt.Backup(ctx, []string{bobSrc}, engine.BackupOptions{Host: "h"})
		if err != nil {
			t.Fatal(err)
		}
		bobSnaps = append(bobSnaps, s.ID)
	}
	bobTrees, bobData := tenantBlobs(t, bt, bobSnaps)
	bobBlobs := append(slices.Clone(bobTrees), bobData...)
	at, err := e.OpenTenant(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := at.Backup(ctx, []string{aliceSrc}, engine.BackupOptions{Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bob: %d snapshots, %d trees, %d data blobs", len(bobSnaps), len(bobTrees), len(bobData))

	addr, fp, _ := serveOn(t, e, "127.0.0.1:0", Config{IdleTimeout: time.Minute})
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.AddClientKey(ctx, "alice", priv.Public().(ed25519.PublicKey), "", []string{engine.RoleBackup, engine.RoleRestore, engine.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	dial := func() *Client {
		t.Helper()
		cl, err := Dial(ctx, addr, priv, fp)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}

	randHex := func(n int) string {
		b := make([]byte, n/2)
		rand.Read(b)
		return hex.EncodeToString(b)
	}
	randID := func() [32]byte {
		var id [32]byte
		rand.Read(id[:])
		return id
	}
	pick := func(ids []string, i int) string { return ids[i%len(ids)] }
	pickID := func(ids [][32]byte, i int) [32]byte { return ids[i%len(ids)] }
	bigPath := filepath.Join(bobSrc, "big.bin")

	// The ingest probes share one session on their own connection. It holds
	// alice's lock, so it opens after the forget probes and closes before
	// the commit probes, which open a session each (a failed commit ends
	// it).
	var ing *Client
	var w *uploader
	openIngest := func() {
		ing = dial()
		w = session(t, ing)
	}
	var commitConn *Client
	openCommit := func() {
		ing.Close()
		commitConn = dial()
	}

	type probe struct {
		name   string
		before func()  // runs once before the kind's probes
		pairs  int     // 0: timingPairs
		rel    float64 // 0: timingRel
		// run makes one probe with bob's real ID (real) or a random one,
		// and returns its answer with the ID masked, and its round trip.
		run func(cl *Client, real bool, i int) (string, time.Duration)
	}
	snapProbe := func(op string, prefix bool) func(*Client, bool, int) (string, time.Duration) {
		return func(cl *Client, real bool, i int) (string, time.Duration) {
			ref := randHex(64)
			if real {
				ref = pick(bobSnaps, i)
			}
			if prefix {
				ref = ref[:8]
			}
			req := request{Op: op, Snapshot: ref}
			switch op {
			case opLs:
				req.Path = "/"
			case opDump:
				req.Path = bigPath
			case opForget:
				req = request{Op: opForget, IDs: []string{ref}, DryRun: true}
			}
			ans, d := probeRoundTrip(t, cl, req, nil, nil)
			return strings.ReplaceAll(ans, ref, "REF"), d
		}
	}
	probes := []probe{
		{"ls", nil, 0, 0, snapProbe(opLs, false)},
		{"ls-prefix", nil, 0, 0, snapProbe(opLs, true)},
		{"dump", nil, 0, 0, snapProbe(opDump, false)},
		{"restore", nil, 0, 0, snapProbe(opRestore, false)},
		{"restore-prefix", nil, 0, 0, snapProbe(opRestore, true)},
		{"forget-dry-run", nil, 0, 0, snapProbe(opForget, false)},
		{"tree", nil, 0, 0, func(cl *Client, real bool, i int) (string, time.Duration) {
			id := randID()
			if real {
				id = pickID(bobBlobs, i) // trees and data blobs
			}
			return probeRoundTrip(t, cl, request{Op: opTree, ID: hex.EncodeToString(id[:])}, nil, nil)
		}},
		{"locate", nil, 0, 0, func(cl *Client, real bool, i int) (string, time.Duration) {
			id := randID()
			if real {
				id = pickID(bobBlobs, i) // trees and data blobs
			}
			return probeRoundTrip(t, cl, request{Op: opLocate}, id[:], nil)
		}},
		{"blobs", nil, 0, 0, func(cl *Client, real bool, i int) (string, time.Duration) {
			id := randID()
			if real {
				id = pickID(bobData, i)
			}
			return probeRoundTrip(t, cl, request{Op: opBlobs}, id[:], nil)
		}},
		{"have-1", openIngest, 0, 0, func(_ *Client, real bool, i int) (string, time.Duration) {
			id := randID()
			if real {
				id = pickID(bobBlobs, i)
			}
			return probeRoundTrip(t, ing, request{Op: opHave}, id[:], nil)
		}},
		{"have-64", nil, 0, 0, func(_ *Client, real bool, i int) (string, time.Duration) {
			body := make([]byte, 0, 64*32)
			for j := 0; j < 64; j++ {
				id := randID()
				if real {
					id = pickID(bobBlobs, i*64+j)
				}
				body = append(body, id[:]...)
			}
			return probeRoundTrip(t, ing, request{Op: opHave}, body, nil)
		}},
		{"put-tree-ref", nil, 0, 0, func(_ *Client, real bool, i int) (string, time.Duration) {
			// A tree of alice that names bob's blob as a file's content
			// and bob's tree as a folder's subtree.
			data, sub := randID(), randID()
			if real {
				data, sub = pickID(bobData, i), pickID(bobTrees, i)
			}
			tr := &tree.Tree{Nodes: []tree.Node{
				{Name: "d", Type: tree.Dir, Mode: 0o755, Subtree: tree.ID(sub)},
				{Name: "f", Type: tree.File, Mode: 0o644, Size: 1, Content: []tree.ID{tree.ID(data)}},
			}}
			enc, err := tr.Encode()
			if err != nil {
				t.Fatal(err)
			}
			tid := w.hasher.Sum(enc)
			payload := appendPutPayload(nil, []putBlob{{typ: engine.TreeBlob, id: tid, data: enc}})
			ans, d := probeRoundTrip(t, ing, request{Op: opPut, Frames: 1}, nil, payload)
			for _, id := range [][]byte{data[:], sub[:], tid[:]} {
				ans = strings.ReplaceAll(ans, hex.EncodeToString(id[:8]), "REF")
			}
			return ans, d
		}},
		{"commit-tree", openCommit, timingCommitPairs, timingCommitRel, func(_ *Client, real bool, i int) (string, time.Duration) {
			root := randID()
			if real {
				root = pickID(bobTrees, i)
			}
			desc := &engine.Snapshot{Time: time.Now(), Host: "h", Paths: []string{"/x"}, Tree: hex.EncodeToString(root[:])}
			ans, _ := probeRoundTrip(t, commitConn, request{Op: opBegin}, nil, nil)
			ans2, d := probeRoundTrip(t, commitConn, request{Op: opCommit, Commit: desc}, nil, nil)
			return strings.ReplaceAll(ans+ans2, desc.Tree, "REF"), d
		}},
		{"commit-parent", nil, timingCommitPairs, timingCommitRel, func(_ *Client, real bool, i int) (string, time.Duration) {
			ref := randHex(64)
			if real {
				ref = pick(bobSnaps, i)
			}
			desc := &engine.Snapshot{Time: time.Now(), Host: "h", Paths: []string{"/x"}, Tree: sa.Tree, Parent: ref}
			ans, _ := probeRoundTrip(t, commitConn, request{Op: opBegin}, nil, nil)
			ans2, d := probeRoundTrip(t, commitConn, request{Op: opCommit, Commit: desc}, nil, nil)
			return strings.ReplaceAll(ans+ans2, ref, "REF"), d
		}},
	}

	start := time.Now()
	read := dial()
	var failed []string
	for _, p := range probes {
		if p.before != nil {
			p.before()
		}
		// Warm up (caches, the connection's buffers), then measure.
		for i := 0; i < 10; i++ {
			p.run(read, i%2 == 0, i)
		}
		runtime.GC()
		pairs := p.pairs
		if pairs == 0 {
			pairs = timingPairs
		}
		var realD, randD []time.Duration
		for i := 0; i < pairs; i++ {
			order := []bool{true, false}
			if i%2 == 1 {
				order = []bool{false, true}
			}
			var ans [2]string
			for _, real := range order {
				a, d := p.run(read, real, i)
				if real {
					ans[0] = a
					realD = append(realD, d)
				} else {
					ans[1] = a
					randD = append(randD, d)
				}
			}
			if ans[0] != ans[1] {
				t.Fatalf("%s: bob's real ID and a random ID answered differently:\n%s\n%s", p.name, ans[0], ans[1])
			}
			if i == 0 && !strings.HasPrefix(p.name, "have") && !strings.Contains(ans[0], "error/") {
				t.Fatalf("%s: the probe was answered as if the ID were alice's: %s", p.name, ans[0])
			}
		}
		mr, mx := medianDuration(realD), medianDuration(randD)
		tr, tx := trimmedMeanDuration(realD, 0.1), trimmedMeanDuration(randD, 0.1)
		t.Logf("%-15s real: median %7.1fµs trimmed %7.1fµs | random: median %7.1fµs trimmed %7.1fµs | diff %+5.1f%% %+5.1f%%",
			p.name, micros(mr), micros(tr), micros(mx), micros(tx), 100*(micros(mr)-micros(mx))/micros(min(mr, mx)), 100*(micros(tr)-micros(tx))/micros(min(tr, tx)))
		rel := p.rel
		if rel == 0 {
			rel = timingRel
		}
		if timingDiffers(mr, mx, rel) && timingDiffers(tr, tx, rel) {
			failed = append(failed, p.name)
		}
	}
	t.Logf("%d probe kinds in %v", len(probes), time.Since(start).Round(time.Millisecond))
	if len(failed) > 0 {
		t.Errorf("bob's real IDs and random IDs take measurably different times (> %.0f%% (commits: %.0f%%) and > %v) for: %s",
			100*timingRel, 100*timingCommitRel, timingAbs, strings.Join(failed, ", "))
	}
}

// probeRoundTrip sends one request (with body, or followed by a put's
// payload frames) and reads its response frames up to "end" or "error". It
// returns the frames as text (kind, code, message, body) and the time from
// sending to the last frame.
func probeRoundTrip(t *testing.T, cl *Client, req request, body, payload []byte) (string, time.Duration) {
	t.Helper()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	start := time.Now()
	if err := writeFrame(cl.bw, req, body); err != nil {
		t.Fatal(err)
	}
	for p := payload; len(p) > 0; {
		c := min(len(p), MaxBody)
		if err := writeFrame(cl.bw, request{Op: kindData}, p[:c]); err != nil {
			t.Fatal(err)
		}
		p = p[c:]
	}
	if err := cl.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for {
		var r response
		b, err := readFrame(cl.br, &r)
		if err != nil {
			t.Fatalf("%s: %v", req.Op, err)
		}
		fmt.Fprintf(&sb, "%s/%s/%q/%x;", r.Kind, r.Code, r.Message, b)
		if r.Kind == kindEnd || r.Kind == kindError {
			return sb.String(), time.Since(start)
		}
	}
}

// tenantBlobs lists the tree and data blobs the snapshots reach.
func tenantBlobs(t *testing.T, tn *engine.Tenant, snaps []string) (trees, data [][32]byte) {
	t.Helper()
	ctx := context.Background()
	seen := map[[32]byte]bool{}
	var walk func(id [32]byte)
	walk = func(id [32]byte) {
		if seen[id] {
			return
		}
		seen[id] = true
		trees = append(trees, id)
		b, err := tn.TreeBlob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := tree.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tr.Nodes {
			for _, c := range n.Content {
				if !seen[c] {
					seen[c] = true
					data = append(data, c)
				}
			}
			if n.Type == tree.Dir {
				walk(n.Subtree)
			}
		}
	}
	for _, ref := range snaps {
		s, err := tn.FindSnapshot(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		id, err := parseID(s.Tree)
		if err != nil {
			t.Fatal(err)
		}
		walk(id)
	}
	return trees, data
}

func writeFileAll(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fillPseudoRandom fills b from rng, 8 bytes at a time.
func fillPseudoRandom(rng *mrand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

func medianDuration(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// trimmedMeanDuration is the mean without the share frac of the lowest and
// of the highest values.
func trimmedMeanDuration(d []time.Duration, frac float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	k := int(float64(len(s)) * frac)
	s = s[k : len(s)-k]
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	return sum / time.Duration(len(s))
}

func timingDiffers(a, b time.Duration, rel float64) bool {
	diff := a - b
	if diff < 0 {
		diff = -diff
	}
	return diff > timingAbs && float64(diff) > rel*float64(min(a, b))
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
