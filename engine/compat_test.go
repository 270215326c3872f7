package engine_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"coffer/engine"
	"coffer/internal/treetest"
)

// The repository fixtures under testdata were written by earlier versions of
// Coffer. Every later version must open them, list their tenants and
// snapshots, restore every snapshot byte-identically, pass check --read-data
// and scrub, and rebuild their index from the drives. A format change that
// breaks an old repository fails here.
//
// To write a new fixture (only when the format version changes, never to make
// this test pass): COFFER_WRITE_FIXTURE=NAME go test -run TestWriteFixture ./engine/
var compatFixtures = []string{"repo-v1"}

// fixtureManifest is what a fixture's repository holds, written beside it.
type fixtureManifest struct {
	Program string            `json:"program"`
	Tenants []fixtureTenant   `json:"tenants"`
	Locked  []string          `json:"locked"`
	Streams map[string]string `json:"streams"` // snapshot ID → sha256 prefix of the stream, as treetest prints files
}

type fixtureTenant struct {
	Name      string            `json:"name"`
	Snapshots []fixtureSnapshot `json:"snapshots"` // the live ones, oldest first
	Forgotten []string          `json:"forgotten"` // IDs of forgotten snapshots
	Keys      int               `json:"client_keys"`
}

type fixtureSnapshot struct {
	ID       string            `json:"id"`
	Path     string            `json:"path"` // the backed-up folder
	Manifest treetest.Manifest `json:"manifest"`
}

// fixtureTime is the clock the fixture was written with.
var fixtureTime = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

func TestCompatFixtures(t *testing.T) {
	for _, name := range compatFixtures {
		t.Run(name, func(t *testing.T) { testCompatFixture(t, name) })
	}
}

func testCompatFixture(t *testing.T, name string) {
	ctx := context.Background()
	raw, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var want fixtureManifest
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	untarFixture(t, filepath.Join("testdata", name+".tar.gz"), dir)
	repoDir := filepath.Join(dir, "repo")
	// Git does not keep a file's mode: the key is private again here.
	if err := os.Chmod(filepath.Join(repoDir, "master.key"), 0o600); err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return fixtureTime.Add(24 * time.Hour) }

	e, err := engine.Open(repoDir, engine.Options{Now: now})
	if err != nil {
		t.Fatalf("open the %s fixture: %v", name, err)
	}
	compatVerify(t, ctx, e, &want, "as written")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// The index as that version wrote it is not needed either: rebuild it
	// from the drives and the master key alone, then read everything again.
	if err := os.RemoveAll(filepath.Join(repoDir, "index")); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Rebuild(ctx, repoDir, engine.RebuildOptions{}); err != nil {
		t.Fatalf("rebuild the %s fixture's index: %v", name, err)
	}
	e, err = engine.Open(repoDir, engine.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	compatVerify(t, ctx, e, &want, "after index rebuild")
}

