package engine

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"coffer/engine/tree"
)

// dagTrees builds levels trees, each holding width folders that all share
// the tree below (the last level is empty): width^levels paths from
// levels+1 distinct trees of a few hundred bytes each. The blobs are in
// upload order, leaves first; the last is the root.
func dagTrees(t *testing.T, tn *Tenant, levels, width int) []IngestBlob {
	t.Helper()
	out := []IngestBlob{treeBlob(t, tn)}
	for l := 0; l < levels; l++ {
		below := out[len(out)-1].ID
		var nodes []tree.Node
		for i := 0; i < width; i++ {
			nodes = append(nodes, tree.Node{Name: fmt.Sprintf("d%d", i), Type: tree.Dir, Mode: 0o755, Subtree: below})
		}
		out = append(out, treeBlob(t, tn, nodes...))
	}
	return out
}

// chainTrees builds a chain of depth folders, each one folder named by
// name(level) holding the next (the last is empty). The last blob is the
// root.
func chainTrees(t *testing.T, tn *Tenant, depth int, name func(int) string) []IngestBlob {
	t.Helper()
	out := []IngestBlob{treeBlob(t, tn)}
	for l := depth - 1; l >= 0; l-- {
		out = append(out, treeBlob(t, tn, tree.Node{Name: name(l), Type: tree.Dir, Mode: 0o755, Subtree: out[len(out)-1].ID}))
	}
	return out
}

// ingestTrees uploads blobs in one session and commits a snapshot of the
// last one; it returns the commit's error and, when commit is false, a
// snapshot recorded past the commit's checks (as a repository written by
// an earlier version may hold one).
func ingestTrees(t *testing.T, tn *Tenant, blobs []IngestBlob, commit bool) (*Snapshot, error) {
	t.Helper()
	ctx := context.Background()
	root := blobs[len(blobs)-1].ID
	in, err := tn.BeginIngest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for len(blobs) > 0 {
		n := min(len(blobs), 64)
		if err := in.Put(ctx, blobs[:n]); err != nil {
			in.Abort(ctx, err)
			return nil, err
		}
		blobs = blobs[n:]
	}
	desc := &Snapshot{Time: time.Now(), Host: "h", Paths: []string{"/x"}, Tree: hex.EncodeToString(root[:])}
	if commit {
		return in.Commit(ctx, desc)
	}
	if err := in.flush(ctx, &in.data); err != nil {
		t.Fatal(err)
	}
	if err := in.flush(ctx, &in.trees); err != nil {
		t.Fatal(err)
	}
	s := &Snapshot{Time: desc.Time, Host: "h", Paths: desc.Paths, Tree: desc.Tree, Program: ProgramVersion}
	if _, err := tn.commitAudited(ctx, s, nil, ""); err != nil {
		t.Fatal(err)
	}
	in.end()
	return s, nil
}

// TestTreeLimitsCommit: a commit measures the tree by distinct trees and
// refuses one over a limit, recording nothing: 2^40 paths from 41 small
// trees, a chain deeper than MaxTreeDepth, a path longer than MaxPathLen; a
// name over MaxNameLen is refused by Put. A tree at the limits commits.
// On the code before the limits the DAG was recorded (and listing it never
// ended) and the 400-deep chain of 64 KiB names ran out of memory.
func TestTreeLimitsCommit(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "a")
	cases := []struct {
		name  string
		blobs []IngestBlob
		want  string // "" commits
	}{
		{"dag-2^40", dagTrees(t, tn, 40, 2), "entries counted per path"},
		{"too-deep", chainTrees(t, tn, MaxTreeDepth+1, func(int) string { return "d" }), "folder levels deep"},
		{"long-path", chainTrees(t, tn, 400, func(l int) string { return strings.Repeat(string(rune('a'+l%26)), 4000) }), "path longer than"},
		{"at-depth-limit", chainTrees(t, tn, MaxTreeDepth, func(l int) string { return fmt.Sprint(l % 10) }), ""},
		{"dag-2^20", dagTrees(t, tn, 20, 2), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, _ := tn.Snapshots(ctx)
			start := time.Now()
			s, err := ingestTrees(t, tn, c.blobs, true)
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("commit took %v", d)
			}
			after, _ := tn.Snapshots(ctx)
			if c.want == "" {
				if err != nil {
					t.Fatalf("commit: %v", err)
				}
				if len(after) != len(before)+1 || s == nil {
					t.Fatalf("%d snapshots after, %d before", len(after), len(before))
				}
				return
			}
			if !errors.Is(err, ErrTreeLimit) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("commit: %v, want ErrTreeLimit and ErrInvalid saying %q", err, c.want)
			}
			if len(after) != len(before) {
				t.Fatalf("a refused commit recorded a snapshot")
			}
		})
	}
	t.Run("name-64KiB", func(t *testing.T) {
		blobs := chainTrees(t, tn, 3, func(int) string { return strings.Repeat("n", 64<<10) })
		_, err := ingestTrees(t, tn, blobs, true)
		if !errors.Is(err, ErrTreeLimit) || !strings.Contains(err.Error(), "name of 65536 bytes") {
			t.Fatalf("put: %v", err)
		}
	})
}

