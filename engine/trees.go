package engine

import (
	"context"
	"fmt"
	"math"

	"coffer/engine/tree"
	"coffer/index"
)

// Limits on a snapshot's trees (docs/design.md §6, "Limits"). A tree DAG may
// share subtrees, so a few kilobytes of trees can describe more paths than
// any machine can list: every walk counts entries per path and every commit
// from a client checks the whole shape, counting distinct trees only.
const (
	// MaxTreeDepth is the most folder levels below a snapshot's root.
	MaxTreeDepth = 1024
	// MaxNameLen is the longest entry name, in bytes, a client may upload
	// (Linux allows 255; other systems' names in UTF-8 fit too).
	MaxNameLen = 4096
	// MaxPathLen is the longest path below a snapshot's root, in bytes
	// ("/a/b" is 4). Linux's PATH_MAX is 4096.
	MaxPathLen = 16 << 10
	// MaxSnapshotNodes is the most entries of one snapshot, counted per
	// path (a subtree reached by two paths counts twice).
	MaxSnapshotNodes = 1 << 30
)

// Walk bounds. A walk runs the shape check (treeShape) of its root once it
// has produced walkCheckAfter entries and these are many for the distinct
// trees it has read (walkCheckRatio per tree; walkDistinctCap caps the set
// that counts them), so an ordinary listing never pays for it and a DAG
// that repeats a few trees is caught after walkCheckAfter entries.
// walkHeldNodes bounds the nodes of the trees a walk holds at once (the
// folders on the current path), walkCacheNodes those of its cache of
// recently read trees.
const (
	walkCheckAfter  = 1 << 16
	walkCheckRatio  = 256
	walkDistinctCap = 1 << 16
	walkHeldNodes   = 1 << 21
	walkCacheNodes  = 1 << 16
)

func parseTreeID(s string) (tree.ID, error) {
	var id tree.ID
	if err := decodeHexInto(id[:], s); err != nil {
		return id, fmt.Errorf("%w: tree ID %q: %v", ErrCorrupt, s, err)
	}
	return id, nil
}

// loadTree reads and decodes one tree blob.
func (t *Tenant) loadTree(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	b, err := t.readBlob(ctx, TreeBlob, id)
	if err != nil {
		return nil, err
	}
	tr, err := tree.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%w: tree %x: %v", ErrDamage, id[:8], err)
	}
	return tr, nil
}

// rootTree loads a snapshot's root tree.
func (t *Tenant) rootTree(ctx context.Context, s *Snapshot) (*tree.Tree, error) {
	id, err := parseTreeID(s.Tree)
	if err != nil {
		return nil, err
	}
	return t.loadTree(ctx, id)
}

// treeLimitf is an error of a tree over one of the limits above.
func treeLimitf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrTreeLimit, fmt.Sprintf(format, args...))
}

// treeShape is the size of the tree below one tree ID, counted per path.
type treeShape struct {
	Nodes   uint64 // entries (saturating at math.MaxUint64)
	Depth   uint64 // folder levels: an entry of the root tree is at level 1
	PathLen uint64 // bytes of the longest path, "/a/b" being 4
	Trees   int    // distinct trees
}

// check returns an error wrapping ErrTreeLimit when s breaks a limit; what
// names the tree in the sentence.
func (s treeShape) check(what string) error {
	switch {
	case s.Depth > MaxTreeDepth:
		return treeLimitf("%s is more than %d folder levels deep", what, MaxTreeDepth)
	case s.PathLen > MaxPathLen:
		return treeLimitf("%s has a path longer than %d bytes", what, MaxPathLen)
	case s.Nodes > MaxSnapshotNodes:
		return treeLimitf("%s has more than %d entries counted per path (its folders repeat shared subtrees)", what, MaxSnapshotNodes)
	}
	return nil
}

func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

// shapeEdge is a folder entry of a tree in treeShape's graph: the index of
// its subtree and the length of its name.
type shapeEdge struct {
	kid     int32
	nameLen int32
}

