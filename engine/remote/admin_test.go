package remote

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/engine"
	"coffer/engine/policy"
)

// drivesSize is the bytes of every file on the fixture's drives.
func drivesSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(filepath.Join(dir, "drives"), func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writeSeeded writes one file of size random bytes (seeded) at p.
func writeSeeded(t *testing.T, p string, size int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func snapshotIDs(t *testing.T, e *engine.Engine, tenant string) []string {
	t.Helper()
	tn, err := e.OpenTenant(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := tn.Snapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return ids
}

// adminFixture: alice has s1 (srcA), s2 and s3 (srcB, s3 with one more
// file); bob has one snapshot.
type adminFixture struct {
	*ingestFixture
	srcA, srcB string
	s1, s2, s3 *engine.Snapshot
	bob        *engine.Snapshot
}

func newAdminFixture(t *testing.T) *adminFixture {
	t.Helper()
	f := &adminFixture{ingestFixture: newIngestFixture(t)}
	ctx := context.Background()
	f.srcA, f.srcB = t.TempDir(), t.TempDir()
	writeRandomTree(t, f.srcA, 2<<20)
	writeSeeded(t, filepath.Join(f.srcB, "one.bin"), 1<<20, 7)
	writeSeeded(t, filepath.Join(f.srcB, "sub", "two.bin"), 300000, 8)
	cl := f.dial(t, f.key(t, "alice", "backup"))
	var err error
	if f.s1, err = cl.Backup(ctx, []string{f.srcA}, BackupOptions{Host: "h"}); err != nil {
		t.Fatal(err)
	}
	if f.s2, err = cl.Backup(ctx, []string{f.srcB}, BackupOptions{Host: "h"}); err != nil {
		t.Fatal(err)
	}
	writeSeeded(t, filepath.Join(f.srcB, "three.bin"), 500000, 9)
	if f.s3, err = cl.Backup(ctx, []string{f.srcB}, BackupOptions{Host: "h"}); err != nil {
		t.Fatal(err)
	}
	bc := f.dial(t, f.key(t, "bob", "backup"))
	if f.bob, err = bc.Backup(ctx, []string{f.srcA}, BackupOptions{Host: "h"}); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRemoteAdminForgetPrune: an admin key forgets by ID and by policy
// (a dry run changes nothing), prunes (the drives shrink), and what is
// left restores byte-identical over the wire.
func TestRemoteAdminForgetPrune(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	ad := f.dial(t, f.key(t, "alice", "admin"))
	all := []string{f.s1.ID, f.s2.ID, f.s3.ID}
	same := func(want ...string) {
		t.Helper()
		got := snapshotIDs(t, f.e, "alice")
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("alice's snapshots %v, want %v", got, want)
		}
	}

	// By ID, dry run.
	rep, err := ad.Forget(ctx, []string{f.s1.ID[:8]}, engine.ForgetOptions{DryRun: true})
	if err != nil || !rep.DryRun || len(rep.Removed) != 1 || rep.Removed[0].ID != f.s1.ID || rep.Kept != 2 {
		t.Fatalf("dry-run forget by ID: %+v %v", rep, err)
	}
	same(all...)
	// By policy, dry run: per (host, paths) group, keep the newest.
	p := policy.Policy{Last: 1}
	rep, err = ad.Forget(ctx, nil, engine.ForgetOptions{Policy: p, DryRun: true})
	if err != nil || !rep.DryRun || rep.Policy == "" || len(rep.Groups) != 2 || len(rep.Removed) != 1 || rep.Removed[0].ID != f.s2.ID || rep.Kept != 2 {
		t.Fatalf("dry-run forget by policy: %+v %v", rep, err)
	}
	for _, g := range rep.Groups {
		if len(g.Keep) != 1 || len(g.Keep[0].Reasons) == 0 {
			t.Fatalf("group %+v", g)
		}
	}
	same(all...)
	// IDs and a policy together, or neither: invalid, as locally.
	if _, err := ad.Forget(ctx, []string{f.s1.ID}, engine.ForgetOptions{Policy: p}); !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("IDs and policy: %v", err)
	}
	if _, err := ad.Forget(ctx, nil, engine.ForgetOptions{}); !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("nothing to forget: %v", err)
	}
	// Within durations travel too.
	w, _ := policy.ParseDuration("1y")
	rep, err = ad.Forget(ctx, nil, engine.ForgetOptions{Policy: policy.Policy{Within: w}, DryRun: true})
	if err != nil || len(rep.Removed) != 0 || rep.Kept != 3 || !strings.Contains(rep.Policy, "1y") {
		t.Fatalf("dry-run within: %+v %v", rep, err)
	}

	// Real runs: by policy, then by ID.
	rep, err = ad.Forget(ctx, nil, engine.ForgetOptions{Policy: p})
	if err != nil || rep.DryRun || len(rep.Removed) != 1 || rep.Removed[0].ID != f.s2.ID {
		t.Fatalf("forget by policy: %+v %v", rep, err)
	}
	same(f.s1.ID, f.s3.ID)
	rep, err = ad.Forget(ctx, []string{f.s1.ID}, engine.ForgetOptions{})
	if err != nil || len(rep.Removed) != 1 || rep.Removed[0].ID != f.s1.ID || rep.Kept != 1 {
		t.Fatalf("forget by ID: %+v %v", rep, err)
	}
	same(f.s3.ID)
	if _, err := ad.Forget(ctx, []string{f.s1.ID}, engine.ForgetOptions{}); !errors.Is(err, engine.ErrSnapshotNotFound) {
		t.Fatalf("forget a forgotten snapshot: %v", err)
	}

	// Prune: a dry run changes nothing, a real one shrinks the drives.
	before := drivesSize(t, f.dir)
	prep, name, err := ad.Prune(ctx, engine.PruneOptions{DryRun: true})
	if err != nil || !prep.DryRun || name != "alice" || prep.BytesFreed <= 0 || prep.Tenants != 1 {
		t.Fatalf("dry-run prune: %s %+v %v", name, prep, err)
	}
	if after := drivesSize(t, f.dir); after != before {
		t.Fatalf("dry-run prune changed the drives: %d → %d bytes", before, after)
	}
	prep, name, err = ad.Prune(ctx, engine.PruneOptions{MaxUnusedPercent: 5})
	if err != nil || prep.DryRun || name != "alice" || prep.PacksDeleted+prep.PacksRepacked == 0 || prep.BytesFreed < 2<<20 {
		t.Fatalf("prune: %+v %v", prep, err)
	}
	after := drivesSize(t, f.dir)
	if before-after < 2<<20 {
		t.Fatalf("prune freed %d bytes on the drives (%d → %d), want the 2 MiB of srcA and more", before-after, before, after)
	}
	t.Logf("drives: %d → %d bytes; report freed %d", before, after, prep.BytesFreed)
	same(f.s3.ID)

	// What is left restores byte-identical; bob is untouched.
	target := t.TempDir()
	if _, err := ad.Restore(ctx, f.s3.ID, target, engine.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, f.srcB, filepath.Join(target, f.srcB))
	bc := f.dial(t, f.key(t, "bob", "restore"))
	target = t.TempDir()
	if _, err := bc.Restore(ctx, f.bob.ID, target, engine.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, f.srcA, filepath.Join(target, f.srcA))
	checkRepo(t, f.e)
}

// TestRemoteAdminRoles: backup and restore keys are refused forget and
// prune, whatever they ask, and nothing changes.
func TestRemoteAdminRoles(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	keys := map[string]ed25519.PrivateKey{}
	for _, role := range []string{engine.RoleBackup, engine.RoleRestore} {
		keys[role] = f.key(t, "alice", role)
	}
	// Registering keys writes records; measure after.
	before := drivesSize(t, f.dir)
	for _, role := range []string{engine.RoleBackup, engine.RoleRestore} {
		for _, dry := range []bool{true, false} {
			// A refusal closes the connection: dial again for each request.
			cl := f.dial(t, keys[role])
			if _, err := cl.Forget(ctx, []string{f.s1.ID}, engine.ForgetOptions{DryRun: dry}); !errors.Is(err, ErrRefused) {
				t.Errorf("%s key forget by ID (dry run %v): %v", role, dry, err)
			}
			cl = f.dial(t, keys[role])
			if _, err := cl.Forget(ctx, nil, engine.ForgetOptions{Policy: policy.Policy{Last: 1}, DryRun: dry}); !errors.Is(err, ErrRefused) {
				t.Errorf("%s key forget by policy (dry run %v): %v", role, dry, err)
			}
			cl = f.dial(t, keys[role])
			if _, _, err := cl.Prune(ctx, engine.PruneOptions{DryRun: dry}); !errors.Is(err, ErrRefused) {
				t.Errorf("%s key prune (dry run %v): %v", role, dry, err)
			}
		}
	}
	if got := snapshotIDs(t, f.e, "alice"); len(got) != 3 {
		t.Fatalf("alice has %d snapshots", len(got))
	}
	if after := drivesSize(t, f.dir); after != before {
		t.Fatalf("refused requests changed the drives: %d → %d", before, after)
	}
	// A connection with an open backup session cannot forget (its own
	// session holds the tenant's lock).
	ad := f.dial(t, f.key(t, "alice", "admin", "backup"))
	session(t, ad)
	if _, err := ad.Forget(ctx, []string{f.s1.ID}, engine.ForgetOptions{}); !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("forget during own backup session: %v", err)
	}
}

