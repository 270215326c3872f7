package engine

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"coffer/repo"
	"coffer/repo/drivetest"
)

// The tests of this file run the engine on real S3 servers (versitygw on
// loopback ports; skipped with an install hint without it): one server per
// rack, three buckets per server, k=4, m=2, so a server holds at most two
// shards of a pack.

const s3Marker = "S3-PLAINTEXT-MARKER-91c4e7"

// s3Racks starts one server per rack with three buckets each and returns the
// servers and the nine drive specs (rack r<i> on server i-1).
func s3Racks(t *testing.T, racks int) ([]*drivetest.S3Server, []DriveSpec) {
	t.Helper()
	drivetest.SetS3Credentials(t)
	var servers []*drivetest.S3Server
	var specs []DriveSpec
	for r := range racks {
		s := drivetest.StartS3Server(t, false, "drive-a", "drive-b", "drive-c")
		servers = append(servers, s)
		for _, b := range []string{"drive-a", "drive-b", "drive-c"} {
			specs = append(specs, DriveSpec{Rack: fmt.Sprintf("r%d", r+1), Path: s.URL(b)})
		}
	}
	return servers, specs
}

// s3Tree is a source tree with a plaintext marker in a file name and content.
func s3Tree(t *testing.T, seed int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	entries := append(itModestTree(),
		itEntry{path: "marker-" + s3Marker + ".txt", kind: 'f', data: strings.Repeat(s3Marker+" ", 50)},
		itEntry{path: fmt.Sprintf("seed-%d.bin", seed), kind: 'f', size: 600 << 10})
	itBuildTree(t, src, entries)
	return src
}

