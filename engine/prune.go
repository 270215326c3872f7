package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"coffer/engine/tree"
	"coffer/index"
	"coffer/repo"
)

// DefaultMaxUnusedPercent is the share of unused bytes above which prune
// repacks a pack.
const DefaultMaxUnusedPercent = 10

// PruneOptions configure Prune.
type PruneOptions struct {
	// MaxUnusedPercent: a pack whose unused share (bytes of its data that
	// no remaining snapshot needs, divided by its data length) is more than
	// this percentage is repacked: its used blobs are copied into new packs
	// and it is deleted. 0 means DefaultMaxUnusedPercent; it must lie in
	// [0, 100]. Packs that hold no used blob are always deleted.
	MaxUnusedPercent float64
	// DryRun decides and reports (bytes freed are then estimates), and
	// changes nothing.
	DryRun bool

	// hook, if set, is called at the named stages of a tenant's prune
	// ("marked": reachable blobs marked, nothing changed yet; "repacked":
	// new packs written and indexed, old ones not yet deleted). Tests use
	// it to pause or interrupt a prune. It runs with the tenant's lock held.
	hook func(stage string)
}

func (o *PruneOptions) fill() error {
	if o.MaxUnusedPercent < 0 || o.MaxUnusedPercent > 100 || o.MaxUnusedPercent != o.MaxUnusedPercent {
		return invalidf("max unused %v%% is outside 0..100", o.MaxUnusedPercent)
	}
	if o.MaxUnusedPercent == 0 {
		o.MaxUnusedPercent = DefaultMaxUnusedPercent
	}
	return nil
}

// PruneReport says what Prune found and did. Byte counts are sealed blob
// bytes before parity unless named physical; physical bytes are the shard
// data on the drives, parity included (ShardLen × (K+M) per pack). The
// counts of what was done (packs deleted, repacked and written, blobs
// repacked, bytes freed, containers removed) count only what was done, also
// when Prune stops with an error: a pack counts as deleted or repacked once
// the index no longer holds it, its bytes as freed once its shards are
// deleted. With DryRun they are what would be done.
type PruneReport struct {
	DryRun    bool  `json:"dry_run"`
	Tenants   int   `json:"tenants"`
	Snapshots int64 `json:"snapshots"`
	Packs     int64 `json:"packs"` // packs examined

	BlobsUsed   int64 `json:"blobs_used"`
	BlobsUnused int64 `json:"blobs_unused"`
	BytesUsed   int64 `json:"bytes_used"`
	// BytesUnused counts pack bytes no remaining snapshot needs: unused
	// blobs and copies of blobs that the index locates in another pack.
	BytesUnused int64 `json:"bytes_unused"`

	PacksKept     int64 `json:"packs_kept"`
	PacksDeleted  int64 `json:"packs_deleted"`  // packs that held no used blob
	PacksRepacked int64 `json:"packs_repacked"` // packs whose used blobs were copied, then deleted
	PacksWritten  int64 `json:"packs_written"`  // new packs written by repacking (estimated with DryRun)
	BlobsRepacked int64 `json:"blobs_repacked"`
	BytesRepacked int64 `json:"bytes_repacked"`

	// PhysicalBefore counts the packs examined; PhysicalAfter what of them
	// the index still holds, plus the new packs.
	PhysicalBefore int64 `json:"physical_bytes_before"`
	PhysicalAfter  int64 `json:"physical_bytes_after"`
	// BytesFreed is the physical bytes of the deleted packs whose shards
	// were all deleted, less those of the new packs written, plus the
	// bytes of shredded tenants' containers removed. It equals
	// PhysicalBefore − PhysicalAfter when every deletion succeeded, and is
	// negative when a prune stopped after writing new packs but before
	// deleting the old ones (the next prune deletes them).
	BytesFreed int64 `json:"bytes_freed"`

	// ShreddedContainers counts containers of shredded tenants removed from
	// the drives (Engine.Prune only).
	ShreddedContainers int `json:"shredded_containers_removed"`

	Seconds float64 `json:"seconds"`
	// Warnings are things prune left for later (shards it could not delete,
	// a pack whose blobs could not be read for repacking); at most
	// maxPruneWarnings are kept.
	Warnings []string `json:"warnings"`
}

