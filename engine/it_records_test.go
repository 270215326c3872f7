package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"coffer/repo"
)

// TestITReplaceEveryDrive replaces the six drives of a 3-rack repository one
// after another by the documented procedure (the folder is lost, drive fail,
// drive add, scrub --repair), checking after each round that check
// --read-data is clean, no pack is below full redundancy and a second scrub
// finds nothing. Then a new head node rebuilt from the drives alone finds
// every tenant and snapshot and restores each byte for byte, and an index
// rebuilt in place followed by scrub --repair deletes nothing.
func TestITReplaceEveryDrive(t *testing.T) {
	if testing.Short() {
		t.Skip("six rounds of scrub")
	}
	ctx := context.Background()
	f := rbNewFixture(t)
	for round, old := range itDriveDirs(t, f.dir) {
		replaceDrive(t, f.dir, old, filepath.Join(f.dir, "drives", fmt.Sprintf("new%d", round+1)))
		e := itOpen(t, f.dir)
		rep, err := e.Scrub(ctx, ScrubOptions{Repair: true})
		if err != nil {
			t.Fatalf("round %d: scrub --repair: %v\n%+v", round+1, err, rep.Problems)
		}
		// drive fail and drive add re-placed every record already.
		if rep.Records.Found != 0 || rep.RecordsChecked == 0 {
			t.Fatalf("round %d: scrub after drive fail and add: %d of %d records not whole: %+v", round+1, rep.Records.Found, rep.RecordsChecked, rep.Problems)
		}
		if rep, err := e.Scrub(ctx, ScrubOptions{}); err != nil || len(rep.Problems) > 0 {
			t.Fatalf("round %d: second scrub: %v %+v", round+1, err, rep)
		}
		if rep, err := e.Check(ctx, CheckOptions{ReadData: true}); err != nil || len(rep.Problems) > 0 {
			t.Fatalf("round %d: check --read-data: %v %+v", round+1, err, rep)
		}
		if dr, err := e.DriveReport(ctx); err != nil || dr.Degraded != 0 {
			t.Fatalf("round %d: drive list: %v, %d packs below full redundancy", round+1, err, dr.Degraded)
		}
		e.Close()
	}
	rbRestoreAll(t, f.dir, Options{}, f.sources)

	t.Run("new head node", func(t *testing.T) {
		var drives []DriveSpec
		for _, d := range itDriveDirs(t, f.dir) {
			drives = append(drives, DriveSpec{Rack: "any", Path: d})
		}
		key := filepath.Join(t.TempDir(), "master.key")
		raw, err := os.ReadFile(defaultKeyFile(f.dir))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(key, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		newDir := filepath.Join(t.TempDir(), "head")
		rep := rbRebuild(t, newDir, RebuildOptions{Drives: drives, MasterKeyFile: key})
		if rep.Tenants != 2 || rep.Snapshots != 3 {
			t.Fatalf("rebuilt on a new head: %d tenants, %d snapshots, want 2 and 3 (%q)", rep.Tenants, rep.Snapshots, rep.Warnings)
		}
		rbRestoreAll(t, newDir, Options{MasterKeyFile: key}, f.sources)
	})

	t.Run("index rebuilt in place", func(t *testing.T) {
		if err := os.RemoveAll(indexDir(f.dir)); err != nil {
			t.Fatal(err)
		}
		rbRebuild(t, f.dir, RebuildOptions{})
		e := itOpen(t, f.dir)
		rep, err := e.Scrub(ctx, ScrubOptions{Repair: true})
		if err != nil || rep.Orphaned.Found != 0 || rep.Misplaced.Found != 0 {
			t.Fatalf("scrub --repair after the rebuild: %v, %d orphaned, %d misplaced: %+v", err, rep.Orphaned.Found, rep.Misplaced.Found, rep)
		}
		e.Close()
		rbRestoreAll(t, f.dir, Options{}, f.sources)
	})
}

// replaceDrive runs the documented replacement of the drive folder old of
// the closed repository dir: the folder is lost (rm -rf), the drive is
// marked failed, and a new folder at path is added in the same rack. Each
// step opens the repository anew, as the command line does.
func replaceDrive(t *testing.T, dir, old, path string) {
	t.Helper()
	ctx := context.Background()
	drv, err := repo.NewDirDrive(old)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := repo.ReadIdentity(ctx, drv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(old); err != nil {
		t.Fatal(err)
	}
	e := itOpen(t, dir)
	ch, err := e.FailDrive(ctx, ident.Drive.String())
	if err != nil {
		t.Fatalf("drive fail %s: %v", ident.Drive, err)
	}
	if ch.RecordsReplaced == 0 {
		t.Errorf("drive fail %s re-placed no record of the %d", ident.Drive, ch.RecordsChecked)
	}
	e.Close()
	e = itOpen(t, dir)
	if _, _, err := e.AddDrive(ctx, ident.Rack, path); err != nil {
		t.Fatalf("drive add %s: %v", path, err)
	}
	e.Close()
}