// s3Open opens the repository, failing the test on error.
func s3Open(t *testing.T, dir string, o Options) *Engine {
	t.Helper()
	e, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open %s: %v", dir, err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// putHook calls before ahead of every Put of the wrapped drive.
type putHook struct {
	repo.Drive
	before func(name string)
}

func (h putHook) Put(ctx context.Context, name string, data []byte) error {
	h.before(name)
	return h.Drive.Put(ctx, name, data)
}

func (h putHook) Inner() repo.Drive { return h.Drive }

// s3Files returns every file under the servers' folders.
func s3Files(t *testing.T, servers []*drivetest.S3Server) []string {
	t.Helper()
	var out []string
	for _, s := range servers {
		err := filepath.WalkDir(s.Dir, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.Type().IsRegular() {
				out = append(out, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestS3NineDrives(t *testing.T) {
	ctx := context.Background()
	servers, specs := s3Racks(t, 3)
	dir := itInit(t, InitOptions{Drives: specs, DataShards: 4, ParityShards: 2})

	// Round trip.
	src := s3Tree(t, 1)
	e := s3Open(t, dir, Options{})
	for _, d := range e.Drives() {
		if !strings.HasPrefix(d.Path, "s3+http://127.0.0.1:") {
			t.Fatalf("drive %s has path %s, want its URL", d.ID, d.Path)
		}
	}
	tn := itTenant(t, e, "acme")
	snap1 := itBackup(t, tn, src)
	itCompareTrees(t, src, itRestore(t, tn, snap1, src))
	e.Close()

	// One server down: restore identically.
	servers[1].Stop()
	var warn bytes.Buffer
	e = s3Open(t, dir, Options{Warn: &warn})
	if n := strings.Count(warn.String(), "is unavailable"); n != 3 {
		t.Errorf("with a server down, %d drives reported unavailable, want 3:\n%s", n, warn.String())
	}
	itCompareTrees(t, src, itRestore(t, itTenant(t, e, "acme"), snap1, src))
	e.Close()
	servers[1].Start()

	// A server vanishes during a backup: the backup completes on the k+1
	// write quorum, and scrub --repair heals it once the server is back.
	src2 := s3Tree(t, 2)
	var puts atomic.Int64
	var once sync.Once
	e = s3Open(t, dir, Options{WrapDrive: func(id string, d repo.Drive) repo.Drive {
		return putHook{d, func(name string) {
			if strings.Contains(name, "/p/") && puts.Add(1) == 3 {
				once.Do(servers[1].Stop)
			}
		}}
	}})
	snap2 := itBackup(t, itTenant(t, e, "acme"), src2)
	e.Close()
	if puts.Load() < 3 {
		t.Fatalf("only %d shard puts: the server was never stopped", puts.Load())
	}
	servers[1].Start()
	e = s3Open(t, dir, Options{})
	tn = itTenant(t, e, "acme")
	rep, err := itScrub(t, e, false)
	if err == nil || rep.BelowFull == 0 {
		t.Errorf("scrub after a backup with a server down: %v, %d packs below full redundancy; want some\n%s", err, rep.BelowFull, itProblems(rep))
	}
	if rep, err := itScrub(t, e, true); err != nil || rep.StillBelowFull != 0 {
		t.Fatalf("scrub --repair: %v\n%s", err, itProblems(rep))
	}
	itScrubClean(t, e)
	itCompareTrees(t, src2, itRestore(t, tn, snap2, src2))

	// Corrupt a shard object on a server's disk: scrub finds it and heals it.
	var victim string
	for _, f := range s3Files(t, servers[2:]) {
		if strings.Contains(filepath.ToSlash(f), "/p/") {
			victim = f
			break
		}
	}
	if victim == "" {
		t.Fatal("no shard object on the third server")
	}
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(victim, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err = itScrub(t, e, false)
	if err == nil || rep.Corrupt.Found != 1 {
		t.Errorf("scrub of a corrupted object: %v, %d corrupt, want 1\n%s", err, rep.Corrupt.Found, itProblems(rep))
	}
	if rep, err := itScrub(t, e, true); err != nil || rep.Corrupt.Repaired != 1 {
		t.Fatalf("scrub --repair of a corrupted object: %v\n%s", err, itProblems(rep))
	}
	itScrubClean(t, e)

	// Shred a tenant: its objects are gone from every bucket.
	victimSrc := filepath.Join(t.TempDir(), "victim")
	itBuildTree(t, victimSrc, []itEntry{{path: "v.bin", kind: 'f', size: 300 << 10}})
	vt := itTenant(t, e, "victim")
	itBackup(t, vt, victimSrc)
	// The tenant's container t/<id>/ must go; its sealed tombstone record
	// (r/tenants/<id>) stays by design.
	container := "/t/" + vt.container() + "/"
	found := func() int {
		n := 0
		for _, f := range s3Files(t, servers) {
			if strings.Contains(filepath.ToSlash(f), container) {
				n++
			}
		}
		return n
	}
	if found() == 0 {
		t.Fatal("the victim tenant's objects are not on the servers")
	}
	if _, err := e.ShredTenant(ctx, "victim", "victim"); err != nil {
		t.Fatal(err)
	}
	if n := found(); n != 0 {
		t.Errorf("%d objects of the shredded tenant are left on the servers", n)
	}
	e.Close()

	// Lose the index (and the head node): rebuild it from the buckets.
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	if _, err := Rebuild(ctx, dir, RebuildOptions{}); err != nil {
		t.Fatalf("Rebuild from the config's drive URLs: %v", err)
	}
	newDir := filepath.Join(t.TempDir(), "head")
	rb, err := Rebuild(ctx, newDir, RebuildOptions{Drives: specs, MasterKeyFile: filepath.Join(dir, "master.key")})
	if err != nil || rb.Drives != 9 {
		t.Fatalf("Rebuild into a new head node from the buckets: %v (%+v)", err, rb)
	}
	e2, err := Open(newDir, Options{MasterKeyFile: filepath.Join(dir, "master.key")})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	tn2 := itTenant(t, e2, "acme")
	itCompareTrees(t, src, itRestore(t, tn2, snap1, src))
	itCompareTrees(t, src2, itRestore(t, tn2, snap2, src2))

	// No plaintext anywhere on the servers.
	for _, f := range s3Files(t, servers) {
		if strings.Contains(f, s3Marker) {
			t.Errorf("file name %s shows the marker", f)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(s3Marker)) || bytes.Contains(b, []byte("acme")) {
			t.Errorf("%s holds plaintext", f)
		}
	}
	// Credentials are nowhere in the repository folder or on the servers.
	for _, root := range []string{dir, newDir} {
		filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(drivetest.S3SecretKey)) {
					t.Errorf("%s holds the S3 secret", p)
				}
			}
			return nil
		})
	}
}

// TestS3MixedDrives runs a repository of local folders and S3 buckets.
func TestS3MixedDrives(t *testing.T) {
	drivetest.SetS3Credentials(t)
	a := drivetest.StartS3Server(t, false, "drive-a", "drive-b")
	b := drivetest.StartS3Server(t, false, "drive-a")
	local := t.TempDir()
	specs := []DriveSpec{
		{Rack: "r1", Path: filepath.Join(local, "d1")},
		{Rack: "r1", Path: filepath.Join(local, "d2")},
		{Rack: "r2", Path: a.URL("drive-a")},
		{Rack: "r2", Path: a.URL("drive-b")},
		{Rack: "r3", Path: filepath.Join(local, "d3")},
		{Rack: "r3", Path: b.URL("drive-a")},
	}
	dir := itInit(t, InitOptions{Drives: specs})
	src := s3Tree(t, 3)
	e := s3Open(t, dir, Options{})
	tn := itTenant(t, e, "acme")
	snap := itBackup(t, tn, src)
	itCompareTrees(t, src, itRestore(t, tn, snap, src))
	// Adding a bucket (and refusing it twice) works like a folder.
	extra := drivetest.StartS3Server(t, false, "drive-x")
	if _, _, err := e.AddDrive(context.Background(), "r3", extra.URL("drive-x")+"/"); err != nil {
		t.Fatalf("AddDrive of a bucket: %v", err)
	}
	if _, _, err := e.AddDrive(context.Background(), "r3", extra.URL("drive-x")); err == nil {
		t.Error("the same bucket was added twice")
	}
	if _, _, err := e.AddDrive(context.Background(), "r3", extra.URL("nope")); err == nil || !strings.Contains(err.Error(), extra.URL("nope")) {
		t.Errorf("AddDrive of a missing bucket: %v", err)
	}
	e.Close()

	a.Stop()
	e = s3Open(t, dir, Options{})
	itCompareTrees(t, src, itRestore(t, itTenant(t, e, "acme"), snap, src))
	e.Close()
	a.Start()
	e = s3Open(t, dir, Options{})
	// The restore's audit entry went to spare drives while server a was
	// down: scrub --repair moves its copies back where they belong (and
	// a scrub before that says so), then the repository is clean.
	if _, err := e.Scrub(context.Background(), ScrubOptions{Repair: true}); err != nil {
		t.Fatalf("scrub --repair after server a returned: %v", err)
	}
	itScrubClean(t, e)
}
