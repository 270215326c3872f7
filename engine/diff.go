package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"coffer/engine/tree"
)

// Diff classes, as coffer diff prints them.
const (
	DiffAdded    = "+" // in the second snapshot only
	DiffRemoved  = "-" // in the first snapshot only
	DiffModified = "M" // content changed (a file's chunks or size, a link's target, a device number)
	DiffMetadata = "U" // metadata only (mode, owner, times, xattrs); with DiffOptions.Metadata
)

// DiffOptions configure Diff.
type DiffOptions struct {
	// Metadata reports entries whose metadata alone changed (DiffMetadata).
	Metadata bool
}

// DiffChange is one line of a diff.
type DiffChange struct {
	Kind string `json:"kind"` // DiffAdded, DiffRemoved, DiffModified or DiffMetadata
	Path string `json:"path"` // from the snapshot root with a leading "/"; a folder's ends in "/"
	Type string `json:"type"`
}

// DiffStats summarises a diff: entries per class, and the bytes of the
// files added and removed.
type DiffStats struct {
	Added        uint64 `json:"added"`
	Removed      uint64 `json:"removed"`
	Modified     uint64 `json:"modified"`
	Metadata     uint64 `json:"metadata"`
	AddedBytes   uint64 `json:"added_bytes"`
	RemovedBytes uint64 `json:"removed_bytes"`
}

// Diff compares snapshot a with snapshot b through r and calls fn for
// every difference, depth first in name order. Folders with the same tree
// ID are equal and not read; an entry whose type changed is removed and
// added. Everything below an added or removed folder is listed (through
// the walker, within the tree limits). fn runs on the caller's goroutine.
func Diff(ctx context.Context, r SnapshotReader, a, b *Snapshot, o DiffOptions, fn func(DiffChange) error) (*DiffStats, error) {
	ra, err := parseTreeID(a.Tree)
	if err != nil {
		return nil, err
	}
	rb, err := parseTreeID(b.Tree)
	if err != nil {
		return nil, err
	}
	d := &differ{r: r, a: a, b: b, o: o, fn: fn, st: &DiffStats{}}
	if err := d.trees(ctx, ra, rb, "", 0); err != nil {
		return d.st, fmt.Errorf("diff %s %s: %w", a.ID[:8], b.ID[:8], err)
	}
	return d.st, nil
}

type differ struct {
	r      SnapshotReader
	a, b   *Snapshot
	o      DiffOptions
	fn     func(DiffChange) error
	st     *DiffStats
	visits uint64
}

func (d *differ) emit(kind, rel string, n *tree.Node) error {
	p := "/" + rel
	if n.Type == tree.Dir {
		p += "/"
	}
	switch kind {
	case DiffAdded:
		d.st.Added++
		if n.Type == tree.File {
			d.st.AddedBytes += n.Size
		}
	case DiffRemoved:
		d.st.Removed++
		if n.Type == tree.File {
			d.st.RemovedBytes += n.Size
		}
	case DiffModified:
		d.st.Modified++
	case DiffMetadata:
		d.st.Metadata++
	}
	return d.fn(DiffChange{Kind: kind, Path: p, Type: n.Type.String()})
}

// trees compares the folders ia (of a) and ib (of b) at rel.
func (d *differ) trees(ctx context.Context, ia, ib tree.ID, rel string, depth int) error {
	if ia == ib {
		return nil
	}
	if depth >= MaxTreeDepth {
		return treeLimitf("more than %d folder levels", MaxTreeDepth)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ta, err := d.r.Tree(ctx, ia)
	if err != nil {
		return err
	}
	tb, err := d.r.Tree(ctx, ib)
	if err != nil {
		return err
	}
	i, j := 0, 0
	for i < len(ta.Nodes) || j < len(tb.Nodes) {
		// A DAG repeats shared subtrees into more paths than any machine
		// can list: the pairs of entries compared are bounded as a walk's.
		if d.visits++; d.visits > MaxSnapshotNodes {
			return treeLimitf("the snapshots differ in more than %d entries counted per path; the diff stopped", MaxSnapshotNodes)
		}
		var c int
		switch {
		case i == len(ta.Nodes):
			c = 1
		case j == len(tb.Nodes):
			c = -1
		default:
			c = strings.Compare(ta.Nodes[i].Name, tb.Nodes[j].Name)
		}
		switch {
		case c < 0:
			if err := d.whole(ctx, d.a, DiffRemoved, tree.JoinRel(rel, ta.Nodes[i].Name), &ta.Nodes[i]); err != nil {
				return err
			}
			i++
		case c > 0:
			if err := d.whole(ctx, d.b, DiffAdded, tree.JoinRel(rel, tb.Nodes[j].Name), &tb.Nodes[j]); err != nil {
				return err
			}
			j++
		default:
			if err := d.nodes(ctx, tree.JoinRel(rel, ta.Nodes[i].Name), &ta.Nodes[i], &tb.Nodes[j], depth); err != nil {
				return err
			}
			i++
			j++
		}
	}
	return nil
}

// nodes compares two entries of the same name.
func (d *differ) nodes(ctx context.Context, rel string, x, y *tree.Node, depth int) error {
	if x.Type != y.Type {
		if err := d.whole(ctx, d.a, DiffRemoved, rel, x); err != nil {
			return err
		}
		return d.whole(ctx, d.b, DiffAdded, rel, y)
	}
	if !sameContent(x, y) {
		if err := d.emit(DiffModified, rel, y); err != nil {
			return err
		}
	} else if d.o.Metadata && !sameMetadata(x, y) {
		if err := d.emit(DiffMetadata, rel, y); err != nil {
			return err
		}
	}
	if x.Type == tree.Dir {
		return d.trees(ctx, x.Subtree, y.Subtree, rel, depth+1)
	}
	return nil
}

// whole reports n at rel, and for a folder everything below it, as kind.
func (d *differ) whole(ctx context.Context, s *Snapshot, kind, rel string, n *tree.Node) error {
	if err := d.emit(kind, rel, n); err != nil {
		return err
	}
	if n.Type != tree.Dir {
		return nil
	}
	w := &treeWalker{r: d.r, s: s, visit: func(r string, c *tree.Node) (bool, error) {
		return true, d.emit(kind, r, c)
	}}
	return w.walk(ctx, n.Subtree, rel)
}

// sameContent compares what an entry holds (not its metadata); folders
// are compared by their entries, below.
func sameContent(x, y *tree.Node) bool {
	switch x.Type {
	case tree.File:
		return x.Size == y.Size && slices.Equal(x.Content, y.Content) && slices.Equal(x.Holes, y.Holes)
	case tree.Symlink, tree.Hardlink:
		return x.LinkTarget == y.LinkTarget
	case tree.CharDev, tree.BlockDev:
		return x.Rdev == y.Rdev
	}
	return true
}

// sameMetadata compares what a restore applies to an entry besides its
// content: mode, owner, modification time and xattrs (not the inode,
// link count or change time, which a restore cannot set).
func sameMetadata(x, y *tree.Node) bool {
	return x.Mode == y.Mode && x.UID == y.UID && x.GID == y.GID && x.User == y.User && x.Group == y.Group &&
		x.MTime == y.MTime && slices.EqualFunc(x.Xattrs, y.Xattrs, func(a, b tree.Xattr) bool {
		return a.Name == b.Name && string(a.Value) == string(b.Value)
	})
}
