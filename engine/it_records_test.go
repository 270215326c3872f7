package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"coffer/repo"
	"coffer/repo/drivetest"
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

// TestITBadDriveIsFailedNotFatal: one drive refuses every write (read-only
// file system, or full). Backups, restores and their audit entries keep
// working, the drive is shown suspect (also after reopening), scrub says so,
// drive fail works although the drive held a copy of the config, and after
// a replacement drive and scrub --repair every record is whole on the other
// drives: a head node rebuilt from them alone finds every tenant and
// snapshot.
func TestITBadDriveIsFailedNotFatal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		reason string
	}{
		{"read-only", syscall.EROFS, "read-only file system"},
		{"full", syscall.ENOSPC, "no space left on device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := itInit(t, InitOptions{})
			victim, victimDir := driveHolding(t, dir, configName)
			o := Options{WrapDrive: func(id string, d repo.Drive) repo.Drive {
				if id != victim {
					return d
				}
				f := drivetest.NewFaulty(d)
				f.Add(drivetest.Rule{Op: drivetest.OpPut, Action: drivetest.Fail, Err: tc.err})
				return f
			}}
			e, err := Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			var sources []rbSource
			for i, name := range []string{"acme", "acme", "zeta"} {
				src := filepath.Join(t.TempDir(), fmt.Sprintf("src%d", i))
				itBuildTree(t, src, rbTree(i))
				s := itBackup(t, itTenant(t, e, name), src)
				sources = append(sources, rbSource{tenant: name, src: src, snap: s})
			}
			restoreAll(t, e, sources)
			assertSuspect(t, e, victim, tc.reason)
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}

			// The mark is kept for the next process; scrub reports it.
			e, err = Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			assertSuspect(t, e, victim, tc.reason)
			rep, err := e.Scrub(ctx, ScrubOptions{})
			if !errors.Is(err, ErrCheckFailed) || rep.SuspectDrives != 1 {
				t.Fatalf("scrub with a suspect drive: %v, %d suspect drives", err, rep.SuspectDrives)
			}
			failed, err := e.FailDrive(ctx, victim)
			if err != nil {
				t.Fatalf("drive fail of the drive that refuses writes: %v", err)
			}
			if _, _, err := e.AddDrive(ctx, failed.Rack, filepath.Join(dir, "drives", "new")); err != nil {
				t.Fatalf("drive add of its replacement: %v", err)
			}
			if rep, err := e.Scrub(ctx, ScrubOptions{Repair: true}); err != nil {
				t.Fatalf("scrub --repair after drive fail: %v\n%s", err, itProblems(rep))
			}
			if rep, err := e.Scrub(ctx, ScrubOptions{}); err != nil || len(rep.Problems) != 0 {
				t.Fatalf("second scrub: %v %+v", err, rep.Problems)
			}
			restoreAll(t, e, sources)
			if rep, err := e.VerifyAudit(ctx); err != nil || len(rep.Problems) != 0 {
				t.Fatalf("audit --verify: %v %q", err, rep.Problems)
			}
			e.Close()

			// The other drives alone hold every record.
			var drives []DriveSpec
			for _, d := range itDriveDirs(t, dir) {
				if d != victimDir {
					drives = append(drives, DriveSpec{Rack: "any", Path: d})
				}
			}
			key := filepath.Join(t.TempDir(), "master.key")
			raw, err := os.ReadFile(defaultKeyFile(dir))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(key, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			head := filepath.Join(t.TempDir(), "head")
			if rb := rbRebuild(t, head, RebuildOptions{Drives: drives, MasterKeyFile: key}); rb.Tenants != 2 || rb.Snapshots != 3 {
				t.Fatalf("rebuilt from the other drives: %d tenants, %d snapshots", rb.Tenants, rb.Snapshots)
			}
			rbRestoreAll(t, head, Options{MasterKeyFile: key}, sources)
		})
	}
}

// driveHolding returns the ID and folder of a drive of the repository in
// dir that holds a copy of record name.
func driveHolding(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	for _, d := range itDriveDirs(t, dir) {
		if _, err := os.Stat(filepath.Join(d, filepath.FromSlash(name))); err != nil {
			continue
		}
		drv, err := repo.NewDirDrive(d)
		if err != nil {
			t.Fatal(err)
		}
		ident, err := repo.ReadIdentity(context.Background(), drv)
		if err != nil {
			t.Fatal(err)
		}
		return ident.Drive.String(), d
	}
	t.Fatalf("no drive holds %s", name)
	return "", ""
}