// shapeTree is one distinct tree in treeShape's graph.
type shapeTree struct {
	base     uint64 // entries of the tree itself
	leafPath uint64 // longest "/name" of its entries
	e0, e1   int32  // its folder entries: edges[e0:e1]
	parent   int32  // the tree through which it was found (-1 for the root); for error messages
}

// treeShape measures the tree below root without expanding it into paths:
// it reads every distinct tree once, keeping a compact graph of them
// (memory grows with the distinct trees and their folder entries, never
// with depth times names, nor with the paths a shared subtree repeats),
// then counts bottom-up without recursion. With commit set it also checks
// that every tree and content blob it reaches is indexed for the tenant
// with the right type (an upload's commit), and refuses with ErrInvalid
// otherwise. Errors of the limits are the caller's: see treeShape.check.
func (t *Tenant) treeShape(ctx context.Context, root tree.ID, commit bool) (treeShape, error) {
	var indexed func(id tree.ID, typ BlobType) (bool, error)
	if commit {
		indexed = func(id tree.ID, typ BlobType) (bool, error) {
			loc, ok, err := t.e.db.Blob(t.id, index.BlobID(id))
			if err != nil {
				return false, fmt.Errorf("look up blob %x: %w", id[:8], err)
			}
			return ok && BlobType(loc.Type) == typ, nil
		}
	}
	return shapeOf(ctx, t.Reader(), root, indexed)
}

// shapeOf is treeShape over the trees of r; indexed, if not nil, tells
// whether a blob is indexed for the tenant with type typ (a commit's
// check).
func shapeOf(ctx context.Context, r SnapshotReader, root tree.ID, indexed func(id tree.ID, typ BlobType) (bool, error)) (treeShape, error) {
	commit := indexed != nil
	idx := map[tree.ID]int32{root: 0}
	ids := []tree.ID{root}
	trees := []shapeTree{{parent: -1}}
	var edges []shapeEdge
	for i := 0; i < len(ids); i++ {
		if err := ctx.Err(); err != nil {
			return treeShape{}, err
		}
		id := ids[i]
		if commit {
			ok, err := indexed(id, TreeBlob)
			if err != nil {
				return treeShape{}, err
			}
			if !ok {
				return treeShape{}, invalidf("the tree of %s was never uploaded; nothing was recorded", shapePath(ctx, r, ids, trees, int32(i), ""))
			}
		}
		tr, err := r.Tree(ctx, id)
		if err != nil {
			return treeShape{}, err
		}
		st := &trees[i]
		st.base = uint64(len(tr.Nodes))
		st.e0 = int32(len(edges))
		for j := range tr.Nodes {
			n := &tr.Nodes[j]
			st.leafPath = max(st.leafPath, 1+uint64(len(n.Name)))
			if commit {
				for _, c := range n.Content {
					ok, err := indexed(c, DataBlob)
					if err != nil {
						return treeShape{}, err
					}
					if !ok {
						return treeShape{}, invalidf("content of %s was never uploaded; nothing was recorded", shapePath(ctx, r, ids, trees, int32(i), n.Name))
					}
				}
			}
			if n.Type != tree.Dir {
				continue
			}
			k, ok := idx[n.Subtree]
			if !ok {
				if len(ids) >= math.MaxInt32 {
					return treeShape{}, treeLimitf("the tree has more than %d distinct folders", math.MaxInt32)
				}
				k = int32(len(ids))
				idx[n.Subtree] = k
				ids = append(ids, n.Subtree)
				trees = append(trees, shapeTree{parent: int32(i)})
				st = &trees[i] // trees may have moved
			}
			edges = append(edges, shapeEdge{kid: k, nameLen: int32(min(len(n.Name), math.MaxInt32))})
		}
		st.e1 = int32(len(edges))
	}
	idx = nil

	// Bottom-up, depth first with an explicit stack of (tree, next edge).
	const (
		unseen = iota
		open
		done
	)
	state := make([]uint8, len(trees))
	nodes := make([]uint64, len(trees))
	depth := make([]uint64, len(trees))
	plen := make([]uint64, len(trees))
	type frame struct{ i, e int32 }
	stack := []frame{{0, trees[0].e0}}
	state[0] = open
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		st := &trees[top.i]
		if top.e < st.e1 {
			k := edges[top.e].kid
			switch state[k] {
			case unseen:
				state[k] = open
				stack = append(stack, frame{k, trees[k].e0})
				continue
			case open:
				// Content IDs make a cycle impossible short of a hash
				// collision: the trees are damaged.
				return treeShape{}, fmt.Errorf("%w: tree %x contains itself", ErrDamage, ids[k][:8])
			}
			top.e++
			continue
		}
		i := top.i
		n, d, p := st.base, uint64(0), st.leafPath
		if n > 0 {
			d = 1
		}
		for _, e := range edges[st.e0:st.e1] {
			n = satAdd(n, nodes[e.kid])
			d = max(d, satAdd(1, depth[e.kid]))
			p = max(p, satAdd(1+uint64(e.nameLen), plen[e.kid]))
		}
		nodes[i], depth[i], plen[i] = n, d, p
		state[i] = done
		stack = stack[:len(stack)-1]
	}
	return treeShape{Nodes: nodes[0], Depth: depth[0], PathLen: plen[0], Trees: len(trees)}, nil
}