const maxPruneWarnings = 100

func (r *PruneReport) warnf(format string, args ...any) {
	if len(r.Warnings) < maxPruneWarnings {
		r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
	}
}

func (r *PruneReport) add(o *PruneReport) {
	r.Tenants += o.Tenants
	r.Snapshots += o.Snapshots
	r.Packs += o.Packs
	r.BlobsUsed += o.BlobsUsed
	r.BlobsUnused += o.BlobsUnused
	r.BytesUsed += o.BytesUsed
	r.BytesUnused += o.BytesUnused
	r.PacksKept += o.PacksKept
	r.PacksDeleted += o.PacksDeleted
	r.PacksRepacked += o.PacksRepacked
	r.PacksWritten += o.PacksWritten
	r.BlobsRepacked += o.BlobsRepacked
	r.BytesRepacked += o.BytesRepacked
	r.PhysicalBefore += o.PhysicalBefore
	r.PhysicalAfter += o.PhysicalAfter
	r.BytesFreed += o.BytesFreed
	r.ShreddedContainers += o.ShreddedContainers
	for _, w := range o.Warnings {
		r.warnf("%s", w)
	}
}

// Prune removes the data that no remaining snapshot of the tenant needs
// (docs/prune.md):
//
//  1. mark: walk every snapshot's trees and record every tree and content
//     blob they reference in a temporary pebble database under the
//     repository folder (REPO/tmp-prune-<pid>-<random>, removed at the end);
//  2. plan: stream the tenant's blob locations and packs from the index and
//     find, per pack, the bytes still used;
//  3. delete packs that hold no used blob, and repack packs whose unused
//     share is over o.MaxUnusedPercent: their used blobs are copied (still
//     sealed, verified on reading) into new packs, which are durable on the
//     drives and indexed (blob locations switched to them) before the old
//     packs' index entries are removed; the old packs' shards are deleted
//     only after the index no longer points at them.
//
// A crash at any moment leaves a repository that passes Check and loses no
// blob a snapshot needs: at worst an old pack stays indexed with blobs that
// now live elsewhere (the next prune deletes it), or shards no index entry
// points at remain (Check notes, scrub --repair removes them).
//
// Prune holds the tenant's lock from the mark to the last deletion, so a
// backup of the same tenant waits for it (and then deduplicates only
// against what remains); other tenants are not affected. Memory does not
// grow with the repository: marks and per-pack blob lists live in the
// temporary database (its memtables and cache are bounded), and a repack
// holds at most two packs being filled plus one old pack's blob list.
//
// If a snapshot's trees cannot be read, Prune cannot tell what is needed:
// it deletes nothing and returns an error wrapping ErrDamage. With
// o.DryRun nothing is written.
func (t *Tenant) Prune(ctx context.Context, o PruneOptions) (*PruneReport, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	start := time.Now()
	removeStaleScratch(t.e.dir)
	rep, err := t.pruneAudited(ctx, o)
	if rep != nil {
		rep.Seconds = time.Since(start).Seconds()
	}
	return rep, err
}

// Prune prunes every tenant in turn (locked ones too: prune moves no data in
// or out), and removes the containers of shredded tenants that a shred
// could not remove from every drive. A tenant's prune holds only that
// tenant's lock. A tenant whose key cannot be opened is skipped with a
// warning; any other error stops it, and the report then covers the
// tenants done so far.
func (e *Engine) Prune(ctx context.Context, o PruneOptions) (*PruneReport, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	start := time.Now()
	removeStaleScratch(e.dir)
	total := &PruneReport{DryRun: o.DryRun, Warnings: []string{}}
	finish := func(err error) (*PruneReport, error) {
		total.Seconds = time.Since(start).Seconds()
		return total, err
	}
	entries, err := e.allTenantEntries()
	if err != nil {
		return nil, fmt.Errorf("prune: read tenants: %w", err)
	}
	e.mu.Lock()
	pending := slices.Clone(e.cfg.PendingShred)
	e.mu.Unlock()
	for _, te := range entries {
		if err := ctx.Err(); err != nil {
			return finish(err)
		}
		if te.meta.State == stateShredded {
			if slices.Contains(pending, te.rec.ID.String()) {
				continue // the shred itself is not finished; it removes them
			}
			if err := e.pruneShredded(ctx, te.rec.ID, o, total); err != nil {
				return finish(err)
			}
			continue
		}
		t, err := e.tenantHandle(te)
		if err != nil {
			// Its snapshots cannot be read, so nothing of it can be pruned;
			// the other tenants still can.
			total.warnf("tenant %s was not pruned: its key cannot be opened: %v", te.rec.ID, trimPrefixes(err.Error()))
			continue
		}
		rep, err := t.pruneAudited(ctx, o)
		if rep != nil {
			total.add(rep)
		}
		if err != nil {
			return finish(fmt.Errorf("prune tenant %s: %w", t.ID(), err))
		}
	}
	return finish(nil)
}

