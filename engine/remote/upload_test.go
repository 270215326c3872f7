package remote

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"coffer/chunk"
	"coffer/engine"
	"coffer/engine/tree"
)

// ingestFixture is a repository with empty tenants alice and bob and a
// server that can be stopped and started again on the same engine.
type ingestFixture struct {
	e    *engine.Engine
	dir  string
	addr string
	fp   string
	stop func()
}

func newIngestFixture(t *testing.T) *ingestFixture {
	t.Helper()
	e, dir := newTestEngine(t, 1<<20, "alice", "bob")
	f := &ingestFixture{e: e, dir: dir}
	f.start(t, "127.0.0.1:0")
	return f
}

// start serves on addr (the previous address for a restart).
func (f *ingestFixture) start(t *testing.T, addr string) {
	t.Helper()
	f.addr, f.fp, f.stop = serveOn(t, f.e, addr, Config{IdleTimeout: 10 * time.Second})
}

func (f *ingestFixture) key(t *testing.T, tenant string, roles ...string) ed25519.PrivateKey {
	t.Helper()
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.AddClientKey(context.Background(), tenant, priv.Public().(ed25519.PublicKey), "", roles); err != nil {
		t.Fatal(err)
	}
	return priv
}

func (f *ingestFixture) dial(t *testing.T, key ed25519.PrivateKey) *Client {
	t.Helper()
	cl, err := Dial(context.Background(), f.addr, key, f.fp)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// writeRandomTree writes files of random content, total about size bytes,
// and a few small entries.
func writeRandomTree(t *testing.T, dir string, size int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{size / 2, size / 4, size / 8, size / 16, size / 16, 1000, 0}
	for i, n := range sizes {
		p := filepath.Join(dir, "d"+string(rune('a'+i%3)), "f"+string(rune('0'+i)))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("da/f0", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "da", "f0"), filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	// The snapshot's start must come after every mtime, as in real use.
	time.Sleep(10 * time.Millisecond)
}

func sent(cl *Client) int64 { s, _ := cl.Traffic(); return s }

func checkRepo(t *testing.T, e *engine.Engine) {
	t.Helper()
	rep, err := e.Check(context.Background(), engine.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatalf("Check: %v (%+v)", err, rep)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("Check problems: %v", rep.Problems)
	}
}

func sameFiles(t *testing.T, src, restored string) {
	t.Helper()
	n := 0
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		got, err := os.ReadFile(filepath.Join(restored, rel))
		if err != nil {
			return err
		}
		want, _ := os.ReadFile(p)
		if !bytes.Equal(got, want) {
			t.Errorf("%s restored differently", rel)
		}
		n++
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("compare: %d files, %v", n, err)
	}
}

// TestRemoteBackupRoundTrip: a remote backup restores byte-identical, gives
// the same tree as a local backup of the same files, and checks clean.
func TestRemoteBackupRoundTrip(t *testing.T) {
	f := newIngestFixture(t)
	ctx := context.Background()
	src := t.TempDir()
	writeRandomTree(t, src, 3<<20)
	cl := f.dial(t, f.key(t, "alice", "backup"))
	s, err := cl.Backup(ctx, []string{src}, BackupOptions{Host: "h", Tags: []string{"remote"}})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if s.Stats.Files != 8 || s.Stats.BlobsAdded == 0 || s.Host != "h" || len(s.Tags) != 1 {
		t.Fatalf("snapshot %+v", s)
	}
	// Chunking and IDs are the server's: a local backup of the same files
	// names the same root tree and adds nothing (before anything else is
	// created in the test's folder, whose time is in the tree).
	tn, err := f.e.OpenTenant(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := tn.Backup(ctx, []string{src}, engine.BackupOptions{Host: "h", NoParent: true})
	if err != nil {
		t.Fatal(err)
	}
	// Only the trees of /tmp and the test's folder may differ: other
	// processes change their times.
	if ls.Stats.BlobsAdded > 3 || ls.Stats.BytesAdded >= 1000 {
		t.Errorf("local backup: tree %s added %d, remote tree %s", ls.Tree, ls.Stats.BlobsAdded, s.Tree)
	}
	rc := f.dial(t, f.key(t, "alice", "restore"))
	target := t.TempDir()
	if _, err := rc.Restore(ctx, "latest", target, engine.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, src, filepath.Join(target, src))
	if l, err := os.Readlink(filepath.Join(target, src, "link")); err != nil || l != "da/f0" {
		t.Errorf("link: %q %v", l, err)
	}
	// Standard input.
	in := bytes.Repeat([]byte("stdin data "), 100000)
	ss, err := cl.BackupStream(ctx, bytes.NewReader(in), "dump.sql", BackupOptions{Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rc.Dump(ctx, ss.ID, "/dump.sql", &out); err != nil || !bytes.Equal(out.Bytes(), in) {
		t.Fatalf("stdin backup: %d bytes, %v", out.Len(), err)
	}
	checkRepo(t, f.e)
}

// TestRemoteBackupBandwidth: unchanged data is not sent again, touched
// files send only trees, and another tenant gets no dedup.
func TestRemoteBackupBandwidth(t *testing.T) {
	f := newIngestFixture(t)
	ctx := context.Background()
	src := t.TempDir()
	const size = 16 << 20
	writeRandomTree(t, src, size)
	key := f.key(t, "alice", "backup")
	backup := func(key ed25519.PrivateKey) (int64, *engine.Snapshot) {
		t.Helper()
		cl := f.dial(t, key)
		s, err := cl.Backup(ctx, []string{src}, BackupOptions{Host: "h"})
		if err != nil {
			t.Fatalf("Backup: %v", err)
		}
		n := sent(cl)
		cl.Close()
		return n, s
	}
	first, _ := backup(key)
	if first < size {
		t.Fatalf("first backup sent %d bytes of %d", first, size)
	}
	second, s2 := backup(key)
	t.Logf("first %d, unchanged %d (%.3f%%)", first, second, 100*float64(second)/float64(first))
	if second*100 >= first || s2.Stats.FilesUnchanged != 7 || s2.Parent == "" {
		t.Errorf("unchanged: sent %d of %d; %+v", second, first, s2.Stats)
	}
	old := time.Now().Add(-time.Hour)
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			err = os.Chtimes(p, old, old)
		}
		return err
	})
	third, s3 := backup(key)
	t.Logf("touched %d (%.3f%%)", third, 100*float64(third)/float64(first))
	if third*50 >= first || s3.Stats.FilesUnchanged != 0 {
		t.Errorf("touched: sent %d of %d; %+v", third, first, s3.Stats)
	}
	// Another tenant sends every byte again, and the server adds all of
	// it. (Its chunker polynomial is its own, so its chunks, and how its
	// padded batches fill, differ: bytes on the wire vary by up to a fifth
	// between tenants for the same data.)
	other, sb := backup(f.key(t, "bob", "backup"))
	t.Logf("bob %d (%.1f%%)", other, 100*float64(other)/float64(first))
	if other < size || sb.Stats.BytesAdded < size {
		t.Errorf("second tenant sent %d bytes and added %d (data %d): cross-tenant dedup?", other, sb.Stats.BytesAdded, size)
	}
	checkRepo(t, f.e)
}

// session opens an ingest session by hand (a client that misbehaves).
func session(t *testing.T, cl *Client) *uploader {
	t.Helper()
	w := &uploader{cl: cl, known: map[[32]byte]struct{}{}}
	if err := w.begin(context.Background()); err != nil {
		t.Fatalf("begin: %v", err)
	}
	return w
}

// TestRemoteBackupWrongID: a chunk under a wrong ID, a tree referencing
// blobs the server lacks, and a commit of a tree never uploaded are
// refused, and nothing is stored.
func TestRemoteBackupWrongID(t *testing.T) {
	f := newIngestFixture(t)
	ctx := context.Background()
	cl := f.dial(t, f.key(t, "alice", "backup"))
	w := session(t, cl)
	good := []byte("the real content")
	realID := w.hasher.Sum(good)
	evil := putBlob{typ: engine.DataBlob, id: realID, data: []byte("poison")}
	if err := w.put(ctx, []putBlob{{typ: engine.DataBlob, id: w.hasher.Sum([]byte("fine")), data: []byte("fine")}, evil}); !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("wrong ID: %v", err)
	}
	have, err := w.have(ctx, []putBlob{{id: realID}, {id: w.hasher.Sum([]byte("fine"))}})
	if err != nil || have[0] || have[1] {
		t.Fatalf("after a refused put the server has %v (%v)", have, err)
	}
	// A tree that references a chunk the server lacks.
	tr := &tree.Tree{Nodes: []tree.Node{{Name: "f", Type: tree.File, Mode: 0o644, Size: 16, Content: []tree.ID{tree.ID(realID)}}}}
	enc, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	tid := w.hasher.Sum(enc)
	if err := w.put(ctx, []putBlob{{typ: engine.TreeBlob, id: tid, data: enc}}); !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("dangling tree: %v", err)
	}
	// Committing a tree never uploaded records nothing.
	desc := &engine.Snapshot{Time: time.Now(), Host: "h", Paths: []string{"/x"}, Tree: tid.String()}
	if _, err := w.commit(ctx, desc); !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("commit of a missing tree: %v", err)
	}
	// With the real chunk first, the same tree is accepted and committed.
	w = session(t, cl)
	if err := w.put(ctx, []putBlob{{typ: engine.DataBlob, id: realID, data: good}, {typ: engine.TreeBlob, id: tid, data: enc}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.commit(ctx, desc); err != nil {
		t.Fatal(err)
	}
	rc := f.dial(t, f.key(t, "alice", "restore"))
	var out bytes.Buffer
	if err := rc.Dump(ctx, "latest", "/f", &out); err != nil || out.String() != string(good) {
		t.Fatalf("dump %q %v", out.String(), err)
	}
	ss, _ := rc.Snapshots(ctx)
	if len(ss) != 1 {
		t.Fatalf("%d snapshots", len(ss))
	}
	checkRepo(t, f.e)
}

// TestRemoteBackupRoles: a backup key backs up but cannot forget, prune, tag, rewrite,
// dump or restore; a restore key cannot back up.
func TestRemoteBackupRoles(t *testing.T) {
	f := newIngestFixture(t)
	ctx := context.Background()
	src := t.TempDir()
	writeRandomTree(t, src, 1<<20)
	cl := f.dial(t, f.key(t, "alice", "backup"))
	if _, err := cl.Backup(ctx, []string{src}, BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{opForget, opPrune, opTag, opRewrite} {
		cl := f.dial(t, f.key(t, "alice", "backup"))
		cl.mu.Lock()
		err := cl.send(ctx, request{Op: op, Snapshot: "latest"})
		if err == nil {
			var r response
			_, err = cl.next(&r)
		}
		cl.mu.Unlock()
		if !errors.Is(err, ErrRefused) {
			t.Errorf("backup key %s: %v", op, err)
		}
	}
	cl = f.dial(t, f.key(t, "alice", "backup"))
	if err := cl.Dump(ctx, "latest", filepath.Join(src, "da", "f0"), io.Discard); !errors.Is(err, ErrRefused) {
		t.Errorf("backup key dump: %v", err)
	}
	cl = f.dial(t, f.key(t, "alice", "backup"))
	if _, err := cl.Restore(ctx, "latest", t.TempDir(), engine.RestoreOptions{}); !errors.Is(err, ErrRefused) {
		t.Errorf("backup key restore: %v", err)
	}
	rc := f.dial(t, f.key(t, "alice", "restore"))
	if _, err := rc.Backup(ctx, []string{src}, BackupOptions{}); !errors.Is(err, ErrRefused) {
		t.Errorf("restore key backup: %v", err)
	}
	tn, _ := f.e.OpenTenant(ctx, "alice")
	if ss, _ := tn.Snapshots(ctx); len(ss) != 1 {
		t.Errorf("%d snapshots", len(ss))
	}
}

// TestRemoteBackupResume: a backup cut off mid-way (server stopped, or the
// connection closed) records nothing; a rerun after a restart completes,
// sends less than the whole, and checks clean.
func TestRemoteBackupResume(t *testing.T) {
	for _, how := range []string{"server", "conn"} {
		t.Run(how, func(t *testing.T) {
			f := newIngestFixture(t)
			ctx := context.Background()
			src := t.TempDir()
			const size = 12 << 20
			writeRandomTree(t, src, size)
			key := f.key(t, "alice", "backup")
			cl := f.dial(t, key)
			prog := &engine.Progress{}
			stopped := make(chan struct{})
			// The server keeps what it indexed: cut while the second
			// batch is on its way (or, stopping the server, while the first
			// is; a stopping server finishes the request in flight).
			cut := int64(size / 3)
			if how == "conn" {
				cut = size * 3 / 4
			}
			go func() {
				defer close(stopped)
				for sent(cl) < cut {
					time.Sleep(time.Millisecond)
				}
				if how == "server" {
					f.stop()
				} else {
					cl.Close()
				}
			}()
			_, err := cl.Backup(ctx, []string{src}, BackupOptions{Host: "h", Progress: prog})
			<-stopped
			if err == nil {
				t.Fatal("backup survived the cut")
			}
			firstSent := sent(cl)
			tn, _ := f.e.OpenTenant(ctx, "alice")
			// Wait for the server to end the cut session: it releases the
			// tenant lock when it sees the connection gone.
			ing, err := tn.BeginIngest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ing.Abort(ctx, errors.New("test: waited for the cut session"))
			if ss, _ := tn.Snapshots(ctx); len(ss) != 0 {
				t.Fatalf("half snapshot: %d", len(ss))
			}
			checkRepo(t, f.e)
			if how == "server" {
				f.start(t, f.addr)
			}
			cl2 := f.dial(t, key)
			s, err := cl2.Backup(ctx, []string{src}, BackupOptions{Host: "h"})
			if err != nil {
				t.Fatalf("rerun: %v", err)
			}
			rerun := sent(cl2)
			t.Logf("cut after %d bytes sent; rerun sent %d", firstSent, rerun)
			if rerun > size*3/4 {
				t.Errorf("rerun sent %d after %d were sent before the cut", rerun, firstSent)
			}
			if s.Stats.Files != 8 {
				t.Errorf("stats %+v", s.Stats)
			}
			checkRepo(t, f.e)
			rc := f.dial(t, f.key(t, "alice", "restore"))
			target := t.TempDir()
			if _, err := rc.Restore(ctx, "latest", target, engine.RestoreOptions{}); err != nil {
				t.Fatal(err)
			}
			sameFiles(t, src, filepath.Join(target, src))
		})
	}
}

// TestRemoteBackupIsolation: "do you have this blob?" and tree requests
// with another tenant's real IDs get the answers of random IDs.
func TestRemoteBackupIsolation(t *testing.T) {
	f := newIngestFixture(t)
	ctx := context.Background()
	src := t.TempDir()
	writeRandomTree(t, src, 1<<20)
	bob := f.dial(t, f.key(t, "bob", "backup"))
	sb, err := bob.Backup(ctx, []string{src}, BackupOptions{Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	bt, _ := f.e.OpenTenant(ctx, "bob")
	bh := chunk.NewHasher(bt.IngestParams().IDKey)
	small, _ := os.ReadFile(filepath.Join(src, "dc", "f5")) // one chunk
	bobData := bh.Sum(small)
	bobTree, err := parseID(sb.Tree)
	if err != nil {
		t.Fatal(err)
	}
	var random [32]byte
	random[0] = 42

	cl := f.dial(t, f.key(t, "alice", "backup", "restore"))
	w := session(t, cl)
	have, err := w.have(ctx, []putBlob{{id: bobData}, {id: bobTree}, {id: random}})
	if err != nil || have[0] || have[1] || have[2] {
		t.Fatalf("alice has bob's blobs: %v %v", have, err)
	}
	treeAnswer := func(id [32]byte) response {
		t.Helper()
		if err := cl.send(ctx, request{Op: opTree, ID: hex.EncodeToString(id[:])}); err != nil {
			t.Fatal(err)
		}
		var r response
		if _, err := readFrame(cl.br, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := treeAnswer(bobTree), treeAnswer(random)
	if a.Kind != kindError || !reflect.DeepEqual(a, b) {
		t.Fatalf("tree answers differ: %+v / %+v", a, b)
	}
}

// TestPutPayload: the size classes of docs/design.md chapter 15, and a
// payload round trip.
func TestPutPayload(t *testing.T) {
	for _, c := range []struct{ n, want int }{
		{1, 64 << 10}, {64 << 10, 64 << 10}, {64<<10 + 1, 128 << 10}, {600 << 10, 1 << 20},
		{1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20}, {8 << 20, 8 << 20},
	} {
		if got := padClass(c.n); got != c.want {
			t.Errorf("padClass(%d) = %d, want %d", c.n, got, c.want)
		}
	}
	blobs := []putBlob{{typ: engine.DataBlob, id: [32]byte{1}, data: []byte("abc")}, {typ: engine.TreeBlob, id: [32]byte{2}, data: nil}}
	p := appendPutPayload(nil, blobs)
	if len(p) != 64<<10 || !validClass(1, len(p)) || validClass(2, len(p)) {
		t.Fatalf("payload of %d bytes", len(p))
	}
	got, err := parsePutPayload(p)
	if err != nil || len(got) != 2 || string(got[0].Data) != "abc" || got[1].Type != engine.TreeBlob || got[1].ID[0] != 2 {
		t.Fatalf("parse: %+v %v", got, err)
	}
	p[len(p)-1] = 1
	if _, err := parsePutPayload(p); !errors.Is(err, ErrProtocol) {
		t.Fatalf("non-zero padding: %v", err)
	}
}

func FuzzParsePutPayload(f *testing.F) {
	f.Add(appendPutPayload(nil, []putBlob{{typ: engine.DataBlob, data: []byte("x")}})[:100])
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, p []byte) {
		blobs, err := parsePutPayload(p)
		if err != nil {
			return
		}
		n := 0
		for _, b := range blobs {
			n += len(b.Data)
		}
		if n > len(p) {
			t.Fatalf("blobs of %d bytes from %d", n, len(p))
		}
	})
}
