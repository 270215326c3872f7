package engine

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"coffer/engine/tree"
)

// This file holds the read-only browsing of snapshots through a
// SnapshotReader (local or remote): find and stats. Both read each
// distinct tree once per call, whatever the number of snapshots and paths
// that share it (trees are content-addressed), and expand paths only for
// what they print.

// SelectSnapshots resolves references (full IDs, unique prefixes of at
// least 8 hex digits, "latest") against all (oldest first), without
// duplicates, in the order given. No reference gives all of them.
func SelectSnapshots(all []*Snapshot, refs []string) ([]*Snapshot, error) {
	if len(refs) == 0 {
		return all, nil
	}
	return resolveSnapshots(all, refs)
}

// Pattern is a glob (path.Match syntax) on an entry's name or, when it
// starts with "/", on its full path from the snapshot root ("/srv/*.log").
// It is the pattern of find --path and of rewrite --exclude.
type Pattern struct {
	Glob string
	Full bool // match the full path (a leading "/"), not the name
}

// ParsePattern checks a glob and says what it matches: a pattern that
// starts with "/" (or with full set) matches full paths, others names. A
// malformed glob, or a name glob with a "/", is an error wrapping
// ErrInvalid.
func ParsePattern(glob string, full bool) (Pattern, error) {
	if glob == "" {
		return Pattern{}, invalidf("an empty pattern matches nothing")
	}
	if _, err := path.Match(glob, ""); err != nil {
		return Pattern{}, invalidf("pattern %q: %v", glob, err)
	}
	if strings.HasPrefix(glob, "/") {
		full = true
	}
	if !full && strings.Contains(glob, "/") {
		return Pattern{}, invalidf("pattern %q holds a \"/\" but names never do: start it with \"/\" to match full paths from the snapshot root", glob)
	}
	if full && !strings.HasPrefix(glob, "/") {
		glob = "/" + glob
	}
	return Pattern{Glob: path.Clean(glob), Full: full}, nil
}

// Match reports whether the entry named name at full path p ("/a/b")
// matches.
func (pt Pattern) Match(name, p string) bool {
	s := name
	if pt.Full {
		s = p
	}
	ok, _ := path.Match(pt.Glob, s)
	return ok
}

func matchAny(pats []Pattern, name, p string) bool {
	for _, pt := range pats {
		if pt.Match(name, p) {
			return true
		}
	}
	return false
}

func anyFull(pats []Pattern) bool {
	for _, pt := range pats {
		if pt.Full {
			return true
		}
	}
	return false
}

// FindOptions configure Find.
type FindOptions struct {
	// Patterns: an entry matches when any matches (see Pattern).
	Patterns []Pattern
	// Oldest and Newest, when not zero, bound the entries' modification
	// times (inclusive).
	Oldest, Newest time.Time
}

// FindMatch is one entry Find found.
type FindMatch struct {
	Snapshot string    `json:"snapshot"`
	Path     string    `json:"path"` // from the snapshot root, with a leading "/"
	Type     string    `json:"type"`
	Size     uint64    `json:"size"`
	MTime    time.Time `json:"mtime"`
}

// findKey names the matches below one tree: by tree alone when only names
// are matched (the result does not depend on where the tree is), by tree
// and path when a pattern matches full paths.
type findKey struct {
	id tree.ID
	at string
}

// findTree is what matches in one tree, in its order: an entry matched
// (hit) and/or a folder below which something matched (kid).
type findTree struct {
	items []findItem
}

type findItem struct {
	name string
	hit  bool
	typ  tree.Type
	size uint64
	mt   int64
	kid  *findTree // nil: nothing below matches
}

// Find calls fn for every entry of the snapshots (in the order given,
// each depth first, folders before their entries) that matches o. It
// reads every distinct tree once for all snapshots: what matches below a
// tree is kept by tree ID (and path, for full-path patterns), so the 100
// snapshots of one folder cost little more than one. Memory grows with the
// distinct trees and the matches, not with the snapshots. fn runs on the
// caller's goroutine.
func Find(ctx context.Context, r SnapshotReader, snaps []*Snapshot, o FindOptions, fn func(FindMatch) error) error {
	if len(o.Patterns) == 0 {
		return invalidf("find needs at least one pattern")
	}
	f := &finder{r: r, o: o, full: anyFull(o.Patterns), memo: map[findKey]*findTree{}}
	for _, s := range snaps {
		root, err := parseTreeID(s.Tree)
		if err != nil {
			return err
		}
		ft, err := f.tree(ctx, root, "", 0)
		if err != nil {
			return fmt.Errorf("find in snapshot %s: %w", s.ID[:8], err)
		}
		emitted := uint64(0)
		if err := f.emit(ctx, s, ft, "", &emitted, fn); err != nil {
			return err
		}
	}
	return nil
}

