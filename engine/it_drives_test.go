package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/repo"
)

// TestITRestoreAfterLosingAnyMDrives removes every pair of the default six
// drive folders in turn (k=4, m=2): the repository must still open and
// restore the snapshot identically. Each case removes two folders and puts
// them back from a pristine copy afterwards.
func TestITRestoreAfterLosingAnyMDrives(t *testing.T) {
	f := itNewFixture(t, InitOptions{}, itModestTree())
	drives := itDriveDirs(t, f.dir)
	if len(drives) != DefaultDrives {
		t.Fatalf("%d drive folders, want %d", len(drives), DefaultDrives)
	}
	pristine := t.TempDir()
	for _, d := range drives {
		itCopyDir(t, d, filepath.Join(pristine, filepath.Base(d)))
	}
	if n := len(itPackShards(itShards(t, f.dir))); n < 3 {
		t.Fatalf("fixture has %d packs; the test needs data spread over several", n)
	}
	for i := range drives {
		for j := i + 1; j < len(drives); j++ {
			a, b := drives[i], drives[j]
			t.Run(filepath.Base(a)+"+"+filepath.Base(b), func(t *testing.T) {
				for _, d := range []string{a, b} {
					if err := os.RemoveAll(d); err != nil {
						t.Fatal(err)
					}
				}
				defer func() {
					for _, d := range []string{a, b} {
						os.RemoveAll(d)
						itCopyDir(t, filepath.Join(pristine, filepath.Base(d)), d)
					}
				}()
				var warn strings.Builder
				e, err := Open(f.dir, Options{Warn: &warn})
				if err != nil {
					t.Fatalf("Open with drives %s and %s gone (4 of 6 left, k=4): %v", filepath.Base(a), filepath.Base(b), err)
				}
				defer e.Close()
				tn, err := e.OpenTenant(context.Background(), f.name)
				if err != nil {
					t.Fatal(err)
				}
				itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))
			})
		}
	}
}

