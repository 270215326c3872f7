package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	mathrand "math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"coffer/index"
	"coffer/repo"
	"coffer/repo/drivetest"
)

// lcRepo makes a repository with tenants a, b, c, each holding one snapshot
// of its own small tree. It returns the repository folder and the sources.
func lcRepo(t *testing.T, now func() time.Time) (string, map[string]string) {
	t.Helper()
	ctx := context.Background()
	root := t.TempDir()
	dir := filepath.Join(root, "repo")
	if _, err := Init(ctx, dir, InitOptions{PackSize: minPackSize}); err != nil {
		t.Fatal(err)
	}
	e, err := Open(dir, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	srcs := map[string]string{}
	for _, name := range []string{"a", "b", "c"} {
		if _, err := e.CreateTenant(ctx, name, TenantOptions{}); err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(root, "src-"+name)
		writeTestFiles(t, src, 1<<20+len(name))
		if err := os.WriteFile(filepath.Join(src, "own"), []byte("tenant "+name), 0o644); err != nil {
			t.Fatal(err)
		}
		tn, err := e.OpenTenant(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tn.Backup(ctx, []string{src}, BackupOptions{Host: "h"}); err != nil {
			t.Fatal(err)
		}
		srcs[name] = src
	}
	return dir, srcs
}

func restoreEqual(t *testing.T, e *Engine, name, src string) {
	t.Helper()
	ctx := context.Background()
	tn, err := e.OpenTenant(ctx, name)
	if err != nil {
		t.Fatalf("open tenant %s: %v", name, err)
	}
	s, err := tn.FindSnapshot(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if _, err := tn.Restore(ctx, s, dst, RestoreOptions{}); err != nil {
		t.Fatalf("restore tenant %s: %v", name, err)
	}
	out, err := exec.Command("diff", "-r", src, filepath.Join(dst, src)).CombinedOutput()
	if err != nil {
		t.Fatalf("restore of tenant %s differs: %s", name, out)
	}
}

func TestLockBlocksDataAndUnlockRestores(t *testing.T) {
	ctx := context.Background()
	dir, srcs := lcRepo(t, nil)
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	tn, _ := e.OpenTenant(ctx, "a")
	ti, err := e.LockTenant(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if ti.State != StateLocked || ti.DeleteAfter == nil || ti.DeleteAfter.Sub(*ti.LockedAt) != DefaultGracePeriod {
		t.Fatalf("locked info %+v", ti)
	}
	if _, err := e.OpenTenant(ctx, "a"); !errors.Is(err, ErrTenantLocked) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("open locked tenant: %v", err)
	}
	// A handle opened before the lock must not get data in or out either.
	_ = tn
	if _, err := e.LockTenant(ctx, "a"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("locking twice: %v", err)
	}
	restoreEqual(t, e, "b", srcs["b"]) // others unaffected
	if _, err := e.UnlockTenant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	restoreEqual(t, e, "a", srcs["a"])
	if _, err := e.UnlockTenant(ctx, "a"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unlocking an unlocked tenant: %v", err)
	}
}

// passDays moves the fake clock *now forward by days, one day at a time,
// with an audited action (tenant set of tenant name) each day: the records
// that show the time passing, as daily backups or a daily sweep would.
func passDays(t *testing.T, e *Engine, now *time.Time, name string, days int) {
	t.Helper()
	for range days {
		*now = now.Add(24 * time.Hour)
		if _, err := e.UpdateTenant(context.Background(), name, TenantUpdate{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnlockAfterGraceRefused(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	clock := func() time.Time { return now }
	dir, _ := lcRepo(t, clock)
	e, err := Open(dir, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.LockTenant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	passDays(t, e, &now, "b", 28)
	now = now.Add(time.Hour)
	if _, err := e.UnlockTenant(ctx, "a"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unlock after the grace period: %v", err)
	}
}

func TestSweepGraceBoundaries(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	clock := func() time.Time { return now }
	dir, srcs := lcRepo(t, clock)
	e, err := Open(dir, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ti, err := e.LockTenant(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	day := 24 * time.Hour
	passDays(t, e, &now, "b", 27)
	rep, err := e.SweepTenants(ctx, ti.DeleteAfter.Add(-day))
	if err != nil || len(rep.Shredded) != 0 {
		t.Fatalf("sweep at grace-1d: %+v, %v", rep, err)
	}
	if _, err := e.UnlockTenant(ctx, "a"); err != nil {
		t.Fatalf("tenant kept by the early sweep cannot be unlocked: %v", err)
	}
	if _, err := e.LockTenant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	passDays(t, e, &now, "b", 29)
	rep, err = e.SweepTenants(ctx, now)
	if err != nil || len(rep.Shredded) != 1 {
		t.Fatalf("sweep at grace+1d: %+v, %v", rep, err)
	}
	if _, err := e.OpenTenant(ctx, "a"); !errors.Is(err, ErrTenantNotFound) {
		t.Fatalf("shredded tenant still there: %v", err)
	}
	rep, err = e.SweepTenants(ctx, now)
	if err != nil || len(rep.Shredded) != 0 {
		t.Fatalf("second sweep: %+v, %v", rep, err)
	}
	restoreEqual(t, e, "b", srcs["b"])
	restoreEqual(t, e, "c", srcs["c"])
	// The name can be reused, with a new key.
	if _, err := e.CreateTenant(ctx, "a", TenantOptions{}); err != nil {
		t.Fatalf("reuse the name: %v", err)
	}
}

// TestShredIsIrrevocable copies every file of the repository before a shred
// and proves, with the new master key, that nothing of the tenant opens from
// the copy or the live repository, that the raw tenant key is in no file,
// and that the other tenants restore.
func TestShredIsIrrevocable(t *testing.T) {
	ctx := context.Background()
	dir, srcs := lcRepo(t, nil)
	escrow := filepath.Join(t.TempDir(), "escrow.key")
	e, err := Open(dir, Options{Escrow: []string{escrow}})
	if err != nil {
		t.Fatal(err)
	}
	te, err := e.findTenant("a")
	if err != nil {
		t.Fatal(err)
	}
	tk, err := e.tenantKey(te) // the test hook: the raw key before the shred
	if err != nil {
		t.Fatal(err)
	}
	rawTK := *tk
	victim := te.rec.ID
	e.Close()
	copyDir := filepath.Join(t.TempDir(), "before")
	if out, err := exec.Command("cp", "-a", dir, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("copy: %s", out)
	}

	e, err = Open(dir, Options{Escrow: []string{escrow}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := e.ShredTenant(ctx, "a", "a")
	if err != nil {
		t.Fatal(err)
	}
	if rep.NewEpoch != 2 || rep.DestroyedEpoch != 1 || len(rep.KeyFiles) != 2 {
		t.Fatalf("report %+v", rep)
	}
	newMK := e.currentKey()
	restoreEqual(t, e, "b", srcs["b"])
	restoreEqual(t, e, "c", srcs["c"])
	e.Close()
	esc, err := readMasterKeyFile(escrow)
	if err != nil || esc.raw != newMK.raw || esc.epoch != 2 {
		t.Fatalf("escrow copy: %v", err)
	}
	old, err := readMasterKeyFile(filepath.Join(copyDir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	newMK.repo = old.repo

	for _, root := range []string{copyDir, dir} {
		// No file holds the raw tenant key.
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if bytes.Contains(b, rawTK[:]) {
				t.Errorf("%s holds the raw tenant key", p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// No tenant record of the victim, on any drive or in the index,
		// opens or unwraps with the new master key.
		opened := 0
		try := func(where string, wrapped, sealed []byte, version uint64, epoch uint32) {
			if len(wrapped) > 0 {
				if _, err := unwrapTenantKey(newMasterKey(newMK.repo, epoch, newMK.raw), victim, wrapped); err == nil {
					t.Errorf("%s: the victim's key unwraps with the new master key", where)
				}
			}
			for _, flags := range []byte{0, recFlagTombstone} {
				r := &record{Kind: recTenant, Flags: flags, Version: version, Body: sealed}
				if body, err := openRecord(&newMK.admin, r, victim, tenantRecordName(victim)); err == nil && bytes.Contains(body, []byte("wrapped_key\":\"")) && !bytes.Contains(body, []byte("wrapped_key\":null")) {
					opened++
				}
			}
		}
		drives, _ := filepath.Glob(filepath.Join(root, "drives", "*"))
		for _, d := range drives {
			b, err := os.ReadFile(filepath.Join(d, tenantRecordName(victim)))
			if err != nil {
				continue
			}
			r, err := decodeRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			try(d, nil, r.Body, r.Version, 0)
		}
		db, err := index.Open(filepath.Join(root, "index"), index.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Tenants(func(rec index.TenantRec) error {
			if rec.ID == victim {
				try(root+" index", rec.Wrapped, rec.Meta, rec.Version, rec.Epoch)
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		if opened > 0 {
			t.Errorf("%s: %d records of the victim with a wrapped key open under the new master key", root, opened)
		}
	}
	// The victim's shards are gone from the live drives.
	live, _ := filepath.Glob(filepath.Join(dir, "drives", "*", "t", fmt.Sprintf("%x", victim[:])))
	if len(live) != 0 {
		t.Errorf("the victim's containers remain: %v", live)
	}
	// The old key no longer opens the live repository.
	if _, err := Open(dir, Options{MasterKeyFile: filepath.Join(copyDir, "master.key")}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old master key opens the repository: %v", err)
	}
}

// TestShredSurvivesFailureAtEveryStep injects a drive failure at the n-th
// drive write of a shred, for every n, then reopens and reruns: the shred
// completes and no other tenant loses anything.
func TestShredSurvivesFailureAtEveryStep(t *testing.T) {
	ctx := context.Background()
	base, srcs := lcRepo(t, nil)
	// Count the drive writes of an undisturbed shred.
	count := func() int {
		dir := filepath.Join(t.TempDir(), "r")
		if out, err := exec.Command("cp", "-a", base, dir).CombinedOutput(); err != nil {
			t.Fatalf("copy: %s", out)
		}
		var faults []*drivetest.Faulty
		e, err := Open(dir, Options{WrapDrive: func(id string, d repo.Drive) repo.Drive {
			f := drivetest.NewFaulty(d)
			faults = append(faults, f)
			return f
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		if _, err := e.ShredTenant(ctx, "a", "a"); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range faults {
			n += f.Calls(drivetest.OpPut) + f.Calls(drivetest.OpDelete)
		}
		return n
	}
	total := count()
	var victimHex string
	{
		e, err := Open(base, Options{})
		if err != nil {
			t.Fatal(err)
		}
		te, err := e.findTenant("a")
		e.Close()
		if err != nil {
			t.Fatal(err)
		}
		victimHex = fmt.Sprintf("%x", te.rec.ID[:])
	}
	step := 1
	if testing.Short() {
		step = max(1, total/6)
	}
	for n := 0; n < total; n += step {
		dir := filepath.Join(t.TempDir(), "r")
		if out, err := exec.Command("cp", "-a", base, dir).CombinedOutput(); err != nil {
			t.Fatalf("copy: %s", out)
		}
		var ops atomic.Int64 // drives are written from several goroutines
		e, err := Open(dir, Options{WrapDrive: func(id string, d repo.Drive) repo.Drive {
			return &countingDrive{Drive: d, fail: func() bool {
				return ops.Add(1) > int64(n)
			}}
		}})
		if err != nil {
			t.Fatal(err)
		}
		_, serr := e.ShredTenant(ctx, "a", "a")
		e.Close()
		// "Power back": reopen without faults and rerun.
		e, err = Open(dir, Options{})
		if err != nil {
			t.Fatalf("fault after %d writes: reopen: %v", n, err)
		}
		if _, err := e.ShredTenant(ctx, "a", "a"); err != nil && !errors.Is(err, ErrTenantNotFound) {
			t.Fatalf("fault after %d writes (first run: %v): rerun: %v", n, serr, err)
		}
		if e.pending() {
			t.Fatalf("fault after %d writes: shred still pending after the rerun", n)
		}
		if _, err := e.OpenTenant(ctx, "a"); !errors.Is(err, ErrTenantNotFound) {
			t.Fatalf("fault after %d writes: tenant a survives: %v", n, err)
		}
		// The old epoch is destroyed: the key file holds only a newer one,
		// and the tenant's shards are gone.
		kf, err := readKeyFile(filepath.Join(dir, "master.key"))
		if err != nil || kf.next != nil || kf.cur.epoch < 2 || e.currentKey().epoch != kf.cur.epoch {
			t.Fatalf("fault after %d writes: key file after the rerun: %+v, %v", n, kf, err)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "drives", "*", "t", victimHex)); len(left) != 0 {
			t.Fatalf("fault after %d writes: the tenant's containers remain: %v", n, left)
		}
		for _, name := range []string{"b", "c"} {
			restoreEqual(t, e, name, srcs[name])
		}
		if _, err := e.Check(ctx, CheckOptions{}); err != nil {
			t.Fatalf("fault after %d writes: check: %v", n, err)
		}
		e.Close()
	}
}

// countingDrive fails every put and delete once fail says so.
type countingDrive struct {
	repo.Drive
	fail func() bool
}

var errPowerLoss = errors.New("injected: power lost")

func (c *countingDrive) Put(ctx context.Context, name string, data []byte) error {
	if c.fail() {
		return errPowerLoss
	}
	return c.Drive.Put(ctx, name, data)
}

func (c *countingDrive) Delete(ctx context.Context, name string) error {
	if c.fail() {
		return errPowerLoss
	}
	return c.Drive.Delete(ctx, name)
}

func (c *countingDrive) DeletePrefix(ctx context.Context, prefix string) error {
	if c.fail() {
		return errPowerLoss
	}
	return deletePrefix(ctx, c.Drive, prefix)
}

func TestKeyRotation(t *testing.T) {
	ctx := context.Background()
	dir, srcs := lcRepo(t, nil)
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(t.TempDir(), "old.key")
	b, _ := os.ReadFile(filepath.Join(dir, "master.key"))
	os.WriteFile(old, b, 0o600)
	for i := 2; i <= 3; i++ {
		rep, err := e.RotateMasterKey(ctx)
		if err != nil || rep.NewEpoch != uint32(i) {
			t.Fatalf("rotation %d: %+v, %v", i, rep, err)
		}
	}
	for name, src := range srcs {
		restoreEqual(t, e, name, src)
	}
	e.Close()
	if _, err := Open(dir, Options{MasterKeyFile: old}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("the destroyed epoch still opens the repository: %v", err)
	}
	e, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatal(err)
	}
}

func TestQuota(t *testing.T) {
	ctx := context.Background()
	dir, _ := lcRepo(t, nil)
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	tn, _ := e.OpenTenant(ctx, "a")
	used, err := tn.storedBytes()
	if err != nil {
		t.Fatal(err)
	}
	q := used + 512<<10
	if _, err := e.UpdateTenant(ctx, "a", TenantUpdate{Quota: &q}); err != nil {
		t.Fatal(err)
	}
	tn, _ = e.OpenTenant(ctx, "a")
	before := indexDump(t, e)
	src := t.TempDir()
	big := make([]byte, 4<<20)
	mathrand.New(mathrand.NewSource(7)).Read(big) // incompressible: it must not fit

	os.WriteFile(filepath.Join(src, "big"), big, 0o644)
	if _, err := tn.Backup(ctx, []string{src}, BackupOptions{Host: "h"}); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("backup over quota: %v", err)
	}
	if after := indexDump(t, e); after != before {
		t.Fatalf("the failed backup changed the index:\nbefore %s\nafter  %s", before, after)
	}
	if _, err := e.Check(ctx, CheckOptions{}); err != nil {
		t.Fatalf("check after a refused backup: %v", err)
	}
	// A small backup still fits.
	os.WriteFile(filepath.Join(src, "big"), []byte("small now"), 0o644)
	if _, err := tn.Backup(ctx, []string{src}, BackupOptions{Host: "h"}); err != nil {
		t.Fatalf("backup within quota: %v", err)
	}
}

// indexDump summarises the index's tenant data: every key, in order.
func indexDump(t *testing.T, e *Engine) string {
	t.Helper()
	var b strings.Builder
	err := e.db.Raw(func(k, v []byte) error {
		if len(k) > 0 && (k[0] == 0x04 || k[0] == 0x05 || k[0] == 0x06) {
			fmt.Fprintf(&b, "%x;", k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
