package index

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// damagedDB makes a database whose records are in one table (.sst) file,
// closes it, and returns its folder and the table's path.
func damagedDB(t *testing.T) (dir, table string) {
	t.Helper()
	dir = t.TempDir()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fillTenants(t, db)
	if err := db.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) != 1 {
		t.Fatalf("want one table, have %v", tables)
	}
	return dir, tables[0]
}

// TestOpenDamagedTables: a table that the MANIFEST names but that is
// missing, truncated or grown on disk makes Open fail with ErrCorrupt (so
// that the engine rebuilds the index, or names coffer index rebuild), and a
// table whose bytes rot fails its reads with ErrCorrupt.
func TestOpenDamagedTables(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, table string)
	}{
		{"deleted", func(t *testing.T, table string) {
			if err := os.Remove(table); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", func(t *testing.T, table string) {
			fi, err := os.Stat(table)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(table, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"grown", func(t *testing.T, table string) {
			f, err := os.OpenFile(table, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.Write([]byte("tail"))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, table := damagedDB(t)
			tc.damage(t, table)
			db, err := Open(dir, Options{MustExist: true})
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded over a damaged table")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open: %v; want ErrCorrupt", err)
			}
		})
	}
	t.Run("rotten", func(t *testing.T) {
		dir, table := damagedDB(t)
		b, err := os.ReadFile(table)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/4] ^= 0x5a
		if err := os.WriteFile(table, b, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := Open(dir, Options{MustExist: true})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v; want success or ErrCorrupt", err)
			}
			return
		}
		defer db.Close()
		if err := db.Raw(func(_, _ []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("reading a rotten table: %v; want ErrCorrupt", err)
		}
	})
}

// TestForgotten: forgotten-snapshot records read back, are absent for other
// snapshots, and are per tenant.
func TestForgotten(t *testing.T) {
	db := openTest(t)
	a, b := neighbours[1], neighbours[2]
	commit(t, db, func(bt *Batch) {
		bt.PutForgotten(a, ForgottenRec{ID: snapID(7), Version: 2})
	})
	if f, err := db.Forgotten(a, snapID(7)); err != nil || f != (ForgottenRec{ID: snapID(7), Version: 2}) {
		t.Errorf("Forgotten = %+v, %v", f, err)
	}
	for _, c := range []struct {
		t  TenantID
		id SnapshotID
	}{{a, snapID(8)}, {b, snapID(7)}} {
		if _, err := db.Forgotten(c.t, c.id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Forgotten(%s, %s) = %v; want ErrNotFound", c.t, c.id, err)
		}
	}
}
