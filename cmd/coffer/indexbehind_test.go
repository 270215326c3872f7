package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The index behind the drives, or damaged (issue 16): each way pebble loses
// what it held, run as found: after two backups the index folder is damaged,
// then the commands a user would run. check must not say "no damage" (exit
// 14, or the damage is repaired automatically), scrub --repair must delete no
// shard, backup must refuse naming coffer index rebuild, snapshots must list
// both backups (rebuilding by itself), and every snapshot restores
// byte-identically.

// ibDamage damages the index folder of a repository in one way.
type ibDamage struct {
	name string
	do   func(t *testing.T, idx string)
}

var ibDamages = []ibDamage{
	// A torn write or a lost disk cache: pebble takes the end of the
	// newest WAL as its end, silently.
	{"torn WAL", func(t *testing.T, idx string) {
		wal := ibNewest(t, idx, "*.log")
		ibTruncate(t, wal, ibSize(t, wal)/2)
	}},
	// Pebble stops reading the MANIFEST at the first bad record, silently:
	// tables flushed since are forgotten.
	{"MANIFEST byte flipped", func(t *testing.T, idx string) {
		m := ibCurrentManifest(t, idx)
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		off, n := ibLastRecord(t, b)
		b[off+n/2] ^= 0x01
		if err := os.WriteFile(m, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}},
	{"table truncated", func(t *testing.T, idx string) {
		sst := ibNewest(t, idx, "*.sst")
		ibTruncate(t, sst, ibSize(t, sst)/2)
	}},
	{"table deleted", func(t *testing.T, idx string) {
		if err := os.Remove(ibNewest(t, idx, "*.sst")); err != nil {
			t.Fatal(err)
		}
	}},
}

func TestIndexBehindOrDamaged(t *testing.T) {
	for _, d := range ibDamages {
		t.Run(strings.ReplaceAll(d.name, " ", "_"), func(t *testing.T) {
			r, src, ids := ibTwoBackups(t)
			d.do(t, filepath.Join(r.dir, "index"))

			ibCheck(t, r)
			ibScrubDeletesNothing(t, r)
			ibBackupRefused(t, r)
			res := r.must(t, nil, "snapshots")
			for _, id := range ids {
				if !strings.Contains(res.stdout, id) {
					t.Errorf("snapshots does not list %s:\n%s", id, res)
				}
			}
			r.must(t, nil, "index", "rebuild")
			for i, id := range ids {
				target := t.TempDir()
				r.must(t, nil, "restore", id, "--target", target)
				var skip []string
				if i == 0 {
					skip = []string{"second.bin"} // added after the first backup
				}
				compareTrees(t, src, filepath.Join(target, src), skip...)
			}
			if res := r.run(t, nil, "check"); res.code != exitOK {
				t.Errorf("check after index rebuild:\n%s", res)
			}
		})
	}
}

// ibTwoBackups makes a repository with two backups of src, each in its own
// run, and nothing after the second (so its index writes are in the newest
// WAL, and the newest MANIFEST record adds the table that holds the first);
// the second adds data/second.bin and shares the rest with the first. It
// returns the source and the two snapshot IDs, oldest first.
func ibTwoBackups(t *testing.T) (*testRepo, string, []string) {
	t.Helper()
	r := newTestRepo(t, "acme", "--pack-size", "1MiB")
	src := rebuildSource(t, 1)
	var ids []string
	for i := range 2 {
		if i == 1 {
			writeFile(t, filepath.Join(src, "data", "second.bin"), crashRandom(7, 700<<10))
		}
		var s struct {
			ID string `json:"id"`
		}
		decodeJSON(t, r.must(t, nil, "--json", "backup", src), &s)
		if len(s.ID) < 8 {
			t.Fatalf("backup %d printed no snapshot ID", i+1)
		}
		ids = append(ids, s.ID[:8])
	}
	return r, src, ids
}

// ibCheck: check must find the damage (exit 14) or, having nothing to
// find, never have been given a damaged index; "no damage found" over an
// index that lost a backup is the bug.
func ibCheck(t *testing.T, r *testRepo) {
	t.Helper()
	res := r.run(t, nil, "check")
	if res.code != exitDamage || strings.Contains(res.stdout, "no damage found") {
		t.Errorf("check over a lagging or damaged index must exit 14:\n%s", res)
	}
	if !strings.Contains(res.stdout+res.stderr, "coffer index rebuild") {
		t.Errorf("check does not name coffer index rebuild:\n%s", res)
	}
}

// ibScrubDeletesNothing: scrub --repair must not remove a single shard file:
// every one of them holds what a committed snapshot needs.
func ibScrubDeletesNothing(t *testing.T, r *testRepo) {
	t.Helper()
	before := shardFiles(t, r.dir)
	res := r.run(t, nil, "scrub", "--repair")
	after := shardFiles(t, r.dir)
	sort.Strings(before)
	sort.Strings(after)
	if !slices.Equal(before, after) {
		t.Errorf("scrub --repair changed the shard files (%d before, %d after):\n%s", len(before), len(after), res)
	}
	if res.code != exitDamage || !strings.Contains(res.stdout+res.stderr, "coffer index rebuild") {
		t.Errorf("scrub --repair over a lagging or damaged index must exit 14 naming coffer index rebuild:\n%s", res)
	}
}

// ibBackupRefused: a backup must not run on a lagging or damaged index; it
// fails with one sentence naming coffer index rebuild.
func ibBackupRefused(t *testing.T, r *testRepo) {
	t.Helper()
	res := r.run(t, nil, "backup", t.TempDir())
	checkErrorLine(t, res)
	if !strings.Contains(res.stderr, "coffer index rebuild") {
		t.Errorf("backup over a lagging or damaged index does not name coffer index rebuild:\n%s", res)
	}
}

// ibNewest returns the file matching pattern in dir with the highest number.
func ibNewest(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) == 0 {
		t.Fatalf("no %s in %s: %v", pattern, dir, err)
	}
	sort.Strings(m) // pebble's file numbers have a fixed width
	return m[len(m)-1]
}

