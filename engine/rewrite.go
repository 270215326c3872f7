package engine

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"coffer/engine/tree"
)

// RewriteOptions configure Rewrite.
type RewriteOptions struct {
	// Exclude: an entry (and everything below it) that any pattern
	// matches is left out of the new snapshots (see Pattern).
	Exclude []Pattern
	// Forget forgets each snapshot that was rewritten once its new one is
	// saved (as Forget does: tombstones, then the index).
	Forget bool
	// DryRun counts what would be left out and writes nothing.
	DryRun bool
}

// RewriteItem is one snapshot Rewrite looked at.
type RewriteItem struct {
	ID string `json:"id"`
	// New is the ID of the snapshot written without the excluded entries
	// ("" when nothing matched, or with DryRun).
	New string `json:"new,omitempty"`
	// Removed counts the entries the patterns matched, counted per path
	// (a folder counts once, not with what is below it).
	Removed uint64 `json:"removed"`
	// Forgotten: the snapshot was forgotten (RewriteOptions.Forget).
	Forgotten bool `json:"forgotten,omitempty"`
}

// RewriteReport says what Rewrite did (or, with DryRun, would do).
type RewriteReport struct {
	DryRun    bool          `json:"dry_run"`
	Snapshots []RewriteItem `json:"snapshots"`
	Rewritten int           `json:"rewritten"`
	Unchanged int           `json:"unchanged"`
	Forgotten int           `json:"forgotten"`
	Removed   uint64        `json:"removed"`
}

// Rewrite writes, for each snapshot refs names (every snapshot of the
// tenant when refs is empty) in which o.Exclude matches something, a new
// snapshot without the matching entries: the same time, host, paths, tags,
// user and parent, Original set to the old snapshot's ID, its counts of
// files, folders and bytes recomputed. Only the trees on the way to an
// excluded entry are new; they are written through the tenant's uploader
// (the one a remote backup uses: Ingest.Put checks every tree), and each
// new snapshot is committed as a backup is (audit entry "backup" with
// "rewrite=1" first, then the record). A hard link whose first name is
// left out takes over the content, and the inode's later names link to it.
// With o.Forget each rewritten snapshot is then forgotten; a later prune
// frees the data only the excluded entries used. The whole is audited as
// "rewrite" with counts only (no path, pattern or name: the audit trail
// holds no tenant metadata). Rewrite holds the tenant's lock.
func (t *Tenant) Rewrite(ctx context.Context, refs []string, o RewriteOptions) (rep *RewriteReport, err error) {
	if len(o.Exclude) == 0 {
		return nil, invalidf("rewrite needs at least one --exclude pattern")
	}
	unlock := t.e.lockTenant(t.id)
	defer unlock()
	if !o.DryRun {
		defer func() {
			detail := ""
			if rep != nil {
				detail = fmt.Sprintf("rewritten=%d unchanged=%d removed=%d forgotten=%d", rep.Rewritten, rep.Unchanged, rep.Removed, rep.Forgotten)
			}
			err = t.e.audited(ctx, "rewrite", t.id, detail, err)
		}()
	}
	if err := t.requireInStep(ctx); err != nil {
		return nil, err
	}
	all, versions, err := t.snapshotsWithVersions(ctx)
	if err != nil {
		return nil, err
	}
	sel, err := SelectSnapshots(all, refs)
	if err != nil {
		return nil, err
	}
	rw := &rewriter{t: t, r: t.Reader(), pats: o.Exclude, clean: map[findKey]struct{}{}}
	if !o.DryRun {
		cfg := t.e.conf()
		// The tenant's uploader, for trees only, under the lock held here.
		// No quota: a rewrite adds a few trees and lets prune free more.
		rw.in = &Ingest{
			t: t, unlock: func() {}, start: t.e.now().UnixNano(),
			data:    packer{size: cfg.PackSize, k: cfg.K, m: cfg.M},
			trees:   packer{size: cfg.PackSize, k: cfg.K, m: cfg.M, grow: true},
			pending: map[[32]byte]BlobType{},
		}
		defer rw.in.end()
	}
	rep = &RewriteReport{DryRun: o.DryRun, Snapshots: []RewriteItem{}}
	type pendingSnap struct {
		item int
		old  *Snapshot
		root tree.ID
	}
	var todo []pendingSnap
	for _, s := range sel {
		root, err := parseTreeID(s.Tree)
		if err != nil {
			return rep, err
		}
		rw.s, rw.fix, rw.removed = s, map[string]string{}, 0
		nroot, err := rw.tree(ctx, root, "", 0)
		if err != nil {
			return rep, fmt.Errorf("rewrite snapshot %s: %w", s.ID[:8], err)
		}
		rep.Snapshots = append(rep.Snapshots, RewriteItem{ID: s.ID, Removed: rw.removed})
		rep.Removed += rw.removed
		if nroot == root {
			rep.Unchanged++
			continue
		}
		rep.Rewritten++
		todo = append(todo, pendingSnap{item: len(rep.Snapshots) - 1, old: s, root: nroot})
	}
	if o.DryRun || len(todo) == 0 {
		return rep, nil
	}
	if err := rw.in.flush(ctx, &rw.in.trees); err != nil {
		return rep, err
	}
	var done []*Snapshot
	for _, p := range todo {
		ns, err := t.commitRewritten(ctx, p.old, p.root)
		if err != nil {
			rep.Rewritten = len(done)
			return rep, err
		}
		rep.Snapshots[p.item].New = ns.ID
		done = append(done, p.old)
	}
	if !o.Forget {
		return rep, nil
	}
	forgotten, errs := t.forgetSnapshots(ctx, done, versions)
	frep := &ForgetReport{Removed: []ForgetItem{}, Kept: len(all) + len(done) - len(forgotten)}
	for _, s := range forgotten {
		frep.Removed = append(frep.Removed, forgetItem(s, nil))
		for i := range rep.Snapshots {
			if rep.Snapshots[i].ID == s.ID {
				rep.Snapshots[i].Forgotten = true
			}
		}
	}
	rep.Forgotten = len(forgotten)
	ferr := errors.Join(errs...)
	if ferr != nil {
		ferr = fmt.Errorf("rewrite: %d of %d rewritten snapshots forgotten: %w", len(forgotten), len(done), ferr)
	}
	return rep, t.e.audited(ctx, "forget", t.id, forgetAuditDetail(frep), ferr)
}

