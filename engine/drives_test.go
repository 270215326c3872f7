package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"coffer/repo"
)

// newTestRepo inits a repository with the default 6 drives and a tenant "t"
// holding one snapshot of a small tree; it returns the open engine, tenant,
// snapshot and source folder.
func newTestRepo(t *testing.T) (*Engine, *Tenant, *Snapshot, string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := Init(ctx, filepath.Join(dir, "repo"), InitOptions{PackSize: minPackSize}); err != nil {
		t.Fatal(err)
	}
	e, err := Open(filepath.Join(dir, "repo"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if _, err := e.CreateTenant(ctx, "t", TenantOptions{}); err != nil {
		t.Fatal(err)
	}
	tn, err := e.OpenTenant(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src")
	writeTestFiles(t, src, 3<<20)
	s, err := tn.Backup(ctx, []string{src}, BackupOptions{Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	return e, tn, s, src
}

func writeTestFiles(t *testing.T, dir string, size int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "small"), []byte("small file"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDriveFailAndAdd(t *testing.T) {
	ctx := context.Background()
	e, tn, s, src := newTestRepo(t)
	drives := e.Drives()
	failed, err := e.FailDrive(ctx, drives[0].ID[:6])
	if err != nil {
		t.Fatal(err)
	}
	if failed.State != driveFailed {
		t.Fatalf("state %q", failed.State)
	}
	if _, err := e.FailDrive(ctx, drives[0].ID); !errors.Is(err, ErrInvalid) {
		t.Fatalf("failing twice: %v", err)
	}
	// A backup with one drive out of service still succeeds (write quorum
	// k+1) and is counted below full redundancy.
	if err := os.WriteFile(filepath.Join(src, "new"), bytes.Repeat([]byte("n"), 100), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.Backup(ctx, []string{src}, BackupOptions{Host: "h"}); err != nil {
		t.Fatalf("backup with a failed drive: %v", err)
	}
	rep, err := e.DriveReport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Degraded == 0 || rep.Degraded > rep.Packs {
		t.Fatalf("degraded %d of %d packs", rep.Degraded, rep.Packs)
	}
	// Reads avoid the failed drive: remove its folder, restore still works.
	if err := os.RemoveAll(failed.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.Restore(ctx, s, t.TempDir(), RestoreOptions{}); err != nil {
		t.Fatalf("restore with the failed drive gone: %v", err)
	}

	// Add a drive; the config on the drives and in the index knows it.
	added, warning, err := e.AddDrive(ctx, "r1", filepath.Join(filepath.Dir(failed.Path), "d7"))
	if err != nil {
		t.Fatal(err)
	}
	if warning != "" {
		t.Errorf("unexpected rack warning: %s", warning)
	}
	if len(e.Drives()) != 7 {
		t.Fatalf("%d drives after add", len(e.Drives()))
	}
	drv, _ := repo.NewDirDrive(added.Path)
	ident, err := repo.ReadIdentity(ctx, drv)
	if err != nil || ident.Drive.String() != added.ID || ident.Rack != "r1" {
		t.Fatalf("identity of the new drive: %+v, %v", ident, err)
	}
	if _, _, err := e.AddDrive(ctx, "r1", added.Path); !errors.Is(err, ErrInvalid) {
		t.Fatalf("adding the same folder twice: %v", err)
	}
	// The change survives reopening.
	dir := e.Dir()
	e.Close()
	e2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if len(e2.Drives()) != 7 {
		t.Fatalf("%d drives after reopen", len(e2.Drives()))
	}
	for _, d := range e2.Drives() {
		if d.ID == failed.ID && d.State != driveFailed {
			t.Fatalf("failed drive is %q after reopen", d.State)
		}
	}
}

func TestAddForeignDrive(t *testing.T) {
	ctx := context.Background()
	e, _, _, _ := newTestRepo(t)
	other := filepath.Join(t.TempDir(), "other")
	if _, err := Init(ctx, other, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.AddDrive(ctx, "r1", filepath.Join(other, "drives", "d1")); !errors.Is(err, repo.ErrForeignDrive) {
		t.Fatalf("adding another repository's drive: %v", err)
	}
	if _, _, err := e.AddDrive(ctx, "bad rack!", t.TempDir()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad rack label: %v", err)
	}
}

func TestAddDriveAdoptsInterruptedAdd(t *testing.T) {
	ctx := context.Background()
	e, _, _, _ := newTestRepo(t)
	// An add that wrote the identity and then crashed before the config.
	path := t.TempDir()
	drv, _ := repo.NewDirDrive(path)
	var id repo.DriveID
	id[0] = 0x42
	if err := repo.WriteIdentity(ctx, drv, repo.Identity{Repository: e.cfg.repoID(), Drive: id, Rack: "r2"}); err != nil {
		t.Fatal(err)
	}
	d, _, err := e.AddDrive(ctx, "r2", path)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != id.String() {
		t.Fatalf("adopted drive has ID %s, want %s", d.ID, id)
	}
}

func TestTooFewDrivesToWrite(t *testing.T) {
	ctx := context.Background()
	e, tn, s, src := newTestRepo(t)
	for _, d := range e.Drives()[:2] {
		if _, err := e.FailDrive(ctx, d.ID); err != nil {
			t.Fatal(err)
		}
	}
	// 4 drives left: below the write quorum of 5, the backup fails cleanly...
	if err := os.WriteFile(filepath.Join(src, "more"), bytes.Repeat([]byte{1, 2, 3}, 1<<18), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.Backup(ctx, []string{src}, BackupOptions{Host: "h"}); !errors.Is(err, repo.ErrTooFewDrives) {
		t.Fatalf("backup with 4 of 6 drives: %v", err)
	}
	// ...and what was there is still readable and consistent.
	if _, err := tn.Restore(ctx, s, t.TempDir(), RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	ss, _ := tn.Snapshots(ctx)
	if len(ss) != 1 {
		t.Fatalf("%d snapshots after a failed backup", len(ss))
	}
}

func TestRackWarning(t *testing.T) {
	drives := func(racks ...string) []driveConfig {
		var out []driveConfig
		for _, r := range racks {
			out = append(out, driveConfig{Rack: r, State: driveActive})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		drives []driveConfig
		k, m   int
		warn   bool
	}{
		{"3 racks, 4+2", drives("r1", "r1", "r2", "r2", "r3", "r3"), 4, 2, false},
		{"2 racks, 4+2", drives("r1", "r1", "r1", "r2", "r2", "r2"), 4, 2, true},
		{"1 rack", drives("r1", "r1", "r1", "r1", "r1", "r1"), 4, 2, true},
		{"6 racks, 4+1", drives("a", "b", "c", "d", "e", "f"), 4, 1, false},
	} {
		if got := rackWarning(tc.drives, tc.k, tc.m) != ""; got != tc.warn {
			t.Errorf("%s: warning %v, want %v", tc.name, got, tc.warn)
		}
	}
}