// TestITLossBeyondParity loses m+1 shards of a pack in different ways: the
// restore must fail with an error that wraps ErrDamage and names a pack that
// lost too many shards, never return wrong data.
func TestITLossBeyondParity(t *testing.T) {
	seven := make([]DriveSpec, 7)
	for i := range seven {
		seven[i] = DriveSpec{Rack: fmt.Sprintf("r%d", i+1)}
	}
	for _, tc := range []struct {
		name   string
		drives []DriveSpec // nil: the default six
		// lose removes files or folders for the chosen data pack and returns
		// the packs that then lack more than m shards.
		lose func(t *testing.T, f *itFixture, victim repo.PackID, shards map[repo.PackID]map[int]itShard) []repo.PackID
	}{
		{
			name: "three shard files of one pack deleted",
			lose: func(t *testing.T, f *itFixture, victim repo.PackID, shards map[repo.PackID]map[int]itShard) []repo.PackID {
				for i := range 3 {
					if err := os.Remove(shards[victim][i].path); err != nil {
						t.Fatal(err)
					}
				}
				return []repo.PackID{victim}
			},
		},
		{
			name: "two drive folders gone and one more shard file of one pack",
			lose: func(t *testing.T, f *itFixture, victim repo.PackID, shards map[repo.PackID]map[int]itShard) []repo.PackID {
				gone := map[string]bool{shards[victim][0].drive: true, shards[victim][1].drive: true}
				for d := range gone {
					if err := os.RemoveAll(d); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.Remove(shards[victim][2].path); err != nil {
					t.Fatal(err)
				}
				return []repo.PackID{victim}
			},
		},
		{
			name:   "three of seven drive folders gone",
			drives: seven,
			lose: func(t *testing.T, f *itFixture, victim repo.PackID, shards map[repo.PackID]map[int]itShard) []repo.PackID {
				gone := map[string]bool{}
				for i := range 3 {
					gone[shards[victim][i].drive] = true
				}
				for d := range gone {
					if err := os.RemoveAll(d); err != nil {
						t.Fatal(err)
					}
				}
				var lost []repo.PackID
				for id, byIndex := range shards {
					n := 0
					for _, s := range byIndex {
						if gone[s.drive] {
							n++
						}
					}
					if n > DefaultParityShards {
						lost = append(lost, id)
					}
				}
				return lost
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := InitOptions{Drives: tc.drives}
			runLoss(t, itNewFixture(t, o, itModestTree()), tc.lose)
		})
	}
}

func runLoss(t *testing.T, f *itFixture, lose func(*testing.T, *itFixture, repo.PackID, map[repo.PackID]map[int]itShard) []repo.PackID) {
	t.Helper()
	e := itOpen(t, f.dir)
	tn := itTenant(t, e, f.name)
	data := itIndex(t, tn).packsOf(DataBlob)
	e.Close()
	if len(data) == 0 {
		t.Fatal("no data packs")
	}
	shards := itPackShards(itShards(t, f.dir))
	victim := data[0]
	if len(shards[victim]) != DefaultDataShards+DefaultParityShards {
		t.Fatalf("pack %s has %d shard files, want %d", victim, len(shards[victim]), DefaultDataShards+DefaultParityShards)
	}
	lost := lose(t, f, victim, shards)

	e, err := Open(f.dir, Options{})
	if err != nil {
		t.Fatalf("Open with at least k drives left: %v", err)
	}
	defer e.Close()
	tn, err = e.OpenTenant(context.Background(), f.name)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tn.Restore(context.Background(), f.snap, t.TempDir(), RestoreOptions{})
	if err == nil {
		t.Fatal("Restore succeeded with m+1 shards of a pack lost")
	}
	if !errors.Is(err, ErrDamage) {
		t.Errorf("Restore error does not wrap ErrDamage: %v", err)
	}
	if !itErrNamesOneOf(err, lost) {
		t.Errorf("Restore error names none of the packs that lost m+1 shards %v: %v", lost, err)
	}
}

// TestITCorruptShards damages shard data on the drives: bitrot in up to m
// shards of every pack, bitrot in m+1 shards of one pack, and a tamperer who
// rewrites a shard together with its block CRCs.
func TestITCorruptShards(t *testing.T) {
	pairs := [][2]int{}
	for i := range 6 {
		for j := i + 1; j < 6; j++ {
			pairs = append(pairs, [2]int{i, j})
		}
	}
	for _, tc := range []struct {
		name string
		// damage changes shard files and returns the damaged packs.
		damage func(t *testing.T, shards map[repo.PackID]map[int]itShard, data []repo.PackID) []repo.PackID
		// restoreFails: the restore must fail naming a damaged pack.
		restoreFails bool
	}{
		{
			name: "bitrot in m shards of every pack",
			damage: func(t *testing.T, shards map[repo.PackID]map[int]itShard, _ []repo.PackID) []repo.PackID {
				var out []repo.PackID
				n := 0
				for id, byIndex := range shards {
					// Rotate over all 15 pairs, data and parity shards alike;
					// pairs[0] (shards 0 and 1) comes first, so some pack
					// loses two data shards that reads go to directly.
					p := pairs[n%len(pairs)]
					n++
					itCorruptShard(t, byIndex[p[0]].path)
					itCorruptShard(t, byIndex[p[1]].path)
					out = append(out, id)
				}
				return out
			},
		},
		{
			name: "tampered shard with recomputed CRCs in every pack",
			damage: func(t *testing.T, shards map[repo.PackID]map[int]itShard, _ []repo.PackID) []repo.PackID {
				var out []repo.PackID
				for id, byIndex := range shards {
					itTamperShard(t, byIndex[0].path) // a data shard: reads go to it
					out = append(out, id)
				}
				return out
			},
		},
		{
			name: "tampered shard plus bitrot in another of the same pack",
			damage: func(t *testing.T, shards map[repo.PackID]map[int]itShard, data []repo.PackID) []repo.PackID {
				itTamperShard(t, shards[data[0]][1].path)
				itCorruptShard(t, shards[data[0]][2].path)
				return []repo.PackID{data[0]}
			},
		},
		{
			name: "bitrot in m+1 shards of one data pack",
			damage: func(t *testing.T, shards map[repo.PackID]map[int]itShard, data []repo.PackID) []repo.PackID {
				for i := range 3 {
					itCorruptShard(t, shards[data[0]][i].path)
				}
				return []repo.PackID{data[0]}
			},
			restoreFails: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := itNewFixture(t, InitOptions{}, itModestTree())
			e := itOpen(t, f.dir)
			data := itIndex(t, itTenant(t, e, f.name)).packsOf(DataBlob)
			e.Close()
			damaged := tc.damage(t, itPackShards(itShards(t, f.dir)), data)

			e = itOpen(t, f.dir) // nothing cached from before the damage
			tn := itTenant(t, e, f.name)
			ctx := context.Background()
			if tc.restoreFails {
				_, err := tn.Restore(ctx, f.snap, t.TempDir(), RestoreOptions{})
				if err == nil {
					t.Fatal("Restore succeeded with m+1 shards of a pack damaged")
				}
				if !errors.Is(err, ErrDamage) {
					t.Errorf("Restore error does not wrap ErrDamage: %v", err)
				}
				if !itErrNamesOneOf(err, damaged) {
					t.Errorf("Restore error does not name pack %s: %v", damaged[0], err)
				}
				return
			}
			itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))

			rep, err := e.Check(ctx, CheckOptions{ReadData: true})
			if !errors.Is(err, ErrCheckFailed) {
				t.Fatalf("Check --read-data on damaged shards: %v, want ErrCheckFailed", err)
			}
			all := strings.Join(rep.Problems, "\n")
			for _, id := range damaged {
				if !strings.Contains(all, id.String()) {
					t.Errorf("Check --read-data problems do not name damaged pack %s:\n%s", id, all)
				}
			}
		})
	}
}