// commitRewritten saves the snapshot of old rewritten to root (its trees
// indexed), audited as a backup with "rewrite=1".
func (t *Tenant) commitRewritten(ctx context.Context, old *Snapshot, root tree.ID) (*Snapshot, error) {
	if err := t.reachable(ctx, root); err != nil {
		return nil, err
	}
	c := &counter{r: t.Reader(), memo: map[tree.ID]treeCounts{}, blobs: map[tree.ID]struct{}{}}
	tc, err := c.count(ctx, root, 0)
	if err != nil {
		return nil, err
	}
	ns := &Snapshot{
		Time: old.Time, Host: old.Host, Paths: old.Paths, Tags: old.Tags, Excludes: old.Excludes,
		Username: old.Username, Tree: hex.EncodeToString(root[:]), Parent: old.Parent,
		Program: ProgramVersion, Original: old.ID,
		Stats: SnapshotStats{
			Start: old.Stats.Start, End: old.Stats.End,
			Files: int64(min(tc.files, 1<<62)), Dirs: int64(min(tc.dirs, 1<<62)), Bytes: int64(min(tc.bytes, 1<<62)),
		},
	}
	if _, err := t.commitAudited(ctx, ns, nil, " rewrite=1"); err != nil {
		return nil, err
	}
	return ns, nil
}