// shapePath names tree i of treeShape's graph for an error message, by its
// first path from the root (each parent read again: this runs once, for
// the message), followed by name if not empty; it is shortened to its
// last 200 bytes.
func shapePath(ctx context.Context, r SnapshotReader, ids []tree.ID, trees []shapeTree, i int32, name string) string {
	var parts []string
	if name != "" {
		parts = append(parts, name)
	}
	for p := trees[i].parent; p >= 0; i, p = p, trees[p].parent {
		tr, err := r.Tree(ctx, ids[p])
		if err != nil {
			parts = append(parts, "…")
			break
		}
		found := "?"
		for j := range tr.Nodes {
			if tr.Nodes[j].Type == tree.Dir && tr.Nodes[j].Subtree == ids[i] {
				found = tr.Nodes[j].Name
				break
			}
		}
		parts = append(parts, found)
		if len(parts) > MaxTreeDepth {
			break
		}
	}
	var b []byte
	for j := len(parts) - 1; j >= 0; j-- {
		b = append(b, '/')
		b = append(b, parts[j]...)
	}
	if len(b) == 0 {
		b = []byte("/")
	}
	return fmt.Sprintf("%q", shortPath(string(b), 200))
}

// shortPath keeps the last n bytes of p, marking the cut.
func shortPath(p string, n int) string {
	if len(p) <= n {
		return p
	}
	return "…" + p[len(p)-n:]
}

// treeWalker walks a snapshot's tree depth first, folders before their
// entries, without recursion and with one path buffer, within the limits
// above: at most MaxTreeDepth levels, paths of at most MaxPathLen bytes,
// walkHeldNodes nodes held on the current path, and, once a walk has
// produced many entries for the distinct trees it read, the shape check of
// its root (treeShape): a DAG over MaxSnapshotNodes entries stops there.
// Errors of the limits wrap ErrTreeLimit and say so in one sentence.
type treeWalker struct {
	r SnapshotReader
	s *Snapshot

	// visit is called for every entry, with its "/"-separated path from
	// the snapshot root (no leading "/") and its node, valid until the walk
	// returns. It returns whether to walk into a folder.
	visit func(rel string, n *tree.Node) (bool, error)

	// checkAfter is the entries after which the shape check may run (0:
	// walkCheckAfter). A restore, whose entries cost a file each, checks
	// sooner.
	checkAfter uint64

	entries  uint64
	budget   uint64 // 0 until the shape check ran
	distinct map[tree.ID]struct{}
	cache    map[tree.ID]*tree.Tree
	cached   int // nodes in cache
}

type walkFrame struct {
	tr     *tree.Tree
	next   int
	relLen int
}

