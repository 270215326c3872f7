package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/repo"
)

// TestITCheck runs Check on a healthy repository, then with an orphan shard
// (a note, not damage), then with a missing shard (damage naming the pack).
func TestITCheck(t *testing.T) {
	ctx := context.Background()
	f := itNewFixture(t, InitOptions{}, itModestTree())
	shards := itPackShards(itShards(t, f.dir))
	e := itOpen(t, f.dir)
	itTenant(t, e, f.name)

	t.Run("healthy", func(t *testing.T) {
		for _, readData := range []bool{false, true} {
			rep, err := e.Check(ctx, CheckOptions{ReadData: readData})
			if err != nil {
				t.Fatalf("Check(ReadData=%v) on a healthy repository: %v (problems %q)", readData, err, problems(rep))
			}
			if len(rep.Problems) != 0 || len(rep.Notes) != 0 {
				t.Errorf("Check(ReadData=%v): problems %q, notes %q; want none", readData, rep.Problems, rep.Notes)
			}
			if rep.Tenants != 1 || rep.Snapshots != 1 || rep.Packs != len(shards) || rep.Shards != 6*len(shards) || rep.Blobs == 0 {
				t.Errorf("Check(ReadData=%v) counted %+v; want 1 tenant, 1 snapshot, %d packs, %d shards", readData, rep, len(shards), 6*len(shards))
			}
		}
	})

	// Pick a shard to copy and one to delete, of two different packs.
	var some []itShard
	for _, byIndex := range shards {
		some = append(some, byIndex[3])
	}
	if len(some) < 2 {
		t.Fatalf("%d packs; need two", len(some))
	}

	t.Run("orphan shard is a note", func(t *testing.T) {
		var orphan repo.PackID
		randomBytes(orphan[:])
		rel := repo.ShardName(some[0].container, orphan, some[0].index)
		dst := filepath.Join(some[0].drive, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(some[0].path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
		rep, err := e.Check(ctx, CheckOptions{})
		if err != nil {
			t.Fatalf("Check with an orphan shard: %v (problems %q)", err, problems(rep))
		}
		if len(rep.Problems) != 0 {
			t.Errorf("orphan shard gave problems %q; it is harmless", rep.Problems)
		}
		if !strings.Contains(strings.Join(rep.Notes, "\n"), orphan.String()) {
			t.Errorf("notes %q do not name the orphan pack %s", rep.Notes, orphan)
		}
	})

	t.Run("missing shard is damage", func(t *testing.T) {
		victim := some[1]
		if err := os.Remove(victim.path); err != nil {
			t.Fatal(err)
		}
		rep, err := e.Check(ctx, CheckOptions{})
		if !errors.Is(err, ErrCheckFailed) {
			t.Fatalf("Check with a missing shard: %v, want ErrCheckFailed", err)
		}
		if rep == nil || !strings.Contains(strings.Join(rep.Problems, "\n"), victim.pack.String()) {
			t.Errorf("problems %q do not name pack %s", problems(rep), victim.pack)
		}
		// The data is still there: one missing shard is within parity.
		tn := itTenant(t, e, f.name)
		itCompareTrees(t, f.src, itRestore(t, tn, f.snap, f.src))
	})
}

func problems(rep *CheckReport) []string {
	if rep == nil {
		return nil
	}
	return rep.Problems
}
