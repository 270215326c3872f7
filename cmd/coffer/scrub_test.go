package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/engine"
	"coffer/repo"
)

// TestScrubCLI runs coffer scrub on a healthy repository (exit 0), after
// bitrot in one shard (exit 14, one error line, the shard named by IDs only),
// then scrub --repair --json (exit 0, the shard repaired) and scrub again
// (exit 0).
func TestScrubCLI(t *testing.T) {
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "secret-project")
	writeFile(t, filepath.Join(src, "payroll.txt"), []byte(strings.Repeat("confidential salaries\n", 2000)))
	r.must(t, nil, "backup", src)

	res := r.must(t, nil, "scrub")
	for _, want := range []string{"scrubbed 2 packs, 12 shards", "0 missing, 0 corrupt, 0 misplaced, 0 orphaned", "0 packs below full redundancy", "no damage found"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("healthy scrub output lacks %q:\n%s", want, res)
		}
	}
	var clean engine.ScrubReport
	decodeJSON(t, r.must(t, nil, "scrub", "--json"), &clean)
	if clean.Packs != 2 || clean.Shards != 12 || clean.Bytes == 0 || clean.Problems == nil || len(clean.Problems) != 0 {
		t.Errorf("healthy scrub --json: %+v", clean)
	}

	shards := shardFiles(t, r.dir)
	if len(shards) != 12 { // a data pack and a tree pack
		t.Fatalf("%d shard files, want 12", len(shards))
	}
	b, err := os.ReadFile(shards[2])
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := repo.DecodeShardHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	b[h.DataOffset()+h.ShardLen/2] ^= 0x10
	if err := os.WriteFile(shards[2], b, 0o600); err != nil {
		t.Fatal(err)
	}

	res = r.run(t, nil, "scrub")
	if res.code != exitDamage {
		t.Fatalf("scrub after bitrot: exit %d, want %d:\n%s", res.code, exitDamage, res)
	}
	checkErrorLine(t, res)
	if !strings.Contains(res.stderr, "scrub --repair") {
		t.Errorf("the error does not suggest scrub --repair:\n%s", res)
	}
	for _, want := range []string{"1 corrupt", "1 pack below full redundancy", "corrupt: tenant ", " shard "} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("scrub output lacks %q:\n%s", want, res)
		}
	}
	for _, secret := range []string{"acme", "secret-project", "payroll", "confidential"} {
		if strings.Contains(res.stdout+res.stderr, secret) {
			t.Errorf("scrub output shows %q:\n%s", secret, res)
		}
	}

	res = r.run(t, nil, "scrub", "--json")
	if res.code != exitDamage {
		t.Fatalf("scrub --json after bitrot: exit %d, want %d:\n%s", res.code, exitDamage, res)
	}
	var found engine.ScrubReport
	decodeJSON(t, res, &found)
	if found.Corrupt.Found != 1 || len(found.Problems) != 1 || found.Problems[0].Shard == nil || found.Problems[0].Repaired {
		t.Errorf("scrub --json: %+v", found)
	}

	res = r.must(t, nil, "scrub", "--repair", "--json")
	var fixed engine.ScrubReport
	decodeJSON(t, res, &fixed)
	if !fixed.Repair || fixed.Corrupt.Found != 1 || fixed.Corrupt.Repaired != 1 || !fixed.Problems[0].Repaired || fixed.StillBelowFull != 0 {
		t.Errorf("scrub --repair --json: %+v", fixed)
	}
	res = r.must(t, nil, "scrub")
	if !strings.Contains(res.stdout, "no damage found") {
		t.Errorf("scrub after repair:\n%s", res)
	}
	r.must(t, nil, "check", "--read-data")
}

// TestScrubCLIRepairSummary: the human summary of a repair says what was
// repaired, and a stray temporary file is reported and removed.
func TestScrubCLIRepairSummary(t *testing.T) {
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte(strings.Repeat("x", 50000)))
	r.must(t, nil, "backup", src)
	shards := shardFiles(t, r.dir)
	if err := os.Remove(shards[0]); err != nil {
		t.Fatal(err)
	}
	res := r.must(t, nil, "scrub", "--repair")
	for _, want := range []string{"1 missing (repaired)", "1 pack below full redundancy (0 after repair)", "[repaired]", "everything found was repaired"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("scrub --repair output lacks %q:\n%s", want, res)
		}
	}
	if _, err := os.Stat(shards[0]); err != nil {
		t.Errorf("the missing shard was not rebuilt in place: %v", err)
	}
	if res := r.run(t, nil, "scrub", "--bogus"); res.code != exitUsage {
		t.Errorf("scrub --bogus: exit %d, want %d", res.code, exitUsage)
	}
	if res := r.run(t, nil, "scrub", "extra"); res.code != exitUsage {
		t.Errorf("scrub extra: exit %d, want %d", res.code, exitUsage)
	}
}