func compatVerify(t *testing.T, ctx context.Context, e *engine.Engine, want *fixtureManifest, when string) {
	t.Helper()
	infos, err := e.Tenants(ctx)
	if err != nil {
		t.Fatalf("%s: tenants: %v", when, err)
	}
	states := map[string]string{}
	for _, ti := range infos {
		states[ti.Name] = ti.State
	}
	for _, name := range want.Locked {
		if states[name] != engine.StateLocked {
			t.Errorf("%s: tenant %s is %q, want locked", when, name, states[name])
		}
	}
	for _, wt := range want.Tenants {
		if states[wt.Name] != engine.StateActive {
			t.Errorf("%s: tenant %s is %q, want active", when, wt.Name, states[wt.Name])
			continue
		}
		tn, err := e.OpenTenant(ctx, wt.Name)
		if err != nil {
			t.Fatalf("%s: open tenant %s: %v", when, wt.Name, err)
		}
		snaps, err := tn.Snapshots(ctx)
		if err != nil {
			t.Fatalf("%s: snapshots of %s: %v", when, wt.Name, err)
		}
		var got, wantIDs []string
		for _, s := range snaps {
			got = append(got, s.ID)
		}
		for _, s := range wt.Snapshots {
			wantIDs = append(wantIDs, s.ID)
		}
		for id := range want.Streams {
			if strings.HasPrefix(wt.Name, "stream") {
				wantIDs = append(wantIDs, id)
			}
		}
		sort.Strings(got)
		sort.Strings(wantIDs)
		if fmt.Sprint(got) != fmt.Sprint(wantIDs) {
			t.Errorf("%s: tenant %s has snapshots %v, want %v (forgotten: %v)", when, wt.Name, got, wantIDs, wt.Forgotten)
		}
		for _, ws := range wt.Snapshots {
			compatRestore(t, ctx, tn, ws, when)
		}
		for id, sum := range want.Streams {
			if !strings.HasPrefix(wt.Name, "stream") {
				continue
			}
			s, err := tn.FindSnapshot(ctx, id)
			if err != nil {
				t.Fatalf("%s: find stream snapshot %s: %v", when, id, err)
			}
			var buf bytes.Buffer
			if err := tn.Dump(ctx, s, "db.sql", &buf); err != nil {
				t.Fatalf("%s: dump stream %s: %v", when, id, err)
			}
			if got := streamSum(buf.Bytes()); got != sum {
				t.Errorf("%s: stream %s dumps as %s, want %s", when, id, got, sum)
			}
		}
		keys, err := e.ClientKeys(ctx, wt.Name)
		if err != nil {
			t.Fatalf("%s: client keys of %s: %v", when, wt.Name, err)
		}
		if len(keys) != wt.Keys {
			t.Errorf("%s: tenant %s has %d client keys, want %d", when, wt.Name, len(keys), wt.Keys)
		}
	}
	rep, err := e.Check(ctx, engine.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatalf("%s: check --read-data: %v", when, err)
	}
	if len(rep.Problems) > 0 {
		t.Errorf("%s: check --read-data found %v", when, rep.Problems)
	}
	sr, err := e.Scrub(ctx, engine.ScrubOptions{})
	if err != nil {
		t.Fatalf("%s: scrub: %v", when, err)
	}
	if len(sr.Problems) > 0 {
		t.Errorf("%s: scrub found %v", when, sr.Problems)
	}
	if _, err := e.VerifyAudit(ctx); err != nil {
		t.Errorf("%s: audit --verify: %v", when, err)
	}
}

func compatRestore(t *testing.T, ctx context.Context, tn *engine.Tenant, ws fixtureSnapshot, when string) {
	t.Helper()
	s, err := tn.FindSnapshot(ctx, ws.ID)
	if err != nil {
		t.Fatalf("%s: find snapshot %s: %v", when, ws.ID, err)
	}
	target := t.TempDir()
	if _, err := tn.Restore(ctx, s, target, engine.RestoreOptions{}); err != nil {
		t.Fatalf("%s: restore %s: %v", when, ws.ID, err)
	}
	got := treetest.Of(t, filepath.Join(target, ws.Path))
	if d := ws.Manifest.Diff(got); len(d) > 0 {
		t.Errorf("%s: snapshot %s restores differently:\n%s", when, ws.ID, strings.Join(d, "\n"))
	}
}

func streamSum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func untarFixture(t *testing.T, archive, dst string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("read %s: %v", archive, err)
		}
		p := filepath.Join(dst, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dst+string(filepath.Separator)) {
			t.Fatalf("%s: entry %q leaves the folder", archive, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode).Perm()|0o700)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, os.FileMode(h.Mode).Perm())
			}
		default:
			err = fmt.Errorf("entry %q of type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatalf("extract %s: %v", archive, err)
		}
	}
}