// rewriter builds the trees of one snapshot without the excluded entries.
type rewriter struct {
	t    *Tenant
	r    SnapshotReader
	in   *Ingest // nil on a dry run
	pats []Pattern
	// clean holds the trees (at a path, or by tree alone when only names
	// are matched) in which nothing is excluded and no hard link needs
	// fixing: they stay as they are in every snapshot, and are read once.
	// Trees on the way to an excluded entry are read again for each
	// snapshot (their removed entries are counted per snapshot).
	clean map[findKey]struct{}

	// Per snapshot:
	s       *Snapshot
	removed uint64
	// fix maps the path of an excluded first name of a hard-linked inode
	// to the path of the name that took over its content.
	fix map[string]string
}

// excluded reports whether the snapshot path rel ("a/b") or a folder on
// its way is excluded.
func (rw *rewriter) excluded(rel string) bool {
	p := ""
	for part := range strings.SplitSeq(rel, "/") {
		p += "/" + part
		if matchAny(rw.pats, part, p) {
			return true
		}
	}
	return false
}

// tree returns the ID of tree id (the folder at path at, "" for the root)
// without the excluded entries: id itself when nothing below it changes.
func (rw *rewriter) tree(ctx context.Context, id tree.ID, at string, depth int) (tree.ID, error) {
	nid, _, err := rw.treePure(ctx, id, at, depth)
	return nid, err
}

func (rw *rewriter) treePure(ctx context.Context, id tree.ID, at string, depth int) (tree.ID, bool, error) {
	key := findKey{id: id}
	if anyFull(rw.pats) {
		key.at = at
	}
	if _, ok := rw.clean[key]; ok {
		return id, true, nil
	}
	if depth >= MaxTreeDepth {
		return id, false, treeLimitf("more than %d folder levels", MaxTreeDepth)
	}
	if err := ctx.Err(); err != nil {
		return id, false, err
	}
	tr, err := rw.r.Tree(ctx, id)
	if err != nil {
		return id, false, err
	}
	pure, changed := true, false
	nodes := make([]tree.Node, 0, len(tr.Nodes))
	for i := range tr.Nodes {
		n := tr.Nodes[i]
		p := at + "/" + n.Name
		if matchAny(rw.pats, n.Name, p) {
			rw.removed++
			changed = true
			continue
		}
		switch n.Type {
		case tree.Hardlink:
			if !rw.excluded(n.LinkTarget) {
				break
			}
			pure, changed = false, true
			if first, ok := rw.fix[n.LinkTarget]; ok {
				n.LinkTarget = first
				break
			}
			f, _, err := lookupIn(ctx, rw.r, rw.s, n.LinkTarget)
			if err != nil || f == nil || f.Type != tree.File {
				return id, false, fmt.Errorf("%w: hard link %s: its first name /%s is not a file in the snapshot", ErrDamage, shortPath(p, 200), shortPath(n.LinkTarget, 200))
			}
			rw.fix[n.LinkTarget] = p[1:]
			n.Type, n.LinkTarget, n.Content, n.Holes, n.Size = tree.File, "", f.Content, f.Holes, f.Size
		case tree.Dir:
			sub, subPure, err := rw.treePure(ctx, n.Subtree, p, depth+1)
			if err != nil {
				return id, false, err
			}
			pure = pure && subPure
			if sub != n.Subtree {
				n.Subtree, changed = sub, true
			}
		}
		nodes = append(nodes, n)
	}
	nid := id
	if changed {
		if nid, err = rw.put(ctx, &tree.Tree{Nodes: nodes}); err != nil {
			return id, false, err
		}
	}
	if pure && !changed {
		rw.clean[key] = struct{}{}
	}
	return nid, pure, nil
}

// put encodes a new tree and stores it (on a dry run, only names it).
func (rw *rewriter) put(ctx context.Context, tr *tree.Tree) (tree.ID, error) {
	enc, err := tr.Encode()
	if err != nil {
		return tree.ID{}, fmt.Errorf("%w: %v", ErrDamage, err)
	}
	id := tree.ID(rw.t.keys.ids.Sum(enc))
	if rw.in == nil {
		return id, nil
	}
	if err := rw.in.Put(ctx, []IngestBlob{{Type: TreeBlob, ID: id, Data: enc}}); err != nil {
		return id, fmt.Errorf("store a rewritten tree: %w", err)
	}
	return id, nil
}