// TestRemoteAdminIsolation: an admin key of alice asking to forget bob's
// real snapshot gets the answer of a random ID, and bob keeps it; alice's
// prune leaves bob's data alone.
func TestRemoteAdminIsolation(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	ad := f.dial(t, f.key(t, "alice", "admin"))
	random := strings.Repeat("5a", 16)
	probe := func(ref string) string {
		var msgs []string
		for _, dry := range []bool{true, false} {
			rep, err := ad.Forget(ctx, []string{ref}, engine.ForgetOptions{DryRun: dry})
			msgs = append(msgs, fmt.Sprint(rep, err))
			rep, err = ad.Forget(ctx, []string{ref[:8]}, engine.ForgetOptions{DryRun: dry})
			msgs = append(msgs, fmt.Sprint(rep, err))
		}
		s := strings.Join(msgs, "|")
		s = strings.ReplaceAll(s, ref, "REF")
		return strings.ReplaceAll(s, ref[:8], "REF8")
	}
	a, b := probe(f.bob.ID), probe(random)
	if a != b {
		t.Fatalf("bob's snapshot and a random ID answered differently:\n%s\n%s", a, b)
	}
	if !strings.Contains(a, "snapshot not found") {
		t.Fatalf("answer: %s", a)
	}
	if got := snapshotIDs(t, f.e, "bob"); len(got) != 1 || got[0] != f.bob.ID {
		t.Fatalf("bob has %v", got)
	}
	if got := snapshotIDs(t, f.e, "alice"); len(got) != 3 {
		t.Fatalf("alice has %v", got)
	}
	// Alice forgets everything and prunes: bob's snapshot still restores.
	if _, err := ad.Forget(ctx, []string{f.s1.ID, f.s2.ID, f.s3.ID}, engine.ForgetOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ad.Prune(ctx, engine.PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	bc := f.dial(t, f.key(t, "bob", "restore"))
	target := t.TempDir()
	if _, err := bc.Restore(ctx, f.bob.ID, target, engine.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, f.srcA, filepath.Join(target, f.srcA))
	checkRepo(t, f.e)
}