// TestTreeLimitsDeepChainMemory: the commit of a 400-deep chain of folders
// with 4000-byte names (refused: its paths are 1.6 MB) reads each tree
// once and keeps no paths: the heap stays far below what paths of
// depth² × name length would need (320 MB).
func TestTreeLimitsDeepChainMemory(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "a")
	blobs := chainTrees(t, tn, 400, func(l int) string { return fmt.Sprintf("%04d", l) + strings.Repeat("x", 3996) })
	in, err := tn.BeginIngest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Abort(ctx, nil)
	if err := in.Put(ctx, blobs); err != nil {
		t.Fatal(err)
	}
	if err := in.flush(ctx, &in.trees); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	err = tn.reachable(ctx, blobs[len(blobs)-1].ID)
	runtime.ReadMemStats(&m1)
	if !errors.Is(err, ErrTreeLimit) {
		t.Fatalf("reachable: %v", err)
	}
	if grew := m1.TotalAlloc - m0.TotalAlloc; grew > 64<<20 {
		t.Fatalf("the commit's walk allocated %d MB", grew>>20)
	}
}

// TestTreeLimitsWalk: a snapshot recorded past the commit's checks (as an
// earlier version could) whose 41 trees describe 2^40 paths: ls, restore,
// dump and the remote export stop within seconds with one sentence
// wrapping ErrTreeLimit, after at most the walk's check threshold of
// entries. A 2^12-path DAG (a legitimately repeated subtree) lists whole.
func TestTreeLimitsWalk(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "a")
	bad, err := ingestTrees(t, tn, dagTrees(t, tn, 40, 2), false)
	if err != nil {
		t.Fatal(err)
	}
	small, err := ingestTrees(t, tn, dagTrees(t, tn, 12, 2), true)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, entries int, err error, start time.Time) {
		t.Helper()
		if !errors.Is(err, ErrTreeLimit) || !strings.Contains(err.Error(), "entries counted per path") {
			t.Fatalf("%s: %v after %d entries", what, err, entries)
		}
		if strings.Count(err.Error(), ";") > 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: not one sentence: %v", what, err)
		}
		if entries > walkCheckAfter {
			t.Errorf("%s: %d entries before stopping", what, entries)
		}
		t.Logf("%s: %v", what, time.Since(start))
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("%s took %v", what, d)
		}
	}
	start, n := time.Now(), 0
	err = tn.List(ctx, bad, "/", func(Entry) error { n++; return nil })
	check("ls /", n, err, start)
	start, n = time.Now(), 0
	err = tn.List(ctx, bad, "/d0/d1", func(Entry) error { n++; return nil })
	check("ls /d0/d1", n, err, start)
	start = time.Now()
	st, err := tn.Restore(ctx, bad, filepath.Join(t.TempDir(), "r"), RestoreOptions{})
	n = 0
	if st != nil {
		n = int(st.Dirs + st.Files)
	}
	check("restore", n, err, start)
	if n > restoreCheckAfter {
		t.Errorf("restore made %d files and folders before stopping", n)
	}
	// Dump finds one path: a deep request is refused by its length, not
	// walked.
	if err := tn.Dump(ctx, bad, strings.Repeat("/d0", MaxTreeDepth+1), io.Discard); !errors.Is(err, ErrPathNotFound) {
		t.Fatalf("dump of a path deeper than the limit: %v", err)
	}
	n = 0
	if err := tn.List(ctx, small, "/", func(Entry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if want := 1<<13 - 2; n != want {
		t.Fatalf("listed %d entries of the 2^12 DAG, want %d", n, want)
	}
}

// TestTreeShapeCounts: treeShape's counts on small trees, checked against
// a plain expansion.
func TestTreeShapeCounts(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "a")
	leaf := treeBlob(t, tn, tree.Node{Name: "f", Type: tree.File, Mode: 0o644}, tree.Node{Name: "g", Type: tree.Symlink, Mode: 0o777, LinkTarget: "f"})
	mid := treeBlob(t, tn, tree.Node{Name: "a", Type: tree.Dir, Mode: 0o755, Subtree: leaf.ID}, tree.Node{Name: "bbbb", Type: tree.Dir, Mode: 0o755, Subtree: leaf.ID})
	empty := treeBlob(t, tn)
	root := treeBlob(t, tn, tree.Node{Name: "e", Type: tree.Dir, Mode: 0o755, Subtree: empty.ID}, tree.Node{Name: "m", Type: tree.Dir, Mode: 0o755, Subtree: mid.ID}, tree.Node{Name: "x", Type: tree.File, Mode: 0o644})
	s, err := ingestTrees(t, tn, []IngestBlob{leaf, mid, empty, root}, true)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := parseTreeID(s.Tree)
	sh, err := tn.treeShape(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	// Paths: /e /m /x /m/a /m/bbbb /m/a/f /m/a/g /m/bbbb/f /m/bbbb/g.
	want := treeShape{Nodes: 9, Depth: 3, PathLen: uint64(len("/m/bbbb/f")), Trees: 4}
	if sh != want {
		t.Fatalf("shape %+v, want %+v", sh, want)
	}
	var paths []string
	if err := tn.List(ctx, s, "/", func(en Entry) error { paths = append(paths, en.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(paths, " "); got != "/e /m /m/a /m/a/f /m/a/g /m/bbbb /m/bbbb/f /m/bbbb/g /x" {
		t.Fatalf("listing: %s", got)
	}
}