// pruneShredded removes what is left of a shredded tenant's container on
// the drives in service.
func (e *Engine) pruneShredded(ctx context.Context, id index.TenantID, o PruneOptions, total *PruneReport) error {
	c := id.String()
	prefix := "t/" + c + "/"
	var files, bytes int64
	for _, m := range e.rp().Members() {
		if m.Failed {
			continue
		}
		err := m.Drive.List(ctx, prefix, func(_ string, size int64) error {
			files++
			bytes += size
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			total.warnf("shredded tenant %s: list drive %s: %v", c, m.ID, trimPrefixes(err.Error()))
		}
	}
	if files == 0 {
		return nil
	}
	if o.DryRun {
		total.ShreddedContainers++
		total.BytesFreed += bytes
		return nil
	}
	err := e.rp().PurgeContainer(ctx, c)
	if err != nil {
		total.warnf("shredded tenant %s: %v", c, trimPrefixes(err.Error()))
	} else {
		total.ShreddedContainers++
		total.BytesFreed += bytes
	}
	return e.audited(ctx, "prune", id, fmt.Sprintf("shredded_objects=%d bytes_freed=%d", files, bytes), err)
}

// pruneAudited prunes the tenant and, unless o.DryRun, records an audit entry.
func (t *Tenant) pruneAudited(ctx context.Context, o PruneOptions) (rep *PruneReport, err error) {
	start := time.Now()
	rep, err = t.prune(ctx, o)
	if o.DryRun {
		return rep, err
	}
	detail := ""
	if rep != nil {
		detail = fmt.Sprintf("packs_deleted=%d packs_repacked=%d packs_written=%d bytes_freed=%d seconds=%s",
			rep.PacksDeleted, rep.PacksRepacked, rep.PacksWritten, rep.BytesFreed,
			strconv.FormatFloat(time.Since(start).Seconds(), 'f', 3, 64))
	}
	return rep, t.e.audited(ctx, "prune", t.id, detail, err)
}

// pruner is the state of one tenant's prune; it is used from one goroutine.
type pruner struct {
	t   *Tenant
	o   PruneOptions
	rep *PruneReport
	s   *pruneScratch

	data, trees packer
	// pending are repacked packs whose used blobs are in the packers or in
	// new indexed packs; they are deleted after the packers are flushed.
	pending []repackedPack
	newData int64 // DryRun: bytes that repacking would write

	// drops is the index batch of queued pack removals and dropped the
	// packs in it (see dropPack); nil when nothing is queued.
	drops   *index.Batch
	dropped []repackedPack

	// What was done (not DryRun), in physical bytes: packs removed from
	// the index, packs whose shards were all deleted, new packs written.
	// freed is guarded by flushDrops's mutex while its deletes run.
	removed, freed, written int64
}

// repackedPack is an old pack to be removed from the index: one that holds
// no used blob, or one whose used blobs (blobs, of bytes) were copied to
// new packs (repacked).
type repackedPack struct {
	rec         index.PackRec
	repacked    bool
	blobs, size int64
}

// maxPendingRepack bounds the old packs waiting for the packers to flush.
const maxPendingRepack = 64

func (t *Tenant) prune(ctx context.Context, o PruneOptions) (*PruneReport, error) {
	unlock := t.e.lockTenant(t.id)
	defer unlock()
	s, err := openPruneScratch(t.e.dir)
	if err != nil {
		return nil, err
	}
	defer s.close()
	cfg := t.e.conf()
	p := &pruner{
		t: t, o: o, s: s,
		rep:   &PruneReport{DryRun: o.DryRun, Tenants: 1, Warnings: []string{}},
		data:  packer{size: cfg.PackSize, k: cfg.K, m: cfg.M},
		trees: packer{size: cfg.PackSize, k: cfg.K, m: cfg.M, grow: true},
	}
	if err := p.mark(ctx); err != nil {
		return nil, err
	}
	p.stage("marked")
	if err := p.classifyBlobs(ctx); err != nil {
		return nil, err
	}
	if err := p.sweep(ctx); err != nil {
		p.finishReport()
		return p.rep, err
	}
	p.finishReport()
	return p.rep, nil
}

func (p *pruner) stage(name string) {
	if p.o.hook != nil {
		p.o.hook(name)
	}
}

func (p *pruner) finishReport() {
	r := p.rep
	if !r.DryRun {
		r.PhysicalAfter = r.PhysicalBefore - p.removed + p.written
		r.BytesFreed = p.freed - p.written
		return
	}
	if p.newData > 0 {
		cfg := p.t.e.conf()
		k, m := int64(cfg.K), int64(cfg.M)
		size := int64(cfg.PackSize)
		r.PacksWritten = (p.newData + size - 1) / size
		r.PhysicalAfter += (p.newData + k - 1) / k * (k + m)
	}
	r.BytesFreed = r.PhysicalBefore - r.PhysicalAfter
}

// mark records every blob that a snapshot of the tenant references: the
// trees of every snapshot and the content blobs of their files. Trees
// shared between snapshots are walked once.
func (p *pruner) mark(ctx context.Context) error {
	err := p.t.e.db.Snapshots(p.t.id, func(rec index.SnapshotRec) error {
		p.rep.Snapshots++
		s, err := p.t.openSnapshot(rec)
		if err != nil {
			return fmt.Errorf("%w (prune cannot tell what it needs; nothing was deleted)", err)
		}
		id, err := parseTreeID(s.Tree)
		if err != nil {
			return err
		}
		if err := p.markTree(ctx, id); err != nil {
			return fmt.Errorf("snapshot %s: %w", s.ID[:8], err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("prune: mark used blobs: %w", err)
	}
	return p.s.flush()
}

func (p *pruner) markTree(ctx context.Context, id tree.ID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key := scratchMarkKey(id)
	seen, err := p.s.has(key)
	if err != nil || seen {
		return err
	}
	if err := p.s.set(key, nil); err != nil {
		return err
	}
	tr, err := p.t.loadTree(ctx, id)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: tree %x cannot be read, so prune cannot tell what it needs (nothing was deleted; run coffer check): %v",
			ErrDamage, id[:8], err)
	}
	for i := range tr.Nodes {
		n := &tr.Nodes[i]
		switch n.Type {
		case tree.Dir:
			if err := p.markTree(ctx, n.Subtree); err != nil {
				return err
			}
		case tree.File:
			for _, c := range n.Content {
				if err := p.s.set(scratchMarkKey(c), nil); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// scratchEntry is what the scratch database keeps about one indexed blob,
// under its pack.
type scratchEntry struct {
	used bool
	loc  index.BlobLoc
}

// classifyBlobs streams the tenant's blob locations and files each under its
// pack in the scratch database, marked used or not.
func (p *pruner) classifyBlobs(ctx context.Context) error {
	err := p.t.e.db.Blobs(p.t.id, func(id index.BlobID, loc index.BlobLoc) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		used, err := p.s.has(scratchMarkKey(id))
		if err != nil {
			return err
		}
		if used {
			p.rep.BlobsUsed++
		} else {
			p.rep.BlobsUnused++
		}
		return p.s.set(scratchBlobKey(loc.Pack, id), encodeScratchEntry(scratchEntry{used: used, loc: loc}))
	})
	if err != nil {
		return fmt.Errorf("prune: read blob locations: %w", err)
	}
	return p.s.flush()
}

// packUse sums what the scratch database holds about one pack.
type packUse struct {
	used, indexed int64 // blobs located in the pack: used, all
	usedBytes     int64
}

func (p *pruner) packUse(id index.PackID) (packUse, error) {
	var u packUse
	err := p.s.scan(scratchPackPrefix(id), func(_ []byte, e scratchEntry) error {
		u.indexed++
		if e.used {
			u.used++
			u.usedBytes += int64(e.loc.Length)
		}
		return nil
	})
	return u, err
}

func physical(rec index.PackRec) int64 {
	return int64(rec.ShardLen) * int64(int(rec.K)+int(rec.M))
}

// sweep visits every pack of the tenant: keeps it, deletes it, or repacks it.
func (p *pruner) sweep(ctx context.Context) error {
	r := p.rep
	err := p.t.e.db.Packs(p.t.id, func(rec index.PackRec) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.Packs++
		u, err := p.packUse(rec.ID)
		if err != nil {
			return err
		}
		phys := physical(rec)
		r.PhysicalBefore += phys
		unused := max(int64(rec.DataLen)-u.usedBytes, 0)
		r.BytesUsed += u.usedBytes
		r.BytesUnused += unused
		switch {
		case u.used == 0:
			if p.o.DryRun {
				r.PacksDeleted++
				return nil
			}
			return p.dropPack(ctx, repackedPack{rec: rec})
		case float64(unused)*100 > p.o.MaxUnusedPercent*float64(rec.DataLen):
			return p.repack(ctx, rec, u)
		default:
			r.PacksKept++
			if p.o.DryRun {
				r.PhysicalAfter += phys
			}
			return nil
		}
	})
	if err != nil {
		p.discardDrops()
		return fmt.Errorf("prune: %w", err)
	}
	if err := p.finishRepack(ctx); err != nil {
		p.discardDrops()
		return err
	}
	return p.flushDrops(ctx)
}

// discardDrops forgets queued removals that will not be committed.
func (p *pruner) discardDrops() {
	if p.drops != nil {
		p.drops.Close()
		p.drops, p.dropped = nil, nil
	}
}

// dropPack queues the removal of a pack that holds no used blob: its record
// and the locations of the blobs it holds go into the pending index batch,
// its shards are deleted by flushDrops once that batch is committed. A used
// blob still located in it is a broken invariant: prune stops before
// anything of the batch is committed.
func (p *pruner) dropPack(ctx context.Context, rp repackedPack) error {
	rec := rp.rec
	db := p.t.e.db
	if p.drops == nil {
		p.drops = db.NewBatch()
	}
	err := p.s.scan(scratchPackPrefix(rec.ID), func(key []byte, e scratchEntry) error {
		var id index.BlobID
		copy(id[:], key[1+16:])
		loc, ok, err := db.Blob(p.t.id, id)
		if err != nil {
			return err
		}
		if !ok || loc.Pack != rec.ID {
			return nil // located elsewhere now (repacked)
		}
		if e.used {
			return fmt.Errorf("internal error: used blob %x is still located in pack %s; nothing more is removed", id[:8], rec.ID)
		}
		p.drops.DeleteBlob(p.t.id, id)
		return nil
	})
	if err != nil {
		return err
	}
	p.drops.DeletePack(p.t.id, rec.ID)
	p.dropped = append(p.dropped, rp)
	if len(p.dropped) >= maxQueuedDrops || p.drops.Len() >= maxDropOps {
		return p.flushDrops(ctx)
	}
	return nil
}

// Bounds of the queued pack removals: packs, and index operations (blob
// locations) in the pending batch.
const (
	maxQueuedDrops = 64
	maxDropOps     = 16384
	// dropParallel packs have their shards deleted at a time; each pack's
	// k+m shards are deleted in parallel already (one per drive), so this
	// keeps about dropParallel × (k+m) deletes in flight, which hides the
	// folder fsync of each delete without flooding the drives.
	dropParallel = 4
)

// flushDrops commits the queued removals in one synced index batch, then
// deletes the packs' shards. The index no longer points at them, so
// deleting is safe; shards left behind (a failing drive, a crash) are
// orphans that check notes and scrub --repair removes.
func (p *pruner) flushDrops(ctx context.Context) error {
	if p.drops == nil {
		return nil
	}
	b, recs := p.drops, p.dropped
	p.drops, p.dropped = nil, nil
	err := b.Commit()
	b.Close()
	if err != nil {
		return fmt.Errorf("remove %d packs from the index: %w", len(recs), err)
	}
	// Done: the index no longer holds them.
	r := p.rep
	for _, d := range recs {
		p.removed += physical(d.rec)
		if d.repacked {
			r.PacksRepacked++
			r.BlobsRepacked += d.blobs
			r.BytesRepacked += d.size
		} else {
			r.PacksDeleted++
		}
	}
	rp := p.t.e.rp()
	sem := make(chan struct{}, dropParallel)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards p.rep.Warnings and p.freed below
	for _, d := range recs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := rp.DeletePack(ctx, packInfo(p.t.container(), d.rec))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				p.freed += physical(d.rec)
			case ctx.Err() == nil:
				p.rep.warnf("pack %s: some shards could not be deleted (scrub --repair removes them): %v", d.rec.ID, trimPrefixes(err.Error()))
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}

// repack copies the used blobs of rec into the packers; rec is deleted once
// they are in indexed new packs (finishRepack).
func (p *pruner) repack(ctx context.Context, rec index.PackRec, u packUse) error {
	r := p.rep
	if p.o.DryRun {
		r.PacksRepacked++
		p.newData += u.usedBytes
		r.BlobsRepacked += u.used
		r.BytesRepacked += u.usedBytes
		return nil
	}
	// The used blobs of one pack, in pack order. Bounded by the pack's size:
	// a blob takes at least 41 sealed bytes in the pack and ~70 here.
	type item struct {
		id  index.BlobID
		loc index.BlobLoc
	}
	var items []item
	err := p.s.scan(scratchPackPrefix(rec.ID), func(key []byte, e scratchEntry) error {
		if e.used {
			var id index.BlobID
			copy(id[:], key[1+16:])
			items = append(items, item{id, e.loc})
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(items, func(a, b item) int { return int(a.loc.Offset) - int(b.loc.Offset) })
	pi := packInfo(p.t.container(), rec)
	done := repackedPack{rec: rec, repacked: true} // counted once rec leaves the index
	// Read windows of consecutive used blobs, up to repackWindow bytes each
	// (one larger blob makes its own window).
	for i := 0; i < len(items); {
		j, start := i+1, int64(items[i].loc.Offset)
		end := start + int64(items[i].loc.Length)
		for j < len(items) && int64(items[j].loc.Offset)+int64(items[j].loc.Length)-start <= repackWindow {
			end = int64(items[j].loc.Offset) + int64(items[j].loc.Length)
			j++
		}
		win, err := p.t.e.rp().ReadRange(ctx, pi, start, end-start, nil)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			win = nil // each blob is read on its own below, with reconstruction
		}
		for _, it := range items[i:j] {
			typ := BlobType(it.loc.Type)
			var sealed []byte
			if win != nil {
				off := int64(it.loc.Offset) - start
				sealed = win[off : off+int64(it.loc.Length)]
				if p.verifySealed(typ, it.id, it.loc, sealed) != nil {
					sealed = nil
				}
			}
			if sealed == nil {
				// ReadRange with verification routes around shards that
				// pass their CRCs but hold other bytes.
				sealed, err = p.t.e.rp().ReadRange(ctx, pi, int64(it.loc.Offset), int64(it.loc.Length),
					func(b []byte) error { return p.verifySealed(typ, it.id, it.loc, b) })
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					// Keep the pack: what was copied of it already is
					// harmless (a second copy); the rest stays where it is.
					r.PacksKept++
					r.warnf("pack %s was not repacked: blob %x cannot be read: %v", rec.ID, it.id[:8], trimPrefixes(err.Error()))
					return nil
				}
			}
			pk := &p.data
			if typ == TreeBlob {
				pk = &p.trees
			}
			if full := pk.add(typ, it.id, sealed, int(it.loc.RawLength)); full != nil {
				if err := p.writeNew(ctx, full); err != nil {
					return err
				}
			}
			done.blobs++
			done.size += int64(it.loc.Length)
		}
		i = j
	}
	p.pending = append(p.pending, done)
	if len(p.pending) >= maxPendingRepack {
		return p.finishRepack(ctx)
	}
	return nil
}

// repackWindow bounds one read of consecutive used blobs during a repack.
const repackWindow = 8 << 20

// verifySealed checks that sealed is blob id: it opens under the tenant's
// key and its plaintext hashes to id.
func (p *pruner) verifySealed(typ BlobType, id index.BlobID, loc index.BlobLoc, sealed []byte) error {
	b, err := openBlob(p.t.sealKey(typ), p.t.id, typ, id, sealed, int(loc.RawLength))
	if err != nil {
		return err
	}
	if index.BlobID(p.t.keys.ids.Sum(b)) != id {
		return fmt.Errorf("%w: content ID mismatch", ErrAuth)
	}
	return nil
}

// writeNew writes and indexes a new pack of repacked blobs: its shards are
// durable and its record and blob locations committed (switching the blobs
// to it) before it returns. It does not use the drives' reserve check.
func (p *pruner) writeNew(ctx context.Context, pp *pendingPack) error {
	info, err := p.t.writePackOpts(ctx, pp, repo.WriteOptions{})
	if err != nil {
		return fmt.Errorf("write repacked pack: %w", err)
	}
	p.rep.PacksWritten++
	p.written += info.ShardLen * int64(info.K+info.M)
	return nil
}

// finishRepack writes what the packers hold, then deletes the repacked packs
// (none of their used blobs is located in them any more).
func (p *pruner) finishRepack(ctx context.Context) error {
	if p.o.DryRun || len(p.pending) == 0 {
		return nil
	}
	for _, pk := range []*packer{&p.data, &p.trees} {
		if pp := pk.take(); pp != nil {
			if err := p.writeNew(ctx, pp); err != nil {
				return err
			}
		}
	}
	p.stage("repacked")
	for _, rp := range p.pending {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.dropPack(ctx, rp); err != nil {
			return err
		}
	}
	p.pending = p.pending[:0]
	return p.flushDrops(ctx)
}

// The scratch database of one prune. Keys:
//
//	'r' | blob ID (32)                  → empty: the blob is used (marked)
//	'b' | pack ID (16) | blob ID (32)   → scratchEntry: an indexed blob located in that pack
//
// It is a pebble database without a write-ahead log (a crash loses it, and
// nothing needs it after a crash) in REPO/tmp-prune-<pid>-<random>. Memory:
// a 4 MiB memtable (two while one is flushed), an 8 MiB block cache and a
// write batch of at most scratchBatchBytes; everything else is on disk.
type pruneScratch struct {
	dir string
	db  *pebble.DB
	b   *pebble.Batch // indexed batch of writes not yet applied, or nil
}

const (
	pruneScratchPrefix = "tmp-prune-"
	scratchBatchBytes  = 4 << 20
	scratchEntryLen    = 1 + 1 + 16 + 4 + 4 + 4
)

func scratchMarkKey(id [32]byte) []byte { return append([]byte{'r'}, id[:]...) }

func scratchPackPrefix(pack index.PackID) []byte { return append([]byte{'b'}, pack[:]...) }

func scratchBlobKey(pack index.PackID, id index.BlobID) []byte {
	return append(scratchPackPrefix(pack), id[:]...)
}

func encodeScratchEntry(e scratchEntry) []byte {
	b := make([]byte, 0, scratchEntryLen)
	used := byte(0)
	if e.used {
		used = 1
	}
	b = append(b, used, byte(e.loc.Type))
	b = append(b, e.loc.Pack[:]...)
	b = binary.LittleEndian.AppendUint32(b, e.loc.Offset)
	b = binary.LittleEndian.AppendUint32(b, e.loc.Length)
	return binary.LittleEndian.AppendUint32(b, e.loc.RawLength)
}

func decodeScratchEntry(b []byte) (scratchEntry, error) {
	if len(b) != scratchEntryLen {
		return scratchEntry{}, fmt.Errorf("prune: scratch entry of %d bytes", len(b))
	}
	var e scratchEntry
	e.used = b[0] == 1
	e.loc.Type = index.BlobType(b[1])
	copy(e.loc.Pack[:], b[2:18])
	e.loc.Offset = binary.LittleEndian.Uint32(b[18:])
	e.loc.Length = binary.LittleEndian.Uint32(b[22:])
	e.loc.RawLength = binary.LittleEndian.Uint32(b[26:])
	return e, nil
}

// scratchLogger discards pebble's messages (a library does not log); a fatal
// internal error panics with the message, as the index's logger does.
type scratchLogger struct{}

func (scratchLogger) Infof(string, ...any)  {}
func (scratchLogger) Errorf(string, ...any) {}
func (scratchLogger) Fatalf(format string, args ...any) {
	panic(fmt.Errorf("prune: pebble fatal error: "+format, args...))
}

func openPruneScratch(repoDir string) (*pruneScratch, error) {
	var r [8]byte
	randomBytes(r[:])
	dir := filepath.Join(repoDir, fmt.Sprintf("%s%d-%x", pruneScratchPrefix, os.Getpid(), r))
	cache := pebble.NewCache(8 << 20)
	defer cache.Unref()
	po := &pebble.Options{
		Cache:              cache,
		DisableWAL:         true,
		MemTableSize:       4 << 20,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             scratchLogger{},
		EventListener: &pebble.EventListener{
			BackgroundError: func(error) {},
			DataCorruption:  func(pebble.DataCorruptionInfo) {},
		},
	}
	for i := range po.Levels {
		// Most mark lookups of content blobs during classification hit,
		// but tree lookups during the walk often miss.
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("prune: create scratch database in %s: %w", dir, err)
	}
	return &pruneScratch{dir: dir, db: db}, nil
}

func (s *pruneScratch) set(key, value []byte) error {
	if s.b == nil {
		s.b = s.db.NewIndexedBatch()
	}
	if err := s.b.Set(key, value, nil); err != nil {
		return fmt.Errorf("prune: scratch write: %w", err)
	}
	if s.b.Len() >= scratchBatchBytes {
		return s.flush()
	}
	return nil
}

// has reports whether key is present, in the pending batch or the database.
func (s *pruneScratch) has(key []byte) (bool, error) {
	var r pebble.Reader = s.db
	if s.b != nil {
		r = s.b
	}
	_, c, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("prune: scratch read: %w", err)
	}
	_ = c.Close()
	return true, nil
}

// flush applies the pending batch (without sync: the scratch database does
// not survive a crash, by design).
func (s *pruneScratch) flush() error {
	if s.b == nil {
		return nil
	}
	err := s.b.Commit(pebble.NoSync)
	_ = s.b.Close()
	s.b = nil
	if err != nil {
		return fmt.Errorf("prune: scratch write: %w", err)
	}
	return nil
}

// scan calls fn for every blob entry under prefix, in key order. key is
// valid only during fn.
func (s *pruneScratch) scan(prefix []byte, fn func(key []byte, e scratchEntry) error) error {
	if err := s.flush(); err != nil {
		return err
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("prune: scratch read: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			var e scratchEntry
			if e, err = decodeScratchEntry(v); err == nil {
				err = fn(it.Key(), e)
			}
		}
		if err != nil {
			_ = it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("prune: scratch read: %w", err)
	}
	return nil
}

// prefixEnd returns the smallest key greater than every key that starts
// with prefix (nil: no upper bound, for a prefix of only 0xff bytes).
func prefixEnd(prefix []byte) []byte {
	end := slices.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// close closes and removes the scratch database.
func (s *pruneScratch) close() error {
	if s.b != nil {
		_ = s.b.Close()
		s.b = nil
	}
	err := s.db.Close()
	if rerr := os.RemoveAll(s.dir); err == nil {
		err = rerr
	}
	return err
}

// removeStaleScratch removes scratch databases left in dir by a process that
// died during a prune. The caller owns the repository (its lock), so a
// scratch folder named by another process ID is no longer in use; those of
// this process may be (a prune of another tenant) and are left alone.
func removeStaleScratch(dir string) {
	matches, _ := filepath.Glob(filepath.Join(dir, pruneScratchPrefix+"*"))
	own := pruneScratchPrefix + strconv.Itoa(os.Getpid()) + "-"
	for _, m := range matches {
		if !strings.HasPrefix(filepath.Base(m), own) {
			_ = os.RemoveAll(m)
		}
	}
}
