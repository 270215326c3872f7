package repo_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"coffer/repo"
)

// racksOf counts the shards of p per rack, over drives in service of members.
func racksOf(members []repo.Member, p repo.PackInfo) map[string]int {
	rack := map[repo.DriveID]repo.Member{}
	for _, m := range members {
		rack[m.ID] = m
	}
	out := map[string]int{}
	for _, d := range p.Drives {
		if m, ok := rack[d]; ok && !m.Failed {
			out[m.Rack]++
		}
	}
	return out
}

func rackOf(members []repo.Member, d repo.DriveID) string {
	for _, m := range members {
		if m.ID == d {
			return m.Rack
		}
	}
	return ""
}

// withFailed returns a copy of members with d marked out of service.
func withFailed(members []repo.Member, ds ...repo.DriveID) []repo.Member {
	out := append([]repo.Member(nil), members...)
	for i := range out {
		for _, d := range ds {
			if out[i].ID == d {
				out[i].Failed = true
			}
		}
	}
	return out
}

func holds(p repo.PackInfo, except int, d repo.DriveID) bool {
	for j, x := range p.Drives {
		if j != except && x == d {
			return true
		}
	}
	return false
}

// TestRepairPlaceRepairKeepsRacksSpread fails, in turn, the drive of each
// shard of a pack on 9 drives in 3 racks (2 shards per rack): the rebuilt
// shard must go to the same rack's free drive, never to a drive holding
// another shard, so every rack still holds at most m shards.
func TestRepairPlaceRepairKeepsRacksSpread(t *testing.T) {
	td := newDrives(t, 9, 3, false)
	r := newRepo(t, td, repo.Options{})
	p := writePack(t, r, packID(1), randBytes(1, 10000), []byte("T"))
	if got := racksOf(td.members, p); len(got) != 3 || got["r1"] != 2 || got["r2"] != 2 || got["r3"] != 2 {
		t.Fatalf("placement per rack %v, want 2 in each of 3", got)
	}
	for i, d := range p.Drives {
		members := withFailed(td.members, d)
		rf, err := repo.New(members, repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		to, err := rf.PlaceRepair(p, i, nil)
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
		if to == d || holds(p, i, to) {
			t.Fatalf("shard %d: placed on %s, which is the failed drive or holds another shard", i, to)
		}
		if rackOf(members, to) != rackOf(members, d) {
			t.Errorf("shard %d: moved from rack %s to rack %s; the same rack has a free drive", i, rackOf(members, d), rackOf(members, to))
		}
		q := p
		q.Drives = append([]repo.DriveID(nil), p.Drives...)
		q.Drives[i] = to
		for rack, n := range racksOf(members, q) {
			if n > q.M {
				t.Errorf("shard %d: rack %s holds %d shards, more than m = %d", i, rack, n, q.M)
			}
		}
		// Deterministic.
		if again, _ := rf.PlaceRepair(p, i, nil); again != to {
			t.Errorf("shard %d: second call chose %s, first %s", i, again, to)
		}
	}
}

// TestRepairPlaceRepairPrefersOwnDrive: a shard whose drive is in service
// (its file was lost or corrupt) is rebuilt in place when that drive's rack is
// among the emptiest, whatever the loads say.
func TestRepairPlaceRepairPrefersOwnDrive(t *testing.T) {
	td := newDrives(t, 9, 3, false)
	r := newRepo(t, td, repo.Options{})
	p := writePack(t, r, packID(2), randBytes(2, 5000), nil)
	for i, d := range p.Drives {
		to, err := r.PlaceRepair(p, i, func(x repo.DriveID) int64 {
			if x == d {
				return 1 << 40 // own drive is the fullest
			}
			return 0
		})
		if err != nil {
			t.Fatal(err)
		}
		if to != d {
			t.Errorf("shard %d: placed on %s, want its own drive %s", i, to, d)
		}
	}
}

// TestRepairPlaceRepairDegradedAndLoad: a shard that was never written (zero
// drive) goes to the rack with the fewest shards, and within it to the
// least-loaded free drive.
func TestRepairPlaceRepairDegradedAndLoad(t *testing.T) {
	td := newDrives(t, 12, 3, false) // 4 drives per rack
	r := newRepo(t, td, repo.Options{})
	p := writePack(t, r, packID(3), randBytes(3, 5000), nil)
	for i := range p.Drives {
		q := p
		q.Drives = append([]repo.DriveID(nil), p.Drives...)
		lostRack := rackOf(td.members, q.Drives[i])
		q.Drives[i] = repo.DriveID{}
		var free []repo.DriveID
		for _, m := range td.members {
			if m.Rack == lostRack && !holds(q, -1, m.ID) {
				free = append(free, m.ID)
			}
		}
		if len(free) != 3 {
			t.Fatalf("rack %s has %d free drives, want 3", lostRack, len(free))
		}
		for _, light := range free {
			to, err := r.PlaceRepair(q, i, func(x repo.DriveID) int64 {
				if x == light {
					return 10
				}
				return 1000
			})
			if err != nil {
				t.Fatal(err)
			}
			if to != light {
				t.Errorf("shard %d: placed on %s (rack %s), want the least-loaded free drive %s of rack %s", i, to, rackOf(td.members, to), light, lostRack)
			}
		}
	}
}

// TestRepairPlaceRepairUnevenRacks: when the racks cannot keep m shards each,
// the rebuilt shard still goes to the emptiest rack that has a free drive.
func TestRepairPlaceRepairUnevenRacks(t *testing.T) {
	td := newDrives(t, 8, 2, false) // 4 drives per rack: 3 shards per rack, more than m
	r := newRepo(t, td, repo.Options{})
	p := writePack(t, r, packID(4), randBytes(4, 5000), nil)
	for i, d := range p.Drives {
		members := withFailed(td.members, d)
		rf, err := repo.New(members, repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		to, err := rf.PlaceRepair(p, i, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rackOf(members, to) != rackOf(members, d) {
			t.Errorf("shard %d: moved from rack %s to %s, which holds more shards", i, rackOf(members, d), rackOf(members, to))
		}
	}
}

func TestRepairPlaceRepairNoFreeDrive(t *testing.T) {
	td := newDrives(t, 6, 3, false)
	r := newRepo(t, td, repo.Options{})
	p := writePack(t, r, packID(5), randBytes(5, 5000), nil)
	rf, err := repo.New(withFailed(td.members, p.Drives[0]), repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rf.PlaceRepair(p, 0, nil); !errors.Is(err, repo.ErrTooFewDrives) {
		t.Errorf("PlaceRepair with no free drive: %v, want ErrTooFewDrives", err)
	}
	if _, err := rf.PlaceRepair(p, 6, nil); err == nil {
		t.Error("PlaceRepair of shard 6 of a 4+2 pack succeeded")
	}
	bad := p
	bad.Drives = bad.Drives[:3]
	if _, err := rf.PlaceRepair(bad, 0, nil); err == nil {
		t.Error("PlaceRepair with a short drive list succeeded")
	}
}

// TestRepairRehomeAndDeleteCopy runs the repair sequence: rebuild a shard
// of a failed drive elsewhere, read through the new placement, and remove a
// stale copy with DeleteShardCopy.
func TestRepairRehomeAndDeleteCopy(t *testing.T) {
	ctx := context.Background()
	td := newDrives(t, 9, 3, false)
	r := newRepo(t, td, repo.Options{})
	data := randBytes(6, 300000)
	p := writePack(t, r, packID(6), data, []byte("trailer"))
	old := p.Drives[1]
	members := withFailed(td.members, old)
	rf, err := repo.New(members, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	to, err := rf.PlaceRepair(p, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rf.RewriteShard(ctx, p, 1, to, nil); err != nil {
		t.Fatal(err)
	}
	q := p
	q.Drives = append([]repo.DriveID(nil), p.Drives...)
	q.Drives[1] = to
	if err := rf.VerifyShard(ctx, q, 1); err != nil {
		t.Fatalf("rebuilt shard: %v", err)
	}
	// Lose two more shards: the pack must still read with the new placement.
	td.faulty[q.Drives[0]].Vanish()
	td.faulty[q.Drives[2]].Vanish()
	got, err := rf.ReadRange(ctx, q, 0, q.DataLen, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after repair and two more losses: %v", err)
	}
	td.faulty[q.Drives[0]].Revive()
	td.faulty[q.Drives[2]].Revive()
	// The old copy, on a drive in service again, is removed by DeleteShardCopy.
	name := repo.ShardName(p.Container, p.ID, 1)
	if _, err := td.faulty[old].Size(ctx, name); err != nil {
		t.Fatalf("old copy: %v", err)
	}
	if err := r.DeleteShardCopy(ctx, old, p.Container, p.ID, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := td.faulty[old].Size(ctx, name); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("old copy after DeleteShardCopy: %v, want ErrNotFound", err)
	}
	if err := r.DeleteShardCopy(ctx, old, p.Container, p.ID, 1); err != nil {
		t.Errorf("deleting a missing copy: %v", err)
	}
	if err := rf.DeleteShardCopy(ctx, old, p.Container, p.ID, 1); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("DeleteShardCopy on a drive out of service: %v, want ErrNotFound", err)
	}
}

// TestRepairPurgeContainer removes every object of one container on every
// drive (with and without DeletePrefix) and leaves other containers alone.
func TestRepairPurgeContainer(t *testing.T) {
	ctx := context.Background()
	td := newDrives(t, 6, 3, true)
	// Drive 0 without DeletePrefix: the per-object path.
	td.members[0].Drive = noPrefixDrive{td.members[0].Drive}
	r := newRepo(t, td, repo.Options{})
	enc, err := r.Encode(randBytes(7, 4000))
	if err != nil {
		t.Fatal(err)
	}
	const gone = "ffeeddccbbaa99887766554433221100"
	if _, err := r.WritePack(ctx, gone, packID(7), enc, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.PutRecord(ctx, "t/"+gone+"/s/x", []byte("rec")); err != nil {
		t.Fatal(err)
	}
	keep := writePack(t, r, packID(8), randBytes(8, 4000), nil)
	if err := r.PurgeContainer(ctx, gone); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = r.ListShards(ctx, func(_ repo.DriveID, c string, id repo.PackID, _ int, _ int64) error {
		if c == gone {
			t.Errorf("shard of pack %s of the purged container is still listed", id)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Errorf("%d shards left, want the 6 of pack %s", n, keep.ID)
	}
	if _, err := r.GetRecord(ctx, "t/"+gone+"/s/x"); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("record of the purged container: %v, want ErrNotFound", err)
	}
	for id, dir := range td.dirs {
		if _, err := os.Stat(filepath.Join(dir, "t", gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("drive %s still has the container folder: %v", id, err)
		}
	}
	if err := r.PurgeContainer(ctx, "../x"); err == nil {
		t.Error("PurgeContainer accepted a bad container name")
	}
}

type noPrefixDrive struct{ repo.Drive }

// TestRepairStaleTemp lists and removes old temporary files of interrupted
// puts, looking through a fault-injecting wrapper, and keeps recent ones.
func TestRepairStaleTemp(t *testing.T) {
	ctx := context.Background()
	td := newDrives(t, 6, 3, true)
	r := newRepo(t, td, repo.Options{})
	writePack(t, r, packID(9), randBytes(9, 4000), nil) // creates tmp folders
	id := td.members[2].ID
	tmp := filepath.Join(td.dirs[id], "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	old, recent := filepath.Join(tmp, "old.tmp"), filepath.Join(tmp, "recent.tmp")
	for _, p := range []string{old, recent} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Hour)
	var found []string
	err := r.ListStaleTemp(ctx, before, func(d repo.DriveID, name string, size int64) error {
		if d != id || size != 7 {
			t.Errorf("stale file %s on drive %s, %d bytes; want drive %s, 7 bytes", name, d, size, id)
		}
		found = append(found, name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0] != "tmp/old.tmp" {
		t.Fatalf("stale files %q, want [tmp/old.tmp]", found)
	}
	if err := r.CleanStaleTemp(ctx, before); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old temporary file survived: %v", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("recent temporary file was removed: %v", err)
	}
	// A drive without the ability (in memory) is skipped.
	mem := newDrives(t, 6, 3, false)
	rm := newRepo(t, mem, repo.Options{})
	if err := rm.ListStaleTemp(ctx, before, func(repo.DriveID, string, int64) error { return errors.New("called") }); err != nil {
		t.Errorf("ListStaleTemp on memory drives: %v", err)
	}
}