// ibCurrentManifest returns the MANIFEST that pebble's marker names.
func ibCurrentManifest(t *testing.T, dir string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "marker.manifest.*"))
	if err != nil || len(m) != 1 {
		t.Fatalf("manifest marker in %s: %v %v", dir, m, err)
	}
	name := filepath.Base(m[0])
	return filepath.Join(dir, name[strings.Index(name, "MANIFEST-"):])
}

// ibLastRecord returns the offset and length of the payload of the last
// record of a pebble log file (the MANIFEST) that fits in its first 32 KiB
// block: chunks of a 7-byte header (CRC-32C, uint16 length, type) and the
// payload. It fails the test when the file holds a single record: flipping
// that one would make the MANIFEST unreadable rather than older.
func ibLastRecord(t *testing.T, b []byte) (off, n int) {
	t.Helper()
	records := 0
	for p := 0; p+7 <= len(b) && p < 32<<10; {
		l := int(binary.LittleEndian.Uint16(b[p+4:]))
		if l == 0 || p+7+l > len(b) {
			break
		}
		off, n = p+7, l
		records++
		p += 7 + l
	}
	if records < 2 {
		t.Fatalf("the MANIFEST holds %d records; the fixture needs a version edit after the first", records)
	}
	return off, n
}

func ibSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func ibTruncate(t *testing.T, p string, n int64) {
	t.Helper()
	if err := os.Truncate(p, n); err != nil {
		t.Fatal(err)
	}
}

// TestIndexLostTenant: the WAL of "tenant create" is lost whole (a lost disk
// cache), so the index no longer knows the tenant its drives hold. backup
// refuses naming coffer index rebuild (not "tenant not found"); snapshots
// rebuilds by itself, and the tenant then backs up and restores.
func TestIndexLostTenant(t *testing.T) {
	r := newTestRepo(t, "acme")
	ibTruncate(t, ibNewest(t, filepath.Join(r.dir, "index"), "*.log"), 0)
	src := rebuildSource(t, 2)

	res := r.run(t, nil, "backup", src)
	checkErrorLine(t, res)
	if !strings.Contains(res.stderr, "coffer index rebuild") {
		t.Errorf("backup of a tenant the index lost does not name coffer index rebuild:\n%s", res)
	}
	res = r.must(t, nil, "snapshots")
	if !strings.Contains(res.stderr, "is behind the drives; rebuilt it") {
		t.Errorf("snapshots of a tenant the index lost does not rebuild:\n%s", res)
	}
	r.must(t, nil, "backup", src)
	restoreAndCompare(t, r, src)
}
