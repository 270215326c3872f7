package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// auditMarker is a tenant name that must never appear in the audit log.
const auditMarker = "zq-audit-secret-tenant-marker"

// auditRepo makes a repository with a tenant and a few entries: init,
// tenant.create, then backup ×2, a failed backup, drive.add... up to n
// entries in all. It returns the folder, the open engine and the tenant ID.
func auditRepo(t *testing.T, n int) (string, *Engine, [16]byte) {
	t.Helper()
	ctx := context.Background()
	dir := itInit(t, InitOptions{Actor: "founder"})
	e := auditOpen(t, dir)
	ti, err := e.CreateTenant(ctx, auditMarker, TenantOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var id [16]byte
	if err := decodeHexInto(id[:], ti.ID); err != nil {
		t.Fatal(err)
	}
	for i := 3; i <= n; i++ {
		var outcome error
		if i%3 == 0 {
			outcome = fmt.Errorf("%w: tenant %q is locked", ErrTenantLocked, auditMarker)
		}
		if err := e.logAudit(ctx, "backup", id, outcome, fmt.Sprintf("files=%d bytes=%d", i, i*1000)); err != nil {
			t.Fatal(err)
		}
	}
	return dir, e, id
}

var auditClock = time.Date(2026, 11, 18, 11, 6, 40, 0, time.UTC)

func auditOpen(t *testing.T, dir string) *Engine {
	t.Helper()
	var mu sync.Mutex
	now := auditClock
	e, err := Open(dir, Options{Actor: "alice", Now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func auditEntries(t *testing.T, e *Engine) []AuditEntry {
	t.Helper()
	var out []AuditEntry
	if err := e.AuditLog(context.Background(), func(en AuditEntry) error {
		out = append(out, en)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustVerifyAudit(t *testing.T, e *Engine, anchors ...AuditAnchor) *AuditVerifyReport {
	t.Helper()
	rep, err := e.VerifyAudit(context.Background(), anchors...)
	if err != nil {
		t.Fatalf("VerifyAudit: %v\nproblems: %q", err, rep.Problems)
	}
	return rep
}

func mustFailAudit(t *testing.T, e *Engine, want string, anchors ...AuditAnchor) {
	t.Helper()
	rep, err := e.VerifyAudit(context.Background(), anchors...)
	if !errors.Is(err, ErrCheckFailed) {
		t.Fatalf("VerifyAudit = %v, want ErrCheckFailed (report %+v)", err, rep)
	}
	if !strings.Contains(strings.Join(rep.Problems, "\n"), want) {
		t.Fatalf("problems %q do not mention %q", rep.Problems, want)
	}
}

// withRawIndex closes e, lets fn change the pebble database directly (an
// attacker with access to the index files), and reopens the repository.
func withRawIndex(t *testing.T, dir string, e *Engine, fn func(db *pebble.DB)) *Engine {
	t.Helper()
	e.Close()
	db, err := pebble.Open(indexDir(dir), &pebble.Options{FormatMajorVersion: pebble.FormatNewest, Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	fn(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return auditOpen(t, dir)
}

// quietLogger keeps pebble's recovery messages out of the test output.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)         {}
func (quietLogger) Errorf(string, ...any)        {}
func (quietLogger) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

func rawAuditKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{0x07}, seq)
}

func rawMetaKey(name string) []byte { return append([]byte{0x08}, name...) }

func rawDelete(t *testing.T, db *pebble.DB, key []byte) {
	t.Helper()
	if err := db.Delete(key, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func rawSet(t *testing.T, db *pebble.DB, key, v []byte) {
	t.Helper()
	if err := db.Set(key, v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// indexEntry reads entry seq from the index.
func indexEntry(t *testing.T, e *Engine, seq uint64) *auditRec {
	t.Helper()
	var a *auditRec
	err := e.db.Audit(seq, func(s uint64, v []byte) error {
		if s != seq {
			return fmt.Errorf("entry %d missing", seq)
		}
		d, err := decodeAuditRec(v)
		if err != nil {
			return err
		}
		a = d
		return errors.New("stop")
	})
	if a == nil {
		t.Fatalf("read entry %d: %v", seq, err)
	}
	return a
}

func putIndexEntries(t *testing.T, e *Engine, recs ...*auditRec) {
	t.Helper()
	b := e.db.NewBatch()
	defer b.Close()
	for _, a := range recs {
		b.PutAudit(a.seq, a.encode())
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestAuditAppendAndList(t *testing.T) {
	ctx := context.Background()
	_, e, id := auditRepo(t, 6)
	if _, _, err := e.AddDrive(ctx, "r4", filepath.Join(t.TempDir(), "d7")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.FailDrive(ctx, e.Drives()[0].ID); err != nil {
		t.Fatal(err)
	}
	got := auditEntries(t, e)
	wantActions := []string{"init", "tenant.create", "backup", "backup", "backup", "backup", "drive.add", "drive.fail"}
	if len(got) != len(wantActions) {
		t.Fatalf("%d entries, want %d: %+v", len(got), len(wantActions), got)
	}
	for i, en := range got {
		if en.Seq != uint64(i+1) || en.Action != wantActions[i] {
			t.Errorf("entry %d: seq %d action %q, want %d %q", i, en.Seq, en.Action, i+1, wantActions[i])
		}
		if en.Time.Location() != time.UTC || en.Time.IsZero() || len(en.MAC) != 64 || en.Epoch != 1 {
			t.Errorf("entry %d: %+v", i, en)
		}
	}
	if got[0].Actor != "founder" || got[1].Actor != "alice" {
		t.Errorf("actors %q %q, want founder, alice", got[0].Actor, got[1].Actor)
	}
	if got[0].Detail != "drives=6 data_shards=4 parity_shards=2" || got[0].Tenant != "" {
		t.Errorf("init entry %+v", got[0])
	}
	if got[1].Tenant != hex.EncodeToString(id[:]) || got[1].Outcome != "ok" {
		t.Errorf("tenant.create entry %+v", got[1])
	}
	if got[2].Outcome != "error: tenant is locked" || got[3].Outcome != "ok" || got[3].Detail != "files=4 bytes=4000" {
		t.Errorf("backup entries %+v %+v", got[2], got[3])
	}
	if !strings.HasPrefix(got[6].Detail, "drive=") || got[6].Tenant != "" {
		t.Errorf("drive.add entry %+v", got[6])
	}
	seq, mac, err := e.AuditHead()
	if err != nil || seq != 8 || mac != got[7].MAC {
		t.Fatalf("AuditHead = %d %s %v, want 8 %s", seq, mac, err, got[7].MAC)
	}
	rep := mustVerifyAudit(t, e, AuditAnchor{Seq: 3, MAC: got[2].MAC}, AuditAnchor{Seq: seq, MAC: mac})
	if rep.Entries != 8 || rep.HeadSeq != 8 || rep.DriveHead != 8 || rep.IndexHead != 8 || len(rep.Notes) != 0 {
		t.Fatalf("report %+v", rep)
	}

	// Names, paths and free text are refused, and nothing is written.
	for _, detail := range []string{"path=/etc/passwd", "name=Bob", "free text", "tenant=" + auditMarker, "a=1  b=2"} {
		if err := e.logAudit(ctx, "backup", id, nil, detail); !errors.Is(err, ErrInvalid) {
			t.Errorf("detail %q: %v, want ErrInvalid", detail, err)
		}
	}
	for _, action := range []string{"", "Tenant Create", strings.Repeat("a", 65)} {
		if err := e.logAudit(ctx, action, id, nil, ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("action %q: %v, want ErrInvalid", action, err)
		}
	}
	if n := len(auditEntries(t, e)); n != 8 {
		t.Fatalf("refused entries were written: %d entries", n)
	}
	// An error whose text holds a name is logged by class only.
	if err := e.logAudit(ctx, "restore", id, fmt.Errorf("restore %s/etc: %w", auditMarker, errors.New("disk full")), ""); err != nil {
		t.Fatal(err)
	}
	if last := auditEntries(t, e)[8]; last.Outcome != "error: failed" {
		t.Fatalf("outcome %q, want error: failed", last.Outcome)
	}
}

func TestAuditOutcome(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{fmt.Errorf("open %q: %w", auditMarker, ErrTenantLocked), "error: tenant is locked"},
		{fmt.Errorf("x: %w", ErrWrongKey), "error: wrong master key"},
		{context.Canceled, "error: interrupted"},
		{errors.New(auditMarker), "error: failed"},
	} {
		if got := auditOutcome(c.err); got != c.want {
			t.Errorf("auditOutcome(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestAuditVerifyDetectsModification(t *testing.T) {
	_, e, _ := auditRepo(t, 6)
	mustVerifyAudit(t, e)
	a := indexEntry(t, e, 3)
	a.outcome = "error: failed" // the MAC is left as it was
	putIndexEntries(t, e, a)
	mustFailAudit(t, e, "entry 3 does not verify")
}

func TestAuditVerifyDetectsChainRecomputedWithoutKey(t *testing.T) {
	ctx := context.Background()
	_, e, _ := auditRepo(t, 6)
	// The attacker alters entry 3 and recomputes the chain from there with a
	// key of its own, rewriting the index, the drive copies and both heads.
	var wrong [KeySize]byte
	randomBytes(wrong[:])
	prev := indexEntry(t, e, 2).mac
	var recs []*auditRec
	for seq := uint64(3); seq <= 6; seq++ {
		a := indexEntry(t, e, seq)
		if seq == 3 {
			a.detail = "files=0 bytes=0"
		}
		a.seal(&wrong, prev)
		prev = a.mac
		recs = append(recs, a)
		if err := e.rp().PutRecord(ctx, auditEntryName(seq), a.encode()); err != nil {
			t.Fatal(err)
		}
	}
	putIndexEntries(t, e, recs...)
	head := encodeAuditHead(6, prev)
	if err := e.rp().PutRecord(ctx, auditHeadName, head); err != nil {
		t.Fatal(err)
	}
	b := e.db.NewBatch()
	b.PutMeta(metaAuditHead, head)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	mustFailAudit(t, e, "entry 3 does not verify")
	// Every entry MACed without the audit key is reported, entries 1 and 2
	// are not.
	rep, _ := e.VerifyAudit(ctx)
	if len(rep.Problems) != 4 || !strings.Contains(rep.Problems[3], "entry 6 does not verify") {
		t.Errorf("problems %q", rep.Problems)
	}
}

func TestAuditVerifyDetectsRemoval(t *testing.T) {
	dir, e, _ := auditRepo(t, 6)
	e = withRawIndex(t, dir, e, func(db *pebble.DB) { rawDelete(t, db, rawAuditKey(4)) })
	mustFailAudit(t, e, "entries 4 to 4 are missing")

	// Removing it and renumbering the rest is caught too.
	dir2, e2, _ := auditRepo(t, 6)
	e2 = withRawIndex(t, dir2, e2, func(db *pebble.DB) {
		for seq := uint64(4); seq < 6; seq++ {
			v, c, err := db.Get(rawAuditKey(seq + 1))
			if err != nil {
				t.Fatal(err)
			}
			rawSet(t, db, rawAuditKey(seq), append([]byte{}, v...))
			c.Close()
		}
		rawDelete(t, db, rawAuditKey(6))
	})
	mustFailAudit(t, e2, "entry 4 holds entry 5")
}

func TestAuditVerifyDetectsReorder(t *testing.T) {
	_, e, _ := auditRepo(t, 6)
	a2, a4 := indexEntry(t, e, 2), indexEntry(t, e, 4)
	b := e.db.NewBatch()
	b.PutAudit(2, a4.encode())
	b.PutAudit(4, a2.encode())
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	mustFailAudit(t, e, "entry 2 holds entry 4")

	// Relabelled with their new places, they fail their MACs.
	_, e2, _ := auditRepo(t, 6)
	a2, a4 = indexEntry(t, e2, 2), indexEntry(t, e2, 4)
	a2.seq, a4.seq = 4, 2
	putIndexEntries(t, e2, a2, a4)
	mustFailAudit(t, e2, "entry 2 does not verify")
}

func TestAuditVerifyDetectsTruncation(t *testing.T) {
	ctx := context.Background()
	dir, e, _ := auditRepo(t, 7)
	seq, mac, err := e.AuditHead()
	if err != nil {
		t.Fatal(err)
	}
	anchor := AuditAnchor{Seq: seq, MAC: mac} // printed by last week's report
	five := indexEntry(t, e, 5)
	// Cut entries 6 and 7 from the index and from every drive.
	for _, s := range []uint64{6, 7} {
		if err := e.rp().DeleteRecord(ctx, auditEntryName(s)); err != nil {
			t.Fatal(err)
		}
	}
	e = withRawIndex(t, dir, e, func(db *pebble.DB) {
		rawDelete(t, db, rawAuditKey(6))
		rawDelete(t, db, rawAuditKey(7))
	})
	mustFailAudit(t, e, "the audit head in the index names entry 7")
	mustFailAudit(t, e, "the audit head on the drives names entry 7")

	// The attacker also rewrites the index head: the drives' head catches it.
	b := e.db.NewBatch()
	b.PutMeta(metaAuditHead, encodeAuditHead(5, five.mac))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	rep, err := e.VerifyAudit(ctx)
	if !errors.Is(err, ErrCheckFailed) || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "on the drives names entry 7") {
		t.Fatalf("VerifyAudit = %v, problems %q", err, rep.Problems)
	}
	// Appending is refused rather than overwriting the drives' entries.
	if err := e.logAudit(ctx, "prune", [16]byte{}, nil, ""); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("logAudit on a cut log = %v, want ErrCorrupt", err)
	}

	// And the drives' head too: only an anchor kept elsewhere catches it.
	if err := e.rp().PutRecord(ctx, auditHeadName, encodeAuditHead(5, five.mac)); err != nil {
		t.Fatal(err)
	}
	mustVerifyAudit(t, e)
	mustFailAudit(t, e, "the anchor names entry 7", anchor)
}

func TestAuditInterruptedWriteIsAdopted(t *testing.T) {
	ctx := context.Background()
	dir, e, _ := auditRepo(t, 5)
	four := indexEntry(t, e, 4)
	// A crash after the drives got entry 5 and its head, before the index.
	e = withRawIndex(t, dir, e, func(db *pebble.DB) {
		rawDelete(t, db, rawAuditKey(5))
		rawSet(t, db, rawMetaKey(metaAuditHead), encodeAuditHead(4, four.mac))
	})
	rep := mustVerifyAudit(t, e)
	if rep.HeadSeq != 5 || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "entry 5 is on the drives") {
		t.Fatalf("report %+v", rep)
	}
	if err := e.logAudit(ctx, "forget", [16]byte{}, nil, "snapshots=2"); err != nil {
		t.Fatal(err)
	}
	rep = mustVerifyAudit(t, e)
	if rep.Entries != 6 || len(rep.Notes) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

func TestAuditSurvivesKeyRotation(t *testing.T) {
	ctx := context.Background()
	_, e, id := auditRepo(t, 4)
	old := e.currentKey()
	rotate := func() *masterKey {
		t.Helper()
		cur := e.currentKey()
		var raw [KeySize]byte
		randomBytes(raw[:])
		next := newMasterKey(cur.repo, cur.epoch+1, raw)
		if err := e.rewrapAuditKey(ctx, next); err != nil {
			t.Fatal(err)
		}
		// Both epochs open the keys until the rotation completes.
		raw2, err := e.db.Meta(metaAuditKeys)
		if err != nil {
			t.Fatal(err)
		}
		for _, mk := range []*masterKey{cur, next} {
			if _, _, err := openAuditKeys(mk, raw2); err != nil {
				t.Fatalf("epoch %d cannot open the keys during the rotation: %v", mk.epoch, err)
			}
		}
		e.mu.Lock()
		e.mk = next
		e.mu.Unlock()
		return next
	}
	rotate()
	if err := e.logAudit(ctx, auditKeyRotate, [16]byte{}, nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.logAudit(ctx, "backup", id, nil, "files=1"); err != nil {
		t.Fatal(err)
	}
	// A rotation whose entry was never written (a crash): the next entry
	// links it by itself.
	second := rotate()
	if err := e.logAudit(ctx, "restore", id, nil, ""); err != nil {
		t.Fatal(err)
	}
	rep := mustVerifyAudit(t, e)
	if rep.Rotations != 2 || rep.Entries != 8 {
		t.Fatalf("report %+v", rep)
	}
	got := auditEntries(t, e)
	if got[4].Action != auditKeyRotate || got[4].Detail != "old_epoch=1 new_epoch=2" || got[4].Epoch != 2 {
		t.Errorf("linking entry %+v", got[4])
	}
	if got[6].Action != auditKeyRotate || got[6].Detail != "old_epoch=2 new_epoch=3" || got[7].Action != "restore" {
		t.Errorf("automatic link %+v then %+v", got[6], got[7])
	}
	// The seal of the old epochs was dropped: the destroyed key opens nothing.
	raw, err := e.db.Meta(metaAuditKeys)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := openAuditKeys(old, raw); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old master key opens the audit keys: %v", err)
	}
	if keys, epochs, err := openAuditKeys(second, raw); err != nil || len(epochs) != 1 || len(keys) != 3 {
		t.Fatalf("keys under epoch 3: %d keys, seals %v, %v", len(keys), epochs, err)
	}
	copies, err := e.rp().GetRecord(ctx, auditKeysName)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range copies {
		if !bytes.Equal(c, raw) {
			t.Fatal("the drives' audit keys differ from the index's")
		}
	}

	// An epoch change without a linking entry is caught.
	a := indexEntry(t, e, 5)
	a.action = "backup"
	a.seal(mustKeys(t, e)[a.epoch], indexEntry(t, e, 4).mac) // even with the right key
	putIndexEntries(t, e, a)
	mustFailAudit(t, e, "without a key.rotate linking entry")
}

func mustKeys(t *testing.T, e *Engine) auditKeys {
	t.Helper()
	ks, err := e.auditStore().loadKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ks.keys
}

func TestAuditHoldsNoNames(t *testing.T) {
	ctx := context.Background()
	dir, e, id := auditRepo(t, 6)
	if err := e.logAudit(ctx, "tenant.lock", id, nil, ""); err != nil {
		t.Fatal(err)
	}
	var n int
	err := e.db.Raw(func(k, v []byte) error {
		if k[0] != 0x07 && !bytes.Equal(k, rawMetaKey(metaAuditHead)) && !bytes.Equal(k, rawMetaKey(metaAuditKeys)) {
			return nil
		}
		n++
		if bytes.Contains(v, []byte(auditMarker)) {
			return fmt.Errorf("index key %x holds the tenant name", k)
		}
		return nil
	})
	if err != nil || n != 7+2 {
		t.Fatalf("%d audit values in the index: %v", n, err)
	}
	var files int
	err = filepath.WalkDir(filepath.Join(dir, "drives"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(p, "audit") {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(auditMarker)) || bytes.Contains(b, []byte(dir)) {
			return fmt.Errorf("%s holds the tenant name or a path", p)
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("%d audit files on the drives: %v", files, err)
	}
	// The tenant is named by its ID.
	if en := auditEntries(t, e)[6]; en.Tenant != hex.EncodeToString(id[:]) {
		t.Fatalf("entry %+v", en)
	}
}

func TestAuditConcurrentAppends(t *testing.T) {
	ctx := context.Background()
	_, e, id := auditRepo(t, 2)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for g := range 8 {
		wg.Go(func() {
			for i := range 5 {
				errs <- e.logAudit(ctx, "backup", id, nil, fmt.Sprintf("worker=%d run=%d", g, i))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if rep := mustVerifyAudit(t, e); rep.Entries != 42 {
		t.Fatalf("%d entries, want 42", rep.Entries)
	}
}

func TestAuditRecoverFromDrives(t *testing.T) {
	ctx := context.Background()
	dir, e, _ := auditRepo(t, 6)
	seq, mac, _ := e.AuditHead()
	// Lose the audit log from the index, keys and head included.
	e = withRawIndex(t, dir, e, func(db *pebble.DB) {
		if err := db.DeleteRange([]byte{0x07}, []byte{0x08}, pebble.Sync); err != nil {
			t.Fatal(err)
		}
		rawDelete(t, db, rawMetaKey(metaAuditHead))
		rawDelete(t, db, rawMetaKey(metaAuditKeys))
	})
	if n := len(auditEntries(t, e)); n != 0 {
		t.Fatalf("%d entries left", n)
	}
	// One drive's copy of entry 2 is damaged: a good copy is chosen.
	copies, err := e.rp().GetRecord(ctx, auditEntryName(2))
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte{}, copies[0]...)
	bad[len(bad)-1] ^= 1
	damageOneCopy(t, dir, auditEntryName(2), bad)

	rec, err := recoverAudit(ctx, e.rp(), e.db, e.currentKey())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Entries != 6 || rec.Missing != 0 || rec.Head != 6 {
		t.Fatalf("recovery %+v", rec)
	}
	mustVerifyAudit(t, e, AuditAnchor{Seq: seq, MAC: mac})
	if err := e.logAudit(ctx, "prune", [16]byte{}, nil, ""); err != nil {
		t.Fatal(err)
	}
	mustVerifyAudit(t, e)
}

// damageOneCopy replaces the first copy of record name found on the drives.
func damageOneCopy(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	ps, _ := filepath.Glob(filepath.Join(dir, "drives", "*", filepath.FromSlash(name)))
	if len(ps) == 0 {
		t.Fatalf("no copy of %s", name)
	}
	if err := os.WriteFile(ps[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAuditAnchorParse(t *testing.T) {
	mac := strings.Repeat("ab", 32)
	a, err := ParseAuditAnchor("12:" + strings.ToUpper(mac))
	if err != nil || a.Seq != 12 || a.MAC != mac {
		t.Fatalf("%+v %v", a, err)
	}
	for _, s := range []string{"", "12", "0:" + mac, "x:" + mac, "12:abc"} {
		if _, err := ParseAuditAnchor(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v", s, err)
		}
	}
}

// docAuditEntry is the entry of the documented example: the first entry of
// a log (previous MAC = 32 zero bytes) under the audit key 1, 2, …, 32.
func docAuditEntry() *auditRec {
	a := &auditRec{
		seq: 1, nanos: time.Date(2026, 11, 18, 11, 6, 40, 0, time.UTC).UnixNano(), epoch: 1,
		tenant: docTenant, actor: "operator", action: "tenant.create", outcome: "ok",
		detail: "quota=0",
	}
	a.seal(&docTK, [auditMACLen]byte{})
	return a
}

func TestAuditDocExample(t *testing.T) {
	b := docExample(t, "audit-entry")
	a, err := decodeAuditRec(b)
	if err != nil {
		t.Fatal(err)
	}
	want := docAuditEntry()
	if !bytes.Equal(b, want.encode()) {
		t.Fatalf("documented entry differs from the encoding:\n%s", hexLines(want.encode()))
	}
	if m := auditMAC(&docTK, [auditMACLen]byte{}, a.body()); m != a.mac {
		t.Fatal("documented MAC does not verify")
	}
	en := a.entry()
	if en.Seq != 1 || en.Action != "tenant.create" || en.Actor != "operator" || en.Tenant != strings.Repeat("11", 16) ||
		!en.Time.Equal(time.Date(2026, 11, 18, 11, 6, 40, 0, time.UTC)) || en.Detail != "quota=0" {
		t.Fatalf("decoded %+v", en)
	}
}

func TestAuditPrintDocExample(t *testing.T) {
	if os.Getenv("COFFER_PRINT_DOC") == "" {
		t.Skip("set COFFER_PRINT_DOC=1 to print the example")
	}
	t.Logf("\n%s", hexLines(docAuditEntry().encode()))
}

func FuzzAuditRecDecode(f *testing.F) {
	f.Add(docAuditEntry().encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeAuditRec(b)
		if err != nil {
			return
		}
		if !bytes.Equal(a.encode(), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// TestVerifyAuditWhileAppending: a verification running while actions are
// audited (a live server's admin socket allows it) sees a consistent log.
func TestVerifyAuditWhileAppending(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	itTenant(t, e, "acme")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 60; i++ {
			contact := fmt.Sprintf("ops%d@acme.example", i)
			if _, err := e.UpdateTenant(ctx, "acme", TenantUpdate{Contact: &contact}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		if rep, err := e.VerifyAudit(ctx); err != nil {
			t.Fatalf("verify during appends: %v %+v", err, rep)
		}
	}
}
