package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// recordFiles returns the files of record name on the drive folders of the
// repository in dir that hold a copy.
func recordFiles(t *testing.T, dir, name string) []string {
	t.Helper()
	var out []string
	for _, d := range itDriveDirs(t, dir) {
		p := filepath.Join(d, filepath.FromSlash(name))
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// TestScrubRecords damages the copies of replicated records in the ways a
// drive can (a copy lost, damaged, left at an older version, left off its
// placement, every copy lost): scrub reports the record, --repair makes it
// whole from the drives or the index, and a second scrub is clean.
func TestScrubRecords(t *testing.T) {
	type fixture struct {
		dir, tenant, snapshot string
		e                     *Engine
	}
	for _, tc := range []struct {
		name   string
		record func(f *fixture) string
		damage func(t *testing.T, f *fixture, name string, files []string)
	}{
		{
			name:   "snapshot copy lost",
			record: func(f *fixture) string { return "t/" + f.tenant + "/s/" + f.snapshot },
			damage: func(t *testing.T, f *fixture, _ string, files []string) { mustRemove(t, files[0]) },
		},
		{
			name:   "tenant copy damaged",
			record: func(f *fixture) string { return "r/tenants/" + f.tenant },
			damage: func(t *testing.T, f *fixture, _ string, files []string) {
				b, err := os.ReadFile(files[1])
				if err != nil {
					t.Fatal(err)
				}
				b[len(b)/2] ^= 0x40
				mustWrite(t, files[1], b)
			},
		},
		{
			name:   "tenant copy stale",
			record: func(f *fixture) string { return "r/tenants/" + f.tenant },
			damage: func(t *testing.T, f *fixture, _ string, files []string) {
				old, err := os.ReadFile(files[2])
				if err != nil {
					t.Fatal(err)
				}
				// Two new versions; one copy goes back to the first.
				if _, err := f.e.LockTenant(context.Background(), "t"); err != nil {
					t.Fatal(err)
				}
				if _, err := f.e.UnlockTenant(context.Background(), "t"); err != nil {
					t.Fatal(err)
				}
				mustWrite(t, files[2], old)
			},
		},
		{
			name:   "config copy off its placement",
			record: func(f *fixture) string { return configName },
			damage: func(t *testing.T, f *fixture, name string, files []string) {
				b, err := os.ReadFile(files[0])
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range itDriveDirs(t, f.dir) {
					p := filepath.Join(d, filepath.FromSlash(name))
					if !slices.Contains(files, p) {
						mustWrite(t, p, b)
						return
					}
				}
			},
		},
		{
			name:   "audit entry copy lost",
			record: func(f *fixture) string { return auditEntryName(1) },
			damage: func(t *testing.T, f *fixture, _ string, files []string) { mustRemove(t, files[2]) },
		},
		{
			name:   "every snapshot copy lost",
			record: func(f *fixture) string { return "t/" + f.tenant + "/s/" + f.snapshot },
			damage: func(t *testing.T, f *fixture, _ string, files []string) {
				for _, p := range files {
					mustRemove(t, p)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e, tn, s, _ := newTestRepo(t)
			f := &fixture{dir: e.Dir(), tenant: tn.ID(), snapshot: s.ID, e: e}
			name := tc.record(f)
			files := recordFiles(t, f.dir, name)
			if len(files) != 3 {
				t.Fatalf("%s has %d copies before the damage", name, len(files))
			}
			tc.damage(t, f, name, files)

			rep, err := e.Scrub(ctx, ScrubOptions{})
			if !errors.Is(err, ErrCheckFailed) || rep.Records.Found != 1 || len(rep.Problems) != 1 || rep.Problems[0].Record != name || rep.Problems[0].Kind != ScrubRecord {
				t.Fatalf("scrub: %v, %d records not whole, problems %+v", err, rep.Records.Found, rep.Problems)
			}
			rep, err = e.Scrub(ctx, ScrubOptions{Repair: true})
			if err != nil || rep.Records.Repaired != 1 {
				t.Fatalf("scrub --repair: %v, %+v", err, rep.Problems)
			}
			if rep, err := e.Scrub(ctx, ScrubOptions{}); err != nil || len(rep.Problems) != 0 {
				t.Fatalf("scrub after repair: %v, %+v", err, rep.Problems)
			}
			after := recordFiles(t, f.dir, name)
			if len(after) != 3 {
				t.Fatalf("%s has %d copies after repair, want 3", name, len(after))
			}
			first, _ := os.ReadFile(after[0])
			for _, p := range after[1:] {
				if b, _ := os.ReadFile(p); string(b) != string(first) {
					t.Errorf("copies of %s differ after repair", name)
				}
			}
			if _, err := tn.Restore(ctx, s, t.TempDir(), RestoreOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestScrubRecordsWithoutValidCopy: a record whose every copy is damaged and
// that the index does not hold (a forgotten snapshot's tombstone) is
// reported and left alone, not replaced by a guess.
func TestScrubRecordsWithoutValidCopy(t *testing.T) {
	ctx := context.Background()
	e, tn, s, _ := newTestRepo(t)
	if _, err := tn.Forget(ctx, []string{s.ID}, ForgetOptions{}); err != nil {
		t.Fatal(err)
	}
	name := "t/" + tn.ID() + "/s/" + s.ID
	files := recordFiles(t, e.Dir(), name)
	if len(files) != 3 {
		t.Fatalf("the tombstone has %d copies", len(files))
	}
	for _, p := range files {
		mustWrite(t, p, []byte("CFR1 garbage"))
	}
	rep, err := e.Scrub(ctx, ScrubOptions{Repair: true})
	if !errors.Is(err, ErrCheckFailed) || rep.Records.Found != 1 || rep.Records.Repaired != 0 {
		t.Fatalf("scrub --repair: %v, %+v", err, rep.Problems)
	}
	for _, p := range files {
		if b, err := os.ReadFile(p); err != nil || string(b) != "CFR1 garbage" {
			t.Errorf("%s was changed: %q, %v", p, b, err)
		}
	}
}

func mustRemove(t *testing.T, p string) {
	t.Helper()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