type finder struct {
	r    SnapshotReader
	o    FindOptions
	full bool
	memo map[findKey]*findTree // nil value: nothing matches below
}

func (f *finder) match(n *tree.Node, p string) bool {
	if !matchAny(f.o.Patterns, n.Name, p) {
		return false
	}
	if !f.o.Oldest.IsZero() && n.MTime < f.o.Oldest.UnixNano() {
		return false
	}
	if !f.o.Newest.IsZero() && n.MTime > f.o.Newest.UnixNano() {
		return false
	}
	return true
}

// tree returns what matches below tree id, the folder at path at.
func (f *finder) tree(ctx context.Context, id tree.ID, at string, depth int) (*findTree, error) {
	key := findKey{id: id}
	if f.full {
		key.at = at
	}
	if ft, ok := f.memo[key]; ok {
		return ft, nil
	}
	if depth >= MaxTreeDepth {
		return nil, treeLimitf("more than %d folder levels below /", MaxTreeDepth)
	}
	if len(at) > MaxPathLen {
		return nil, treeLimitf("a path longer than %d bytes", MaxPathLen)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tr, err := f.r.Tree(ctx, id)
	if err != nil {
		return nil, err
	}
	var ft *findTree
	for i := range tr.Nodes {
		n := &tr.Nodes[i]
		p := at + "/" + n.Name
		it := findItem{name: n.Name}
		if f.match(n, p) {
			it.hit, it.typ, it.size, it.mt = true, n.Type, n.Size, n.MTime
		}
		if n.Type == tree.Dir {
			if it.kid, err = f.tree(ctx, n.Subtree, p, depth+1); err != nil {
				return nil, err
			}
		}
		if it.hit || it.kid != nil {
			if ft == nil {
				ft = &findTree{}
			}
			ft.items = append(ft.items, it)
		}
	}
	f.memo[key] = ft
	return ft, nil
}

// emit expands ft below path at into matches of s; emitted counts them
// against MaxSnapshotNodes (a DAG that repeats a matching subtree cannot
// print without end).
func (f *finder) emit(ctx context.Context, s *Snapshot, ft *findTree, at string, emitted *uint64, fn func(FindMatch) error) error {
	if ft == nil {
		return nil
	}
	for _, it := range ft.items {
		p := at + "/" + it.name
		if it.hit {
			if *emitted++; *emitted > MaxSnapshotNodes {
				return treeLimitf("snapshot %s has more than %d matches counted per path; find stopped", s.ID[:8], MaxSnapshotNodes)
			}
			if *emitted%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			m := FindMatch{Snapshot: s.ID, Path: p, Type: it.typ.String(), Size: it.size, MTime: time.Unix(0, it.mt)}
			if err := fn(m); err != nil {
				return err
			}
		}
		if err := f.emit(ctx, s, it.kid, p, emitted, fn); err != nil {
			return err
		}
	}
	return nil
}

// Stats modes: what Stats counts.
const (
	StatsRestoreSize = "restore-size" // entries and the bytes a restore writes
	StatsRawData     = "raw-data"     // the distinct data blobs the snapshots use
)

// SnapshotsStats is what Stats counted over a set of snapshots.
type SnapshotsStats struct {
	Snapshots int    `json:"snapshots"`
	Mode      string `json:"mode,omitempty"` // "" for both modes
	// restore-size: entries counted per path in every snapshot (as many
	// restores of them would write), and the file bytes (a hard link's
	// bytes are its first name's, counted once).
	Files        uint64 `json:"files"`
	Dirs         uint64 `json:"dirs"`
	Other        uint64 `json:"other"`
	RestoreBytes uint64 `json:"restore_bytes"`
	// raw-data: the distinct data blobs the snapshots reference, their
	// plaintext and their sealed (stored, before parity) bytes, and the
	// dedup ratio RestoreBytes / UniqueBytes (0 when there are none).
	Blobs       uint64  `json:"unique_blobs"`
	UniqueBytes uint64  `json:"unique_bytes"`
	StoredBytes uint64  `json:"stored_bytes"`
	DedupRatio  float64 `json:"dedup_ratio"`
}

type treeCounts struct{ files, dirs, other, bytes uint64 }

// Stats counts snapshots through r (mode StatsRestoreSize, StatsRawData,
// or "" for both). Every distinct tree is read once: a subtree's counts
// are kept by its ID, and its blobs are collected once. raw-data holds
// the set of distinct blob IDs (32 bytes each) and asks r where they lie
// (Locate), MaxReadGroup at a time; nothing is read of the data itself.
func Stats(ctx context.Context, r SnapshotReader, snaps []*Snapshot, mode string) (*SnapshotsStats, error) {
	if mode != "" && mode != StatsRestoreSize && mode != StatsRawData {
		return nil, invalidf("stats mode %q: use %s or %s", mode, StatsRestoreSize, StatsRawData)
	}
	st := &SnapshotsStats{Snapshots: len(snaps), Mode: mode}
	c := &counter{r: r, memo: map[tree.ID]treeCounts{}, blobs: map[tree.ID]struct{}{}}
	for _, s := range snaps {
		root, err := parseTreeID(s.Tree)
		if err != nil {
			return nil, err
		}
		tc, err := c.count(ctx, root, 0)
		if err != nil {
			return nil, fmt.Errorf("stats of snapshot %s: %w", s.ID[:8], err)
		}
		st.Files = satAdd(st.Files, tc.files)
		st.Dirs = satAdd(st.Dirs, tc.dirs)
		st.Other = satAdd(st.Other, tc.other)
		st.RestoreBytes = satAdd(st.RestoreBytes, tc.bytes)
	}
	if mode == StatsRestoreSize {
		return st, nil
	}
	ids := make([]tree.ID, 0, len(c.blobs))
	for id := range c.blobs {
		ids = append(ids, id)
	}
	for len(ids) > 0 {
		k := min(len(ids), MaxReadGroup)
		places, err := r.Locate(ctx, ids[:k])
		if err != nil {
			return nil, errNotData("stats", err)
		}
		for _, p := range places {
			st.Blobs++
			st.UniqueBytes += uint64(p.Size)
			st.StoredBytes += uint64(p.Length)
		}
		ids = ids[k:]
	}
	if st.UniqueBytes > 0 {
		st.DedupRatio = float64(st.RestoreBytes) / float64(st.UniqueBytes)
	}
	if mode == StatsRawData {
		st.Files, st.Dirs, st.Other = 0, 0, 0
	}
	return st, nil
}

type counter struct {
	r     SnapshotReader
	memo  map[tree.ID]treeCounts
	blobs map[tree.ID]struct{}
}

func (c *counter) count(ctx context.Context, id tree.ID, depth int) (treeCounts, error) {
	if tc, ok := c.memo[id]; ok {
		return tc, nil
	}
	if depth >= MaxTreeDepth {
		return treeCounts{}, treeLimitf("more than %d folder levels", MaxTreeDepth)
	}
	if err := ctx.Err(); err != nil {
		return treeCounts{}, err
	}
	tr, err := c.r.Tree(ctx, id)
	if err != nil {
		return treeCounts{}, err
	}
	var tc treeCounts
	for i := range tr.Nodes {
		n := &tr.Nodes[i]
		switch n.Type {
		case tree.File:
			tc.files++
			tc.bytes = satAdd(tc.bytes, n.Size)
			for _, b := range n.Content {
				c.blobs[b] = struct{}{}
			}
		case tree.Hardlink:
			tc.files++
		case tree.Dir:
			tc.dirs++
			sub, err := c.count(ctx, n.Subtree, depth+1)
			if err != nil {
				return treeCounts{}, err
			}
			tc.files = satAdd(tc.files, sub.files)
			tc.dirs = satAdd(tc.dirs, sub.dirs)
			tc.other = satAdd(tc.other, sub.other)
			tc.bytes = satAdd(tc.bytes, sub.bytes)
		default:
			tc.other++
		}
	}
	c.memo[id] = tc
	return tc, nil
}

// StatPath returns the entry at p in snapshot s through r; the root is a
// folder named "/".
func StatPath(ctx context.Context, r SnapshotReader, s *Snapshot, p string) (Entry, error) {
	n, rel, err := lookupIn(ctx, r, s, p)
	if err != nil {
		return Entry{}, err
	}
	if n == nil {
		return Entry{Path: "/", Name: "/", Type: tree.Dir.String(), MTime: s.Time}, nil
	}
	return entry(rel, n), nil
}
