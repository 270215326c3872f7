package engine

// Tests of Forget: by ID and prefix, by policy (groups, reasons, recorded
// time zone offsets), and the tombstone that keeps a forgotten snapshot
// forgotten through an index rebuild and a stale drive.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"coffer/engine/policy"
)

// fgStream records a one-file snapshot of data called name, with host and
// time as given (zero time: now).
func fgStream(t *testing.T, tn *Tenant, name string, data []byte, host string, at time.Time, tags ...string) *Snapshot {
	t.Helper()
	s, err := tn.BackupStream(context.Background(), bytes.NewReader(data), name, BackupOptions{Host: host, Time: at, Tags: tags})
	if err != nil {
		t.Fatalf("backup %s: %v", name, err)
	}
	return s
}

// fgDump returns the content of file name in snapshot s.
func fgDump(t *testing.T, tn *Tenant, s *Snapshot, name string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := tn.Dump(context.Background(), s, name, &b); err != nil {
		t.Fatalf("dump %s of %s: %v", name, s.ID[:8], err)
	}
	return b.Bytes()
}

// fgIDs returns the IDs of the tenant's snapshots, oldest first.
func fgIDs(t *testing.T, tn *Tenant) []string {
	t.Helper()
	ss, err := tn.Snapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

func TestForgetByIDAndPrefix(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "acme")
	var ss []*Snapshot
	for i := range 4 {
		ss = append(ss, fgStream(t, tn, "f.bin", itRandBytes(uint64(i), 10<<10), "h", time.Date(2026, 1, 1+i, 0, 0, 0, 0, time.UTC)))
	}

	// Errors first: nothing may be forgotten by them.
	for _, c := range []struct {
		ids  []string
		o    ForgetOptions
		want error
	}{
		{nil, ForgetOptions{}, ErrInvalid},
		{[]string{ss[0].ID}, ForgetOptions{Policy: policy.Policy{Last: 1}}, ErrInvalid},
		{[]string{"abc"}, ForgetOptions{}, ErrInvalid},
		{[]string{"deadbeefdeadbeef"}, ForgetOptions{}, ErrSnapshotNotFound},
		{nil, ForgetOptions{Policy: policy.Policy{Daily: -5}}, ErrInvalid},
	} {
		if _, err := tn.Forget(ctx, c.ids, c.o); !errors.Is(err, c.want) {
			t.Errorf("Forget(%v, %+v) = %v, want %v", c.ids, c.o, err, c.want)
		}
	}
	if got := fgIDs(t, tn); len(got) != 4 {
		t.Fatalf("failed forgets removed snapshots: %d left", len(got))
	}

	// Dry run changes nothing.
	rep, err := tn.Forget(ctx, []string{ss[0].ID}, ForgetOptions{DryRun: true})
	if err != nil || !rep.DryRun || len(rep.Removed) != 1 || rep.Kept != 3 {
		t.Fatalf("dry run: %+v, %v", rep, err)
	}
	if got := fgIDs(t, tn); len(got) != 4 {
		t.Fatalf("dry run removed snapshots: %d left", len(got))
	}

	// Full ID, an upper-case 8-digit prefix (twice: duplicates count once), latest.
	rep, err = tn.Forget(ctx, []string{ss[0].ID, strings.ToUpper(ss[1].ID[:8]), ss[1].ID[:10], "latest"}, ForgetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, r := range rep.Removed {
		removed = append(removed, r.ID)
	}
	if want := []string{ss[0].ID, ss[1].ID, ss[3].ID}; !slices.Equal(removed, want) || rep.Kept != 1 {
		t.Fatalf("removed %v (kept %d), want %v (kept 1)", removed, rep.Kept, want)
	}
	if got := fgIDs(t, tn); !slices.Equal(got, []string{ss[2].ID}) {
		t.Fatalf("left %v, want only %s", got, ss[2].ID)
	}
	if _, err := tn.FindSnapshot(ctx, ss[0].ID); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("forgotten snapshot still found: %v", err)
	}
	if got := fgDump(t, tn, ss[2], "f.bin"); !bytes.Equal(got, itRandBytes(2, 10<<10)) {
		t.Error("the remaining snapshot dumps different content")
	}

	// The audit log names the forgotten snapshots by ID, nothing else.
	var details []string
	err = e.AuditLog(ctx, func(a AuditEntry) error {
		if a.Action == "forget" && a.Outcome == "ok" {
			details = append(details, a.Detail)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(details) != 1 || !strings.Contains(details[0], ss[0].ID) || !strings.Contains(details[0], "forgotten=3") {
		t.Errorf("forget audit entries: %q", details)
	}
}

func TestForgetTombstoneSurvivesRebuildAndStaleDrive(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	s1 := fgStream(t, tn, "f.bin", itRandBytes(1, 20<<10), "h", time.Time{})
	s2 := fgStream(t, tn, "f.bin", itRandBytes(2, 20<<10), "h", time.Time{})

	// The copies of s1's record before the forget: a drive that is away
	// during the forget keeps one.
	recName := filepath.Join("t", tn.ID(), "s", s1.ID)
	old := map[string][]byte{}
	for _, d := range itDriveDirs(t, dir) {
		if b, err := os.ReadFile(filepath.Join(d, recName)); err == nil {
			old[d] = b
		}
	}
	if len(old) < 3 {
		t.Fatalf("snapshot record on %d drives, want at least 3", len(old))
	}
	if _, err := tn.Forget(ctx, []string{s1.ID}, ForgetOptions{}); err != nil {
		t.Fatal(err)
	}
	// Every copy is now a sealed tombstone with a higher version.
	for d := range old {
		b, err := os.ReadFile(filepath.Join(d, recName))
		if err != nil {
			t.Fatalf("drive %s lost the record: %v", d, err)
		}
		r, err := decodeRecord(b)
		if err != nil || !r.tombstone() || r.Version != 2 || r.Kind != recSnapshot {
			t.Fatalf("drive %s: record %+v, %v; want a version 2 tombstone", d, r, err)
		}
		if _, err := openRecord(&tn.keys.meta, r, tn.id, strings.ReplaceAll(recName, string(filepath.Separator), "/")); err != nil {
			t.Fatalf("tombstone does not authenticate: %v", err)
		}
	}
	// A drive that was away comes back with the old copy (and another
	// drive happens to hold one too).
	var stale []byte
	for d, b := range old {
		stale = b
		if err := os.WriteFile(filepath.Join(d, recName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		break
	}
	for _, d := range itDriveDirs(t, dir) {
		if _, ok := old[d]; !ok {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(d, recName)), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, recName), stale, 0o600); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	rep, err := Rebuild(ctx, dir, RebuildOptions{})
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if rep.Forgotten != 1 || rep.Snapshots != 1 {
		t.Errorf("rebuild: %d snapshots, %d forgotten; want 1 and 1", rep.Snapshots, rep.Forgotten)
	}
	e = itOpen(t, dir)
	tn = itTenant(t, e, "acme")
	if got := fgIDs(t, tn); !slices.Equal(got, []string{s2.ID}) {
		t.Fatalf("after rebuild the tenant has %v, want only %s", got, s2.ID)
	}
	if got := fgDump(t, tn, s2, "f.bin"); !bytes.Equal(got, itRandBytes(2, 20<<10)) {
		t.Error("the remaining snapshot dumps different content after the rebuild")
	}
}

func TestSnapshotTimeKeepsOffset(t *testing.T) {
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "acme")
	zone := time.FixedZone("", 5*3600+1800)
	at := time.Date(2026, 7, 1, 23, 45, 0, 123, zone)
	fgStream(t, tn, "f", []byte("x"), "h", at)
	ss, err := tn.Snapshots(context.Background())
	if err != nil || len(ss) != 1 {
		t.Fatal(ss, err)
	}
	if _, off := ss[0].Time.Zone(); off != 5*3600+1800 || !ss[0].Time.Equal(at) {
		t.Errorf("snapshot time %v (offset %d), want %v", ss[0].Time, off, at)
	}
}

func TestForgetPolicy(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "acme")
	plus2 := time.FixedZone("", 2*3600)
	var web1 []*Snapshot
	for d := 1; d <= 5; d++ {
		web1 = append(web1, fgStream(t, tn, "a", []byte{byte(d)}, "web1", time.Date(2026, 3, d, 10, 0, 0, 0, plus2)))
	}
	web2a := fgStream(t, tn, "a", []byte("b1"), "web2", time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	web2b := fgStream(t, tn, "a", []byte("b2"), "web2", time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	// The offset decides the day: x is on 10 March where it was taken
	// (-05:00), 11 March in UTC.
	minus5 := time.FixedZone("", -5*3600)
	y := fgStream(t, tn, "a", []byte("y"), "db", time.Date(2026, 3, 11, 6, 0, 0, 0, time.UTC))
	x := fgStream(t, tn, "a", []byte("x"), "db", time.Date(2026, 3, 10, 23, 30, 0, 0, minus5))
	z := fgStream(t, tn, "a", []byte("z"), "db", time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))

	o := ForgetOptions{Policy: policy.Policy{Daily: 2}, DryRun: true}
	rep, err := tn.Forget(ctx, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Groups) != 3 || rep.Policy == "" {
		t.Fatalf("dry run: %d groups, policy %q", len(rep.Groups), rep.Policy)
	}
	for _, g := range rep.Groups {
		for _, k := range g.Keep {
			if len(k.Reasons) == 0 {
				t.Errorf("kept snapshot %s has no reason", k.ID[:8])
			}
		}
	}
	if got := fgIDs(t, tn); len(got) != 10 {
		t.Fatalf("dry run removed snapshots: %d left", len(got))
	}
	o.DryRun = false
	rep, err = tn.Forget(ctx, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{web2a.ID, web2b.ID, web1[3].ID, web1[4].ID, x.ID, y.ID}
	got := fgIDs(t, tn)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("kept %v, want %v (z %s must go, x %s stay)", got, want, z.ID[:8], x.ID[:8])
	}
	if rep.Kept != 6 || len(rep.Removed) != 4 {
		t.Errorf("report: kept %d, removed %d; want 6 and 4", rep.Kept, len(rep.Removed))
	}
	// A second run finds nothing more to forget.
	rep, err = tn.Forget(ctx, nil, o)
	if err != nil || len(rep.Removed) != 0 {
		t.Errorf("second run removed %d: %v", len(rep.Removed), err)
	}
}