// TestWriteFixture writes a fixture repository with today's code:
// COFFER_WRITE_FIXTURE=repo-vN go test -run TestWriteFixture ./engine/
// then add "repo-vN" to compatFixtures. It holds three tenants (one with two
// folder snapshots and a forgotten one and a client key, one with a stream,
// one locked), small packs, and the audit chain of all of it.
func TestWriteFixture(t *testing.T) {
	name := os.Getenv("COFFER_WRITE_FIXTURE")
	if name == "" {
		t.Skip("COFFER_WRITE_FIXTURE=NAME writes testdata/NAME.tar.gz and NAME.json")
	}
	ctx := context.Background()
	work := t.TempDir()
	repoDir := filepath.Join(work, "repo")
	if _, err := engine.Init(ctx, repoDir, engine.InitOptions{PackSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	clock := fixtureTime
	now := func() time.Time { clock = clock.Add(time.Minute); return clock }
	e, err := engine.Open(repoDir, engine.Options{Now: now, Actor: "fixture"})
	if err != nil {
		t.Fatal(err)
	}
	man := fixtureManifest{Program: engine.ProgramVersion, Streams: map[string]string{}}

	// Tenant 1: a folder backed up twice, the first one forgotten after a
	// third backup, and a client key.
	mustTenant(t, e, "acme")
	acme := mustOpen(t, e, "acme")
	src := filepath.Join(work, "src", "www")
	writeFixtureTree(t, src, 1)
	s1 := mustBackup(t, acme, src)
	writeFixtureTree(t, src, 2)
	s2 := mustBackup(t, acme, src)
	m2 := treetest.Of(t, src)
	writeFixtureTree(t, src, 3)
	s3 := mustBackup(t, acme, src)
	m3 := treetest.Of(t, src)
	if _, err := acme.Forget(ctx, []string{s1.ID}, engine.ForgetOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, _, err := ed25519.GenerateKey(rand.NewChaCha8([32]byte{7}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.AddClientKey(ctx, "acme", pub, "laptop", []string{engine.RoleBackup, engine.RoleRestore}); err != nil {
		t.Fatal(err)
	}
	man.Tenants = append(man.Tenants, fixtureTenant{
		Name: "acme", Keys: 1, Forgotten: []string{s1.ID},
		Snapshots: []fixtureSnapshot{{ID: s2.ID, Path: src, Manifest: m2}, {ID: s3.ID, Path: src, Manifest: m3}},
	})

	// Tenant 2: a stream.
	mustTenant(t, e, "stream-co")
	sc := mustOpen(t, e, "stream-co")
	stream := fixtureBytes(3, 200<<10)
	ss, err := sc.BackupStream(ctx, bytes.NewReader(stream), "db.sql", engine.BackupOptions{Host: "db1"})
	if err != nil {
		t.Fatal(err)
	}
	man.Streams[ss.ID] = streamSum(stream)
	man.Tenants = append(man.Tenants, fixtureTenant{Name: "stream-co"})

	// Tenant 3: locked, in its grace period.
	mustTenant(t, e, "leaving")
	lv := mustOpen(t, e, "leaving")
	other := filepath.Join(work, "src", "leaving")
	writeFixtureTree(t, other, 9)
	mustBackup(t, lv, other)
	if _, err := e.LockTenant(ctx, "leaving"); err != nil {
		t.Fatal(err)
	}
	man.Locked = []string{"leaving"}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(repoDir, "lock"))

	raw, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", name+".json"), append(raw, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	tarFixture(t, work, "repo", filepath.Join("testdata", name+".tar.gz"))
}

func mustTenant(t *testing.T, e *engine.Engine, name string) {
	t.Helper()
	if _, err := e.CreateTenant(context.Background(), name, engine.TenantOptions{Contact: "ops@" + name + ".example"}); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t *testing.T, e *engine.Engine, name string) *engine.Tenant {
	t.Helper()
	tn, err := e.OpenTenant(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

func mustBackup(t *testing.T, tn *engine.Tenant, src string) *engine.Snapshot {
	t.Helper()
	s, err := tn.Backup(context.Background(), []string{src}, engine.BackupOptions{Host: "web1", Tags: []string{"nightly"}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fixtureBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		if i%3 == 0 {
			b[i] = byte(r.Uint32())
		} else {
			b[i] = "abcdefgh ijklmnop\n"[r.IntN(18)]
		}
	}
	return b
}

// writeFixtureTree lays out a small tree whose content depends on gen: the
// same files in every generation, one changed, one added, one removed.
func writeFixtureTree(t *testing.T, root string, gen int) {
	t.Helper()
	files := map[string][]byte{
		"index.html":                         []byte("<h1>hello</h1>\n"),
		"css/site.css":                       []byte("h1 { color: teal }\n"),
		"data/blob.bin":                      fixtureBytes(1, 200<<10),
		"data/empty":                         nil,
		"notes/changed.txt":                  fmt.Appendf(nil, "generation %d\n", gen),
		fmt.Sprintf("notes/gen-%d.txt", gen): fixtureBytes(uint64(10+gen), 3000),
	}
	_ = os.RemoveAll(filepath.Join(root, "notes"))
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Remove(filepath.Join(root, "link"))
	if err := os.Symlink("index.html", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "css"), 0o750); err != nil {
		t.Fatal(err)
	}
}

func tarFixture(t *testing.T, base, folder, out string) {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	err := filepath.Walk(filepath.Join(base, folder), func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), Mode: int64(fi.Mode().Perm()), ModTime: fixtureTime, Format: tar.FormatPAX}
		switch {
		case fi.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
			return tw.WriteHeader(h)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Typeflag, h.Size = tar.TypeReg, int64(len(b))
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return fmt.Errorf("%s: not a file or folder", p)
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = os.WriteFile(out, buf.Bytes(), 0o644)
	}
	if err != nil {
		t.Fatalf("write %s: %v", out, err)
	}
}
