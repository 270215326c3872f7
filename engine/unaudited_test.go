package engine

import (
	"context"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"coffer/repo"
	"coffer/repo/drivetest"
)

// TestVerifyAuditFindsUnauditedSnapshot is case 5 of issue 16: backups
// saved their snapshot without an audit entry and audit --verify passed.
// A snapshot in the index, or only on the drives, without its "backup"
// entry is now a verification failure naming it.
func TestVerifyAuditFindsUnauditedSnapshot(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{PackSize: minPackSize})
	e := itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	src := filepath.Join(t.TempDir(), "src")
	writeTestFiles(t, src, 64<<10)
	audited := itBackup(t, tn, src)
	rep, err := e.VerifyAudit(ctx)
	if err != nil || rep.Snapshots != 1 {
		t.Fatalf("verify after an audited backup: %+v, %v", rep, err)
	}

	// A snapshot saved without its entry (what the CLI let pass when the
	// entry failed), and a snapshot record on the drives alone.
	var idx, drv [16]byte
	randomBytes(idx[:])
	randomBytes(drv[:])
	s := &Snapshot{Time: audited.Time, Host: "h", Paths: audited.Paths, Tree: audited.Tree, Program: ProgramVersion}
	if err := tn.commitSnapshot(ctx, s, idx); err != nil {
		t.Fatal(err)
	}
	if err := e.rp().PutRecord(ctx, snapshotRecordName(tn.id, drv), []byte("a snapshot record the index does not know")); err != nil {
		t.Fatal(err)
	}
	rep, err = e.VerifyAudit(ctx)
	if !errors.Is(err, ErrCheckFailed) || rep.Snapshots != 3 || len(rep.Problems) != 2 {
		t.Fatalf("verify with two unaudited snapshots: %+v, %v", rep, err)
	}
	for _, id := range [][16]byte{idx, drv} {
		want := "snapshot " + hex.EncodeToString(id[:]) + " of tenant " + tn.ID() + " has no backup entry"
		if !strings.Contains(strings.Join(rep.Problems, "\n"), want) {
			t.Errorf("problems %q do not say %q", rep.Problems, want)
		}
	}
}

// TestBackupUnauditedSavesNothing: a backup whose audit entry cannot be
// written (puts of audit entries fail on every drive) fails, says so, and
// saves no snapshot; once the drives take writes, the log verifies and
// accounts for every snapshot.
func TestBackupUnauditedSavesNothing(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{PackSize: minPackSize})
	var faults []*drivetest.Faulty
	e, err := Open(dir, Options{WrapDrive: func(_ string, d repo.Drive) repo.Drive {
		f := drivetest.NewFaulty(d)
		faults = append(faults, f)
		return f
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	tn := itTenant(t, e, "acme")
	src := filepath.Join(t.TempDir(), "src")
	writeTestFiles(t, src, 64<<10)
	for _, f := range faults {
		f.Add(drivetest.Rule{Op: drivetest.OpPut, Name: auditEntryPrefix, Action: drivetest.Fail, Err: syscall.EROFS})
	}
	s, err := tn.Backup(ctx, []string{src}, BackupOptions{})
	if s != nil || err == nil || !strings.Contains(err.Error(), "the backup was not saved, as its audit entry could not be written") {
		t.Fatalf("backup without its audit entry: %v, %v", s, err)
	}
	if all, err := tn.Snapshots(ctx); err != nil || len(all) != 0 {
		t.Fatalf("snapshots after the unaudited backup: %v, %v", all, err)
	}
	for _, f := range faults {
		f.Reset()
	}
	itBackup(t, tn, src)
	if rep, err := e.VerifyAudit(ctx); err != nil || rep.Snapshots != 1 {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}
