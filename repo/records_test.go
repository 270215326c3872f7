package repo_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"

	"coffer/repo"
	"coffer/repo/drivetest"
)

// holdersOf returns the drives of td whose inner drive holds name with data.
func holdersOf(t *testing.T, td *testDrives, name, data string) []repo.DriveID {
	t.Helper()
	var out []repo.DriveID
	for _, m := range td.members {
		b := make([]byte, len(data))
		if err := td.faulty[m.ID].Inner().ReadAt(context.Background(), name, b, 0); err == nil && string(b) == data {
			out = append(out, m.ID)
		}
	}
	return out
}

// TestPutRecordSparesAndQuorum: a copy whose drive refuses the put, with
// any error, goes to the next drive in placement order; the write succeeds
// at m+1 durable copies and fails below, naming the drives.
func TestPutRecordSparesAndQuorum(t *testing.T) {
	for _, tc := range []struct {
		name    string
		m       int
		fail    int   // placed or spare drives that refuse, in placement order
		err     error // what they answer
		copies  int   // copies durable afterwards
		ok      bool
		suspect bool // the refusing drives are marked suspect
	}{
		{name: "healthy", m: 2, fail: 0, copies: 3, ok: true},
		{name: "read-only", m: 2, fail: 1, err: syscall.EROFS, copies: 3, ok: true, suspect: true},
		{name: "no space", m: 2, fail: 2, err: syscall.ENOSPC, copies: 3, ok: true, suspect: true},
		{name: "out of quota", m: 2, fail: 3, err: syscall.EDQUOT, copies: 3, ok: true, suspect: true},
		{name: "io error", m: 2, fail: 1, err: syscall.EIO, copies: 3, ok: true, suspect: true},
		{name: "any error", m: 2, fail: 2, err: drivetest.ErrInjected, copies: 3, ok: true},
		{name: "below quorum", m: 2, fail: 4, err: syscall.EROFS, copies: 2, suspect: true},
		{name: "m=1 quorum 2", m: 1, fail: 4, err: syscall.EIO, copies: 2, ok: true, suspect: true},
		{name: "m=1 below quorum", m: 1, fail: 5, err: syscall.EIO, copies: 1, suspect: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			td := newDrives(t, 6, 3, false)
			r := newRepo(t, td, repo.Options{K: 2, M: tc.m, BlockSize: bs})
			name := "t/" + testContainer + "/s/01"
			order := r.RecordPlacement(name)
			if len(order) != 3 {
				t.Fatalf("placement of %d drives, want 3", len(order))
			}
			// The refusing drives: the placed ones first, then spares.
			refusing := slices.Clone(order)
			for _, m := range td.members {
				if !slices.Contains(refusing, m.ID) {
					refusing = append(refusing, m.ID)
				}
			}
			refusing = refusing[:tc.fail]
			for _, d := range refusing {
				td.faulty[d].Add(drivetest.Rule{Op: drivetest.OpPut, Action: drivetest.Fail, Err: tc.err})
			}
			err := r.PutRecord(ctx, name, []byte("rec"))
			if (err == nil) != tc.ok {
				t.Fatalf("PutRecord: %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				for _, d := range refusing {
					if !strings.Contains(err.Error(), d.String()) {
						t.Errorf("the error does not name drive %s: %v", d, err)
					}
				}
				if !strings.Contains(err.Error(), "copies durable") {
					t.Errorf("the error does not say the quorum was missed: %v", err)
				}
			}
			held := holdersOf(t, td, name, "rec")
			if len(held) != tc.copies {
				t.Fatalf("%d copies durable, want %d", len(held), tc.copies)
			}
			for _, d := range held {
				if slices.Contains(refusing, d) {
					t.Errorf("a copy on drive %s, which refused", d)
				}
			}
			for _, d := range refusing {
				_, marked := r.Health().Suspect(d)
				if marked != tc.suspect {
					t.Errorf("drive %s suspect = %v, want %v", d, marked, tc.suspect)
				}
			}
			if copies, err := r.GetRecord(ctx, name); err != nil || len(copies) != len(held) {
				t.Errorf("GetRecord = %d copies, %v; want %d", len(copies), err, len(held))
			}
		})
	}
}