// walk visits the entries below the tree rootID, which is the folder at
// rel (a path below the snapshot root, "" for the root).
func (w *treeWalker) walk(ctx context.Context, rootID tree.ID, rel string) error {
	w.distinct = map[tree.ID]struct{}{}
	depth0 := 0
	if rel != "" {
		depth0 = 1
		for i := 0; i < len(rel); i++ {
			if rel[i] == '/' {
				depth0++
			}
		}
	}
	root, err := w.load(ctx, rootID)
	if err != nil {
		return err
	}
	path := append(make([]byte, 0, 256), rel...)
	stack := []walkFrame{{tr: root, relLen: len(rel)}}
	held := len(root.Nodes)
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if top.next == len(top.tr.Nodes) {
			held -= len(top.tr.Nodes)
			stack = stack[:len(stack)-1]
			continue
		}
		n := &top.tr.Nodes[top.next]
		top.next++
		path = path[:top.relLen]
		if len(path) > 0 {
			path = append(path, '/')
		}
		path = append(path, n.Name...)
		if len(path)+1 > MaxPathLen {
			return treeLimitf("snapshot %s has a path longer than %d bytes; the walk stopped there", w.s.ID[:8], MaxPathLen)
		}
		if err := w.count(ctx, rootID, rel); err != nil {
			return err
		}
		into, err := w.visit(string(path), n)
		if err != nil {
			return err
		}
		if !into || n.Type != tree.Dir {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		sub, err := w.load(ctx, n.Subtree)
		if err != nil {
			return err
		}
		if len(sub.Nodes) == 0 {
			continue
		}
		if depth0+len(stack) >= MaxTreeDepth {
			return treeLimitf("snapshot %s is more than %d folder levels deep; the walk stopped there", w.s.ID[:8], MaxTreeDepth)
		}
		held += len(sub.Nodes)
		if held > walkHeldNodes {
			return treeLimitf("the folders on one path of snapshot %s hold more than %d entries; the walk stopped there", w.s.ID[:8], walkHeldNodes)
		}
		stack = append(stack, walkFrame{tr: sub, relLen: len(path)})
	}
	return nil
}

// load reads a tree through a small cache of decoded trees (a folder
// repeated in a snapshot is read once while it stays in the cache; the
// cache is emptied when it would hold more than walkCacheNodes nodes).
func (w *treeWalker) load(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	if w.distinct != nil && len(w.distinct) < walkDistinctCap {
		w.distinct[id] = struct{}{}
	}
	if tr, ok := w.cache[id]; ok {
		return tr, nil
	}
	tr, err := w.r.Tree(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(tr.Nodes) <= walkCacheNodes/4 {
		if w.cache == nil || w.cached+len(tr.Nodes) > walkCacheNodes {
			w.cache, w.cached = map[tree.ID]*tree.Tree{}, 0
		}
		w.cache[id] = tr
		w.cached += len(tr.Nodes)
	}
	return tr, nil
}

// count charges one entry to the walk's budget, running the shape check of
// the walk's root when the entries grow large for the trees read.
func (w *treeWalker) count(ctx context.Context, rootID tree.ID, rel string) error {
	w.entries++
	if w.entries%1024 == 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if w.budget != 0 {
		if w.entries > w.budget {
			return treeLimitf("snapshot %s has more entries below /%s than its trees count; the walk stopped", w.s.ID[:8], shortPath(rel, 200))
		}
		return nil
	}
	after := w.checkAfter
	if after == 0 {
		after = walkCheckAfter
	}
	if w.entries < after || w.entries < walkCheckRatio*uint64(len(w.distinct)) {
		return nil
	}
	sh, err := shapeOf(ctx, w.r, rootID, nil)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("snapshot %s below /%s", w.s.ID[:8], shortPath(rel, 200))
	if rel == "" {
		what = "snapshot " + w.s.ID[:8]
	}
	if err := sh.check(what); err != nil {
		return fmt.Errorf("%w; the walk stopped after %d entries", err, w.entries-1)
	}
	w.budget, w.distinct = max(sh.Nodes, 1), nil
	return nil
}
