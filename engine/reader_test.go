package engine

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/engine/tree"
)

// memReader is a SnapshotReader over trees in memory and no data blobs,
// as a hostile server might answer.
type memReader struct{ trees map[tree.ID]*tree.Tree }

func (m memReader) Tree(_ context.Context, id tree.ID) (*tree.Tree, error) {
	if tr, ok := m.trees[id]; ok {
		return tr, nil
	}
	return nil, fmt.Errorf("%w: tree %x", ErrBlobNotFound, id[:8])
}

func (m memReader) Locate(_ context.Context, ids []tree.ID) ([]BlobPlace, error) {
	return nil, fmt.Errorf("%w: no data", ErrBlobNotFound)
}

func (m memReader) ReadGroup(context.Context, []BlobPlace, func(int, []byte) error) error {
	return errors.New("no data")
}

// TestRestoreFromKeepsTreeLimits: RestoreFrom keeps to the tree limits
// whatever its reader, so a server whose trees repeat a shared subtree
// into 2^40 folders stops a remote restore after a few thousand, with one
// sentence; and a file whose blob the reader does not have is damage.
func TestRestoreFromKeepsTreeLimits(t *testing.T) {
	ctx := context.Background()
	m := memReader{trees: map[tree.ID]*tree.Tree{}}
	var below tree.ID // the empty tree
	m.trees[below] = &tree.Tree{}
	for l := 1; l <= 40; l++ {
		var id tree.ID
		id[0], id[1] = byte(l), 1
		m.trees[id] = &tree.Tree{Nodes: []tree.Node{
			{Name: "a", Type: tree.Dir, Mode: 0o755, Subtree: below},
			{Name: "b", Type: tree.Dir, Mode: 0o755, Subtree: below},
		}}
		below = id
	}
	s := &Snapshot{ID: strings.Repeat("ab", 16), Tree: hex.EncodeToString(below[:])}
	target := filepath.Join(t.TempDir(), "r")
	_, err := RestoreFrom(ctx, m, s, target, RestoreOptions{})
	if !errors.Is(err, ErrTreeLimit) || !strings.Contains(err.Error(), "entries counted per path") {
		t.Fatalf("restore of the 2^40 DAG: %v", err)
	}
	n := 0
	filepath.WalkDir(target, func(string, os.DirEntry, error) error { n++; return nil })
	if n > 4*walkCheckRatio*41 {
		t.Errorf("%d folders made before stopping", n)
	}

	var root tree.ID
	root[0] = 0xf0
	m.trees[root] = &tree.Tree{Nodes: []tree.Node{{Name: "f", Type: tree.File, Mode: 0o644, Size: 3, Content: []tree.ID{{1}}}}}
	s.Tree = hex.EncodeToString(root[:])
	if _, err := RestoreFrom(ctx, m, s, t.TempDir(), RestoreOptions{}); !errors.Is(err, ErrDamage) {
		t.Fatalf("restore of a file whose blob is missing: %v", err)
	}
}