// restoreAll restores every source's snapshot through e and compares it.
func restoreAll(t *testing.T, e *Engine, sources []rbSource) {
	t.Helper()
	for _, s := range sources {
		tn, err := e.OpenTenant(context.Background(), s.tenant)
		if err != nil {
			t.Fatal(err)
		}
		itCompareTrees(t, s.src, itRestore(t, tn, s.snap, s.src))
	}
}

// assertSuspect checks that drive list shows drive id suspect for reason.
func assertSuspect(t *testing.T, e *Engine, id, reason string) {
	t.Helper()
	rep, err := e.DriveReport(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.Drives {
		want := ""
		if d.ID == id {
			want = reason
		}
		if d.Suspect != want || (want != "") != (d.SuspectSince != nil) {
			t.Errorf("drive %s: suspect %q since %v, want %q", d.ID, d.Suspect, d.SuspectSince, want)
		}
	}
}

// plRecordDamage damages the records of the repository in dir (closed): a
// snapshot record loses a copy, the tenant record gets a stale copy and
// loses another, and the config gets a copy off its placement.
func plRecordDamage(t *testing.T, dir string, e *Engine, tn *Tenant, s *Snapshot) {
	t.Helper()
	ctx := context.Background()
	snap := recordFiles(t, dir, "t/"+tn.ID()+"/s/"+s.ID)
	mustRemove(t, snap[0])
	ten := recordFiles(t, dir, "r/tenants/"+tn.ID())
	old, err := os.ReadFile(ten[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.LockTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.UnlockTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, ten[1], old)
	mustRemove(t, ten[2])
	cfg := recordFiles(t, dir, configName)
	b, err := os.ReadFile(cfg[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range itDriveDirs(t, dir) {
		if p := filepath.Join(d, configName); !slices.Contains(cfg, p) {
			mustWrite(t, p, b)
			break
		}
	}
}

// plRecordCase loses power at drive write at (0: never) of a scrub --repair
// that heals damaged records. Afterwards the next repair completes, and a
// head node rebuilt from the drives alone finds the tenant and its snapshot:
// no crash point of a record repair leaves a record with fewer copies than
// it had. It returns the writes counted.
func plRecordCase(t *testing.T, at int, seed uint64) int {
	ctx := context.Background()
	f := itNewFixture(t, InitOptions{}, itScrubTree())
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	plRecordDamage(t, f.dir, e, tn, f.snap)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	power := &plPower{writesOnly: true}
	e2, err := Open(f.dir, Options{WrapDrive: power.wrap})
	if err != nil {
		t.Fatal(err)
	}
	power.arm(at, seed, nil)
	rep, errS := e2.Scrub(ctx, ScrubOptions{Repair: true})
	ops, lost := power.state()
	if !lost && (errS != nil || rep.Records.Repaired != 3) {
		t.Fatalf("scrub --repair without a power loss: %v, %d records repaired: %s", errS, rep.Records.Repaired, itProblems(rep))
	}
	_ = e2.Close()
	what := fmt.Sprintf("power lost at drive write %d of a record repair (of %d; lost %v)", at, ops, lost)

	e3 := itOpen(t, f.dir)
	if _, err := e3.Scrub(ctx, ScrubOptions{Repair: true}); err != nil {
		t.Fatalf("%s: the next scrub --repair: %v", what, err)
	}
	if rep, err := e3.Scrub(ctx, ScrubOptions{}); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("%s: scrub after the next repair: %v\n%s", what, err, itProblems(rep))
	}
	e3.Close()
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
	head := filepath.Join(t.TempDir(), "head")
	if rb := rbRebuild(t, head, RebuildOptions{Drives: drives, MasterKeyFile: key}); rb.Tenants != 1 || rb.Snapshots != 1 {
		t.Fatalf("%s: rebuilt from the drives: %d tenants, %d snapshots", what, rb.Tenants, rb.Snapshots)
	}
	rbRestoreAll(t, head, Options{MasterKeyFile: key}, []rbSource{{tenant: f.name, src: f.src, snap: f.snap}})
	return ops
}

// TestCrashPowerLossRecordRepair loses power at every drive write of a
// repairing scrub that heals records.
func TestCrashPowerLossRecordRepair(t *testing.T) {
	const seed = 20250301
	var total int
	t.Run("clean", func(t *testing.T) { total = plRecordCase(t, 0, seed) })
	if t.Failed() || total == 0 {
		t.Fatalf("the clean run failed or counted no drive writes (%d)", total)
	}
	step := 1
	if testing.Short() {
		step = max(1, total/4)
	}
	for at := 1; at <= total; at += step {
		t.Run(fmt.Sprintf("write%02d", at), func(t *testing.T) { plRecordCase(t, at, seed+uint64(at)) })
	}
}
