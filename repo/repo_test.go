package repo_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"coffer/repo"
	"coffer/repo/drivetest"
)

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		o  repo.Options
		ok bool
	}{
		{repo.Options{}, true},
		{repo.Options{K: 10, M: 4, BlockSize: 1 << 20}, true},
		{repo.Options{K: 1, M: 1, BlockSize: repo.MinBlockSize}, true},
		{repo.Options{K: 200, M: 55, BlockSize: repo.MaxBlockSize}, true},
		{repo.Options{K: -1}, false},
		{repo.Options{M: -1}, false},
		{repo.Options{K: 200, M: 56}, false},
		{repo.Options{BlockSize: 5000}, false},
		{repo.Options{BlockSize: 2048}, false},
		{repo.Options{BlockSize: 32 << 20}, false},
	}
	for _, tc := range tests {
		if err := tc.o.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v.Validate() = %v", tc.o, err)
		}
	}
	td := newDrives(t, 6, 3, false)
	r := newRepo(t, td, repo.Options{})
	if got := r.Options(); got != (repo.Options{K: 4, M: 2, BlockSize: 65536}) {
		t.Errorf("defaults: %+v", got)
	}
}

func TestNew(t *testing.T) {
	td := newDrives(t, 6, 3, false)
	if _, err := repo.New(td.members[:3], repo.Options{}); !errors.Is(err, repo.ErrTooFewDrives) {
		t.Errorf("3 drives for K=4: %v", err)
	}
	// With fewer than K+M drives in service the repository opens for reading,
	// but no pack can be placed.
	ms := slices.Clone(td.members)
	ms[0].Failed = true
	ms[1].Failed = true
	degraded, err := repo.New(ms, repo.Options{})
	if err != nil {
		t.Fatalf("6 drives, two failed: %v", err)
	}
	if _, err := degraded.Place(repo.PackID{1}); !errors.Is(err, repo.ErrTooFewDrives) {
		t.Errorf("Place with 4 of 6 drives: %v", err)
	}
	ms[2].Failed = true
	if _, err := repo.New(ms, repo.Options{}); !errors.Is(err, repo.ErrTooFewDrives) {
		t.Errorf("6 drives, three failed: %v", err)
	}
	ms = append(slices.Clone(td.members), td.members[0])
	if _, err := repo.New(ms, repo.Options{}); err == nil {
		t.Error("duplicate drive accepted")
	}
	ms = slices.Clone(td.members)
	ms[1].Rack = ""
	if _, err := repo.New(ms, repo.Options{}); err == nil {
		t.Error("empty rack accepted")
	}
	ms = slices.Clone(td.members)
	ms[1].Drive = nil
	if _, err := repo.New(ms, repo.Options{}); err == nil {
		t.Error("member in service without a Drive accepted")
	}
	r := newRepo(t, td, repo.Options{})
	got := r.Members()
	got[0].Rack = "changed"
	if r.Members()[0].Rack == "changed" {
		t.Error("Members returned the Repo's own slice")
	}
}

// racked makes members with the given number of drives in each rack.
func racked(sizes ...int) []repo.Member {
	var ms []repo.Member
	n := 0
	for r, size := range sizes {
		for range size {
			ms = append(ms, repo.Member{ID: driveID(n), Rack: fmt.Sprintf("rack%d", r), Drive: drivetest.NewMem()})
			n++
		}
	}
	return ms
}

func TestPlaceSpreadsOverRacks(t *testing.T) {
	r, err := repo.New(racked(2, 2, 2), repo.Options{K: 4, M: 2})
	if err != nil {
		t.Fatal(err)
	}
	rackOf := map[repo.DriveID]string{}
	for _, m := range r.Members() {
		rackOf[m.ID] = m.Rack
	}
	for i := range 200 {
		ds, err := r.Place(packID(i))
		if err != nil {
			t.Fatal(err)
		}
		perRack := map[string]int{}
		for _, d := range ds {
			perRack[rackOf[d]]++
		}
		if len(ds) != 6 || len(perRack) != 3 || perRack["rack0"] != 2 || perRack["rack1"] != 2 || perRack["rack2"] != 2 {
			t.Fatalf("pack %d: %v per rack", i, perRack)
		}
		if distinct := map[repo.DriveID]bool{}; func() int {
			for _, d := range ds {
				distinct[d] = true
			}
			return len(distinct)
		}() != 6 {
			t.Fatalf("pack %d: drives not distinct: %v", i, ds)
		}
	}
}