// TestSuspectDrivesAreAvoided: once a drive refused a write with a drive
// fault, later writes of records and packs place on the other drives and do
// not call it; a successful put clears the mark.
func TestSuspectDrivesAreAvoided(t *testing.T) {
	ctx := context.Background()
	td := newDrives(t, 7, 3, false)
	var changes []repo.DriveID
	h := repo.NewHealth(func(d repo.DriveID) { changes = append(changes, d) })
	r := newRepo(t, td, repo.Options{K: 4, M: 2, BlockSize: bs, Health: h})
	bad := r.RecordPlacement("r/config")[0]
	td.faulty[bad].Add(drivetest.Rule{Op: drivetest.OpPut, Action: drivetest.Fail, Err: syscall.EROFS})
	if err := r.PutRecord(ctx, "r/config", []byte("c")); err != nil {
		t.Fatal(err)
	}
	s, ok := h.Suspect(bad)
	if !ok || s.Reason != "read-only file system" || s.Since.IsZero() {
		t.Fatalf("suspect mark %+v, %v", s, ok)
	}
	if !slices.Equal(changes, []repo.DriveID{bad}) {
		t.Errorf("onChange calls %v", changes)
	}
	if slices.Contains(r.RecordPlacement("r/config"), bad) {
		t.Error("the suspect drive is still in the record's placement")
	}
	puts := td.faulty[bad].Calls(drivetest.OpPut)
	for i := range 20 {
		if err := r.PutRecord(ctx, "r/tenants/"+strings.Repeat("0", i+1), []byte("t")); err != nil {
			t.Fatal(err)
		}
		p := writePack(t, r, packID(100+i), randBytes(uint64(i), 5000), nil)
		if slices.Contains(p.Drives, bad) || len(r.Degraded(p)) != 0 {
			t.Fatalf("pack placed on %v with drive %s suspect", p.Drives, bad)
		}
	}
	if n := td.faulty[bad].Calls(drivetest.OpPut); n != puts {
		t.Errorf("%d puts reached the suspect drive", n-puts)
	}
	// A new Repo with the same Health (the drive set changed) avoids it too.
	r2 := newRepo(t, td, repo.Options{K: 4, M: 2, BlockSize: bs, Health: h})
	if slices.Contains(r2.RecordPlacement("r/config"), bad) {
		t.Error("a new Repo with the same Health places on the suspect drive")
	}
	// A put that succeeds (a repair that chose it) clears the mark.
	td.faulty[bad].Reset()
	p := writePack(t, r, packID(1), randBytes(1, 5000), nil)
	i := slices.IndexFunc(p.Drives, func(d repo.DriveID) bool { return d != bad })
	if err := r.RewriteShard(ctx, p, i, bad, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.Suspect(bad); ok {
		t.Error("a successful put did not clear the mark")
	}
}

// TestSuspectDrivesTriedWhenTooFewOthers: with fewer healthy drives than a
// pack's write quorum, suspect drives are tried again rather than failing.
func TestSuspectDrivesTriedWhenTooFewOthers(t *testing.T) {
	ctx := context.Background()
	td := newDrives(t, 6, 3, false)
	h := repo.NewHealth(nil)
	r := newRepo(t, td, repo.Options{K: 4, M: 2, BlockSize: bs, Health: h})
	// Two drives refused once (a full disk that was freed since).
	for _, m := range td.members[:2] {
		td.faulty[m.ID].Add(drivetest.Rule{Op: drivetest.OpPut, Action: drivetest.Fail, Err: syscall.ENOSPC, Times: 1})
		if err := r.PutRecord(ctx, "r/x"+m.ID.String(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.Suspects()) < 1 {
		t.Fatalf("suspects %v", h.Suspects())
	}
	enc, err := r.Encode(randBytes(2, 9000))
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.WritePack(ctx, testContainer, packID(2), enc, nil)
	if err != nil {
		t.Fatalf("WritePack with 4 healthy and 2 suspect drives: %v", err)
	}
	if n := len(r.Degraded(p)); n > 1 {
		t.Errorf("%d shards unwritten", n)
	}
}

// TestRepairRecord: the placement is made to hold the record; drives that
// hold it already are not written; a refusing drive is replaced by a spare.
func TestRepairRecord(t *testing.T) {
	ctx := context.Background()
	td := newDrives(t, 6, 3, false)
	r := newRepo(t, td, smallOpts)
	name := "r/tenants/0a"
	place := r.RecordPlacement(name)
	if err := td.faulty[place[0]].Put(ctx, name, []byte("good")); err != nil {
		t.Fatal(err)
	}
	if err := td.faulty[place[1]].Put(ctx, name, []byte("stale")); err != nil {
		t.Fatal(err)
	}
	td.faulty[place[2]].Add(drivetest.Rule{Op: drivetest.OpPut, Action: drivetest.Fail, Err: syscall.EIO})
	before := td.faulty[place[0]].Calls(drivetest.OpPut)
	held, err := r.RepairRecord(ctx, name, []byte("good"), func(d repo.DriveID) bool { return d == place[0] })
	if err != nil || len(held) != 3 {
		t.Fatalf("RepairRecord = %v, %v", held, err)
	}
	if td.faulty[place[0]].Calls(drivetest.OpPut) != before {
		t.Error("the drive that held the record was written again")
	}
	got := holdersOf(t, td, name, "good")
	slices.SortFunc(got, func(a, b repo.DriveID) int { return slices.Compare(a[:], b[:]) })
	slices.SortFunc(held, func(a, b repo.DriveID) int { return slices.Compare(a[:], b[:]) })
	if !slices.Equal(got, held) || slices.Contains(held, place[2]) || !slices.Contains(held, place[1]) {
		t.Errorf("copies on %v, repair reported %v (placement %v)", got, held, place)
	}
	// With every other drive refusing, the repair says how far it got.
	for _, m := range td.members {
		td.faulty[m.ID].Add(drivetest.Rule{Op: drivetest.OpPut, Action: drivetest.Fail, Err: syscall.EROFS})
	}
	held, err = r.RepairRecord(ctx, "r/tenants/0b", []byte("x"), nil)
	if err == nil || len(held) != 0 || !errors.Is(err, syscall.EROFS) {
		t.Errorf("RepairRecord onto read-only drives = %v, %v", held, err)
	}
}
