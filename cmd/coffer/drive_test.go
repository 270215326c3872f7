package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/engine"
)

// TestDriveReplaceCLI replaces a lost drive by the documented procedure
// (drive fail, drive add, scrub --repair): drive fail and drive add say how
// many records they re-placed, and scrub is clean afterwards. Then a lost
// copy of a tenant record is reported by scrub (exit 14, by IDs only) and
// healed by scrub --repair.
func TestDriveReplaceCLI(t *testing.T) {
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "secret-project")
	writeFile(t, filepath.Join(src, "payroll.txt"), []byte(strings.Repeat("confidential salaries\n", 2000)))
	r.must(t, nil, "backup", src)

	lost := filepath.Join(r.dir, "drives", "d1")
	var drives engine.DriveReport
	decodeJSON(t, r.must(t, nil, "drive", "list", "--json"), &drives)
	var id, rack string
	for _, d := range drives.Drives {
		if d.Path == lost {
			id, rack = d.ID, d.Rack
		}
	}
	if id == "" {
		t.Fatalf("no drive at %s: %+v", lost, drives)
	}
	if err := os.RemoveAll(lost); err != nil {
		t.Fatal(err)
	}
	res := r.must(t, nil, "drive", "fail", id)
	if !strings.Contains(res.stdout, "re-placed on the other drives") {
		t.Errorf("drive fail output:\n%s", res)
	}
	res = r.must(t, nil, "drive", "add", "--rack", rack, filepath.Join(r.dir, "drives", "d7"))
	if !strings.Contains(res.stdout, "re-placed") {
		t.Errorf("drive add output:\n%s", res)
	}
	r.must(t, nil, "scrub", "--repair")
	res = r.must(t, nil, "scrub")
	if !strings.Contains(res.stdout, "no damage found") || !strings.Contains(res.stdout, "0 records not whole") {
		t.Errorf("scrub after the replacement:\n%s", res)
	}

	copies, err := filepath.Glob(filepath.Join(r.dir, "drives", "*", "r", "tenants", "*"))
	if err != nil || len(copies) != 3 {
		t.Fatalf("tenant record copies %v, %v", copies, err)
	}
	if err := os.Remove(copies[0]); err != nil {
		t.Fatal(err)
	}
	res = r.run(t, nil, "scrub")
	if res.code != exitDamage {
		t.Fatalf("scrub with a record copy lost: exit %d:\n%s", res.code, res)
	}
	checkErrorLine(t, res)
	name := "r/tenants/" + filepath.Base(copies[0])
	if !strings.Contains(res.stdout, "record: "+name+": tenant record with 2 of its 3 copies") {
		t.Errorf("scrub output does not name the record:\n%s", res)
	}
	for _, secret := range []string{"acme", "secret-project", "payroll"} {
		if strings.Contains(res.stdout+res.stderr, secret) {
			t.Errorf("scrub output shows %q:\n%s", secret, res)
		}
	}
	res = r.must(t, nil, "scrub", "--repair")
	if !strings.Contains(res.stdout, "1 record not whole (repaired)") {
		t.Errorf("scrub --repair output:\n%s", res)
	}
	r.must(t, nil, "scrub")
	r.must(t, nil, "restore", "latest", "--target", t.TempDir())
}