// minMaxPerRack is the smallest possible largest share of one rack when n shards go
// to racks of the given sizes.
func minMaxPerRack(sizes []int, n int) int {
	for x := 1; ; x++ {
		sum := 0
		for _, s := range sizes {
			sum += min(s, x)
		}
		if sum >= n {
			return x
		}
	}
}

func TestPlaceIsAsEvenAsRacksAllow(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		sizes := make([]int, 1+rng.IntN(5))
		total := 0
		for i := range sizes {
			sizes[i] = 1 + rng.IntN(6)
			total += sizes[i]
		}
		k := 1 + rng.IntN(min(total, 8))
		m := 1 + rng.IntN(max(1, min(total-k, 4)))
		if k+m > total {
			continue
		}
		r, err := repo.New(racked(sizes...), repo.Options{K: k, M: m})
		if err != nil {
			t.Fatal(err)
		}
		rackOf := map[repo.DriveID]string{}
		for _, mb := range r.Members() {
			rackOf[mb.ID] = mb.Rack
		}
		ds, err := r.Place(packID(trial))
		if err != nil {
			t.Fatal(err)
		}
		perRack := map[string]int{}
		for _, d := range ds {
			perRack[rackOf[d]]++
		}
		if got, want := slices.Max(slices.Collect(maps.Values(perRack))), minMaxPerRack(sizes, k+m); got != want {
			t.Errorf("racks %v, k=%d m=%d: a rack holds %d shards, the best possible is %d", sizes, k, m, got, want)
		}
	}
}

