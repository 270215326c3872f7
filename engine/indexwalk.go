package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"coffer/engine/tree"
	"coffer/index"
)

// Walks that ask whether the index locates everything a snapshot needs.
// Scrub asks before it removes shards the index does not know (a pack that a
// snapshot needs but the index lost must be kept for coffer index rebuild),
// and the in-step check asks about snapshot records found only on the drives.

// treeMarks remembers the trees a walk found complete, so that a tree
// shared by many folders or snapshots is walked once. A tree is marked only
// after everything below it was found indexed: a tree found incomplete is
// never taken for complete by a later walk.
type treeMarks interface {
	has(id tree.ID) (bool, error)
	mark(id tree.ID) error
}

// maxMemMarks bounds memMarks: past it, trees are no longer remembered
// (a shared tree is then walked again: slower, never wrong).
const maxMemMarks = 1 << 18

// memMarks are treeMarks in memory, for walks of a few snapshots.
type memMarks map[tree.ID]struct{}

func newMemMarks() memMarks { return memMarks{} }

func (m memMarks) has(id tree.ID) (bool, error) {
	_, ok := m[id]
	return ok, nil
}

func (m memMarks) mark(id tree.ID) error {
	if len(m) < maxMemMarks {
		m[id] = struct{}{}
	}
	return nil
}

// scratchMarks are treeMarks in a scratch database (the prune's), for walks
// of every snapshot of a tenant: memory does not grow with the trees.
type scratchMarks struct{ s *pruneScratch }

func (m scratchMarks) has(id tree.ID) (bool, error) { return m.s.has(scratchMarkKey(id)) }
func (m scratchMarks) mark(id tree.ID) error        { return m.s.set(scratchMarkKey(id), nil) }

// treeIndexed walks tree id and every tree below it. It returns "" when
// every tree reads through the index and every content blob is located in
// a pack the index holds, else a sentence saying what is not. The error is
// only ctx's or the index's own. Trees form no cycles (a tree's ID is the
// hash of its content, which holds its subtrees' IDs), so the walk ends.
func (t *Tenant) treeIndexed(ctx context.Context, id tree.ID, marks treeMarks) (string, error) {
	if done, err := marks.has(id); err != nil || done {
		return "", err
	}
	tr, err := t.loadTree(ctx, id)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if IndexDamaged(err) {
			return "", err
		}
		return strings.TrimPrefix(trimPrefixes(err.Error()), "repository damage found: "), nil
	}
	var last index.PackID // the pack of the last content blob found indexed
	for i := range tr.Nodes {
		n := &tr.Nodes[i]
		switch n.Type {
		case tree.Dir:
			if why, err := t.treeIndexed(ctx, n.Subtree, marks); err != nil || why != "" {
				return why, err
			}
		case tree.File:
			for _, c := range n.Content {
				if why, err := t.contentIndexed(c, &last); err != nil || why != "" {
					return why, err
				}
			}
		}
	}
	return "", marks.mark(id)
}

// contentIndexed returns "" when content blob c is located in a pack the
// index holds. last caches the pack found last (a file's blobs are mostly
// in one pack).
func (t *Tenant) contentIndexed(c [32]byte, last *index.PackID) (string, error) {
	tid := index.TenantID(t.id)
	loc, ok, err := t.e.db.Blob(tid, index.BlobID(c))
	if err != nil {
		return "", fmt.Errorf("look up content blob %x: %w", c[:8], err)
	}
	if !ok {
		return fmt.Sprintf("content blob %x is not in the index", c[:8]), nil
	}
	if loc.Pack == *last && *last != (index.PackID{}) {
		return "", nil
	}
	if _, err := t.e.db.Pack(tid, loc.Pack); errors.Is(err, index.ErrNotFound) {
		return fmt.Sprintf("pack %s of content blob %x is not in the index", loc.Pack, c[:8]), nil
	} else if err != nil {
		return "", fmt.Errorf("look up pack %s: %w", loc.Pack, err)
	}
	*last = loc.Pack
	return "", nil
}

// indexedSnapshotsComplete walks every snapshot the index holds for the
// tenant and returns "" when everything they reach is indexed, else a
// sentence naming the first snapshot that needs what the index does not
// locate. Trees are marked in a scratch database, so memory does not grow
// with the trees.
func (t *Tenant) indexedSnapshotsComplete(ctx context.Context) (string, error) {
	s, err := openPruneScratch(t.e.dir)
	if err != nil {
		return "", err
	}
	defer s.close()
	marks := scratchMarks{s}
	var why string
	err = t.e.db.Snapshots(index.TenantID(t.id), func(rec index.SnapshotRec) error {
		w, err := t.snapshotIndexed(ctx, rec, marks)
		if err == nil && w != "" {
			why = fmt.Sprintf("snapshot %x: %s", rec.ID[:4], w)
			return errWalkDone
		}
		return err
	})
	if errors.Is(err, errWalkDone) {
		err = nil
	}
	return why, err
}

// errWalkDone stops a walk over the snapshots once its answer is known.
var errWalkDone = errors.New("engine: walk done")