func TestPlaceDeterministicAndEven(t *testing.T) {
	ms := racked(4, 4, 4)
	r1, err := repo.New(ms, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	shuffled := slices.Clone(ms)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	r2, err := repo.New(shuffled, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	load := map[repo.DriveID]int{}
	first := map[repo.DriveID]int{}
	const packs = 3000
	for i := range packs {
		a, _ := r1.Place(packID(i))
		b, _ := r2.Place(packID(i))
		c, _ := r1.Place(packID(i))
		if !slices.Equal(a, b) || !slices.Equal(a, c) {
			t.Fatalf("pack %d placed %v, then %v, then %v", i, a, b, c)
		}
		for _, d := range a {
			load[d]++
		}
		first[a[0]]++
	}
	// 12 drives, 6 shards per pack: each drive expects 1500 shards and 250 first shards.
	for d, n := range load {
		if n < 1350 || n > 1650 {
			t.Errorf("drive %s holds %d shards, want about 1500", d, n)
		}
		if first[d] < 175 || first[d] > 325 {
			t.Errorf("drive %s holds shard 0 of %d packs, want about 250", d, first[d])
		}
	}
	// Failing one drive moves only the packs that used it.
	failed := slices.Clone(ms)
	failed[5].Failed = true
	r3, err := repo.New(failed, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range packs {
		a, _ := r1.Place(packID(i))
		b, _ := r3.Place(packID(i))
		if slices.Contains(b, ms[5].ID) {
			t.Fatalf("pack %d placed on a failed drive", i)
		}
		if !slices.Contains(a, ms[5].ID) && !slices.Equal(a, b) {
			t.Fatalf("pack %d moved from %v to %v although it did not use the failed drive", i, a, b)
		}
	}
}

func TestRecords(t *testing.T) {
	ctx := context.Background()
	td := newDrives(t, 6, 3, true)
	r := newRepo(t, td, smallOpts)
	name := "r/tenants/00aa"
	if err := r.PutRecord(ctx, name, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	var holders []repo.DriveID
	racks := map[string]bool{}
	for _, m := range td.members {
		if _, err := m.Drive.Size(ctx, name); err == nil {
			holders = append(holders, m.ID)
			racks[m.Rack] = true
		}
	}
	if len(holders) != 3 || len(racks) != 3 {
		t.Fatalf("record on %d drives in %d racks, want 3 in 3", len(holders), len(racks))
	}
	copies, err := r.GetRecord(ctx, name)
	if err != nil || len(copies) != 3 || string(copies[0]) != "v1" {
		t.Fatalf("GetRecord = %q, %v", copies, err)
	}
	// Losing M=2 of its drives still leaves a copy.
	td.faulty[holders[0]].Vanish()
	td.faulty[holders[1]].Vanish()
	copies, err = r.GetRecord(ctx, name)
	if err != nil || len(copies) != 1 || string(copies[0]) != "v1" {
		t.Errorf("GetRecord with 2 holders gone = %q, %v", copies, err)
	}
	if _, err := r.GetRecord(ctx, "r/tenants/none"); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("GetRecord of a missing record with 2 drives gone = %v, want ErrNotFound", err)
	}
	// Two placed drives gone: their copies go to spares, and the newest
	// version is found although the placed drives left hold only one copy.
	if err := r.PutRecord(ctx, name, []byte("v2")); err != nil {
		t.Errorf("PutRecord with two placed drives gone: %v", err)
	}
	copies, err = r.GetRecord(ctx, name)
	if err != nil || len(copies) != 3 {
		t.Errorf("GetRecord after a write to spares = %q, %v", copies, err)
	}
	for _, c := range copies {
		if string(c) != "v2" {
			t.Errorf("GetRecord after a write to spares found %q", c)
		}
	}
	td.faulty[holders[2]].Vanish()
	if _, err := r.GetRecord(ctx, "r/tenants/none"); err == nil || errors.Is(err, repo.ErrNotFound) {
		t.Errorf("GetRecord with 3 drives gone = %v, want an error that is not ErrNotFound", err)
	}
	for _, d := range holders {
		td.faulty[d].Revive()
	}
	// A copy found only off the placed drives (membership changed) is still found.
	stray := td.members[0].ID
	for _, m := range td.members {
		if !slices.Contains(holders, m.ID) {
			stray = m.ID
		}
	}
	if err := td.faulty[stray].Put(ctx, "r/moved", []byte("old place")); err != nil {
		t.Fatal(err)
	}
	if copies, err := r.GetRecord(ctx, "r/moved"); err != nil || len(copies) != 1 {
		t.Errorf("GetRecord of a copy off its placed drives = %q, %v", copies, err)
	}
	for _, bad := range []string{"", "/x", "coffer-drive", repo.ShardName(testContainer, packID(1), 0), "tmp/x"} {
		if err := r.PutRecord(ctx, bad, nil); err == nil {
			t.Errorf("PutRecord(%q) accepted", bad)
		}
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

func TestListAndDeleteRecords(t *testing.T) {
	ctx := context.Background()
	td := newDrives(t, 6, 3, false)
	r := newRepo(t, td, smallOpts)
	names := []string{"r/tenants/01", "r/tenants/02", "r/config", "t/" + testContainer + "/s/aa", "t/" + testContainer + "/s/bb"}
	for _, n := range names {
		if err := r.PutRecord(ctx, n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	writePack(t, r, packID(20), []byte("pack data"), nil)
	for _, m := range td.members {
		if err := repo.WriteIdentity(ctx, m.Drive, repo.Identity{Drive: m.ID, Rack: m.Rack}); err != nil {
			t.Fatal(err)
		}
	}
	list := func(prefix string) []string {
		t.Helper()
		var got []string
		if err := r.ListRecords(ctx, prefix, func(n string) error { got = append(got, n); return nil }); err != nil {
			t.Fatalf("ListRecords(%q): %v", prefix, err)
		}
		slices.Sort(got)
		return got
	}
	if got, want := list(""), slices.Sorted(slices.Values(names)); !slices.Equal(got, want) {
		t.Errorf("ListRecords(\"\") = %v, want %v", got, want)
	}
	if got := list("r/tenants/"); !slices.Equal(got, []string{"r/tenants/01", "r/tenants/02"}) {
		t.Errorf("ListRecords(r/tenants/) = %v", got)
	}
	// Two drives gone: every record still listed.
	td.faulty[td.members[0].ID].Vanish()
	td.faulty[td.members[3].ID].Vanish()
	if got := list(""); len(got) != len(names) {
		t.Errorf("with 2 drives gone, ListRecords found %v", got)
	}
	td.faulty[td.members[4].ID].Vanish()
	if err := r.ListRecords(ctx, "", func(string) error { return nil }); err == nil {
		t.Error("ListRecords with 3 drives gone reported a complete listing")
	}
	for _, m := range td.members {
		td.faulty[m.ID].Revive()
	}
	if err := r.DeleteRecord(ctx, "r/config"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetRecord(ctx, "r/config"); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("GetRecord after DeleteRecord = %v", err)
	}
	td.faulty[td.members[1].ID].Vanish()
	if err := r.DeleteRecord(ctx, "r/tenants/01"); err == nil {
		t.Error("DeleteRecord with a drive gone reported success")
	}
}
