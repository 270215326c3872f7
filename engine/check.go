package engine

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"

	"coffer/chunk"
	"coffer/engine/tree"
	"coffer/index"
	"coffer/repo"
)

// ErrCheckFailed is returned by Check when it found damage (the CLI exits 14).
var ErrCheckFailed = errors.New("engine: check found damage")

// CheckOptions configure Check.
type CheckOptions struct {
	// ReadData reads every shard in full (block CRCs and hash) and decrypts
	// every blob, verifying its content ID.
	ReadData bool
	// Progress counts shards checked (Files) and bytes read (Bytes).
	Progress *Progress
}

// CheckReport is what Check found.
type CheckReport struct {
	Tenants   int      `json:"tenants"`
	Snapshots int      `json:"snapshots"`
	Packs     int      `json:"packs"`
	Shards    int      `json:"shards"`
	Blobs     int      `json:"blobs"`
	Problems  []string `json:"problems"` // damage: data at risk or lost
	Notes     []string `json:"notes"`    // harmless findings, such as shards of interrupted writes
}

// Check verifies that the index and the drives agree: every indexed pack has
// all its shards with valid headers, its sealed pack header lists what the
// index says, every indexed blob lies in an indexed pack, and every snapshot's
// trees and content are indexed. Shards the index does not know (left by an
// interrupted write) are notes, not damage. It returns the report and, when
// there is damage, an error wrapping ErrCheckFailed.
func (e *Engine) Check(ctx context.Context, o CheckOptions) (*CheckReport, error) {
	prog := o.Progress
	if prog == nil {
		prog = &Progress{}
	}
	rep := &CheckReport{}
	entries, err := e.tenantEntries()
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	behind := map[string]bool{}        // tenants whose unindexed shards may hold what a snapshot needs
	keys := map[string]registeredKey{} // lookup entry name → the key it should point at
	if err := e.checkTenantRecords(ctx, false); err != nil {
		if ctx.Err() != nil || IndexDamaged(err) {
			return rep, err
		}
		rep.Problems = append(rep.Problems, trimPrefixes(err.Error()))
	}
	for _, te := range entries {
		rep.Tenants++
		known[hex.EncodeToString(te.rec.ID[:])] = true
		t, err := e.tenantHandle(te)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("tenant %x: %v", te.rec.ID[:4], err))
			continue
		}
		set, _, err := e.readClientKeys(te, t.keys)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("tenant %s: %v", t.ID()[:8], err))
		} else {
			for _, k := range set.Keys {
				keys[clientKeyLookupMeta(k.Key)] = registeredKey{tenant: te.rec.ID, fp: KeyFingerprint(k.Key)}
			}
		}
		unreachable, err := t.check(ctx, o, rep, prog)
		if err != nil {
			return rep, err
		}
		lagging, err := t.checkLag(ctx, rep)
		if err != nil {
			return rep, err
		}
		behind[t.container()] = lagging || unreachable
	}
	if err := e.checkKeyLookups(keys, rep); err != nil {
		return rep, err
	}
	err = e.rp().ListShards(ctx, func(d repo.DriveID, container string, id repo.PackID, i int, size int64) error {
		if !known[container] {
			rep.Notes = append(rep.Notes, fmt.Sprintf("drive %s holds shard %d of pack %s of an unknown tenant container", d, i, id))
			return nil
		}
		var tid index.TenantID
		_ = decodeHexInto(tid[:], container)
		if _, err := e.db.Pack(tid, index.PackID(id)); errors.Is(err, index.ErrNotFound) {
			why := "an interrupted write; scrub --repair removes it"
			if behind[container] {
				why = "it may hold what a snapshot needs: coffer index rebuild adopts it, scrub keeps it"
			}
			rep.Notes = append(rep.Notes, fmt.Sprintf("drive %s holds shard %d of unindexed pack %s (%s)", d, i, id, why))
		} else if err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("listing drives: %v", err))
	}
	if len(rep.Problems) > 0 {
		return rep, fmt.Errorf("%w: %d problems", ErrCheckFailed, len(rep.Problems))
	}
	return rep, nil
}

// checkLag compares the tenant's snapshot records on the drives with the
// index, changing nothing: a snapshot on the drives that needs what the
// index lacks is damage (the index is behind: coffer index rebuild); one
// whose every blob is indexed (a backup stopped between its record and its
// index batch) is a note. It reports whether the index is behind.
func (t *Tenant) checkLag(ctx context.Context, rep *CheckReport) (bool, error) {
	lag, err := t.snapshotLag(ctx, lagMode{})
	if err != nil {
		if ctx.Err() != nil || IndexDamaged(err) {
			return false, err
		}
		rep.Problems = append(rep.Problems, fmt.Sprintf("tenant %s: %s", t.ID()[:8], trimPrefixes(err.Error())))
		return true, nil
	}
	if lag == nil {
		return false, nil
	}
	if len(lag.complete) > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("tenant %s: snapshot %s is on the drives but not in the index (a backup stopped after writing its record); the next command on the tenant (snapshots, backup, …) adds it, as does coffer index rebuild", t.ID()[:8], shortIDs(lag.complete)))
	}
	if err := lag.err(t); err != nil {
		rep.Problems = append(rep.Problems, trimPrefixes(err.Error()))
		return true, nil
	}
	return false, nil
}

// registeredKey is a client key as its tenant's sealed key set holds it.
type registeredKey struct {
	tenant [16]byte
	fp     string
}

// checkKeyLookups compares the index's client-key lookup entries (ck/) with
// the tenants' sealed key sets. A key without its entry cannot log in: a
// problem (index rebuild restores the entry). An entry without its key is a
// note: authentication opens the sealed set, so it admits nobody.
func (e *Engine) checkKeyLookups(keys map[string]registeredKey, rep *CheckReport) error {
	err := e.db.MetaPrefix("ck/", func(name string, owner []byte) error {
		k, ok := keys[name]
		if !ok || !bytes.Equal(owner, k.tenant[:]) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("client key lookup entry %s names no key of a live tenant (harmless: authentication checks the sealed key set)", name[3:][:min(16, len(name)-3)]))
			return nil
		}
		delete(keys, name)
		return nil
	})
	if err != nil {
		return err
	}
	var missing []string
	for _, k := range keys {
		missing = append(missing, fmt.Sprintf("tenant %x: client key %s has no lookup entry, so it cannot log in (coffer index rebuild restores it)", k.tenant[:4], k.fp))
	}
	sort.Strings(missing)
	rep.Problems = append(rep.Problems, missing...)
	return nil
}

// check checks the tenant's packs, blobs and snapshots. unreachable says
// that a snapshot needs a tree or content blob that cannot be read or is not
// indexed (scrub then keeps the tenant's unindexed packs).
func (t *Tenant) check(ctx context.Context, o CheckOptions, rep *CheckReport, prog *Progress) (unreachable bool, err error) {
	problem := func(format string, args ...any) {
		rep.Problems = append(rep.Problems, fmt.Sprintf("tenant %s: ", t.ID()[:8])+fmt.Sprintf(format, args...))
	}
	packs := map[index.PackID]index.PackRec{}
	verified := map[verifiedBlob]bool{} // blobs checked from their pack's data shards
	failed := map[repo.DriveID]bool{}   // drives the operator marked failed
	for _, d := range t.e.Drives() {
		if d.State == driveFailed {
			id, _ := repo.ParseDriveID(d.ID)
			failed[id] = true
		}
	}
	err = t.e.db.Packs(t.id, func(rec index.PackRec) error {
		rep.Packs++
		packs[rec.ID] = rec
		t.checkPack(ctx, rec, o, rep, prog, problem, verified, failed)
		return ctx.Err()
	})
	if err != nil {
		return false, err
	}
	err = t.e.db.Blobs(t.id, func(id index.BlobID, loc index.BlobLoc) error {
		rep.Blobs++
		rec, ok := packs[loc.Pack]
		if !ok {
			// A backup served by this process while the check runs may
			// have indexed the pack after the walk of packs above.
			if late, err := t.e.db.Pack(t.id, loc.Pack); err == nil {
				rec, ok = late, true
				rep.Packs++
				packs[rec.ID] = rec
				t.checkPack(ctx, rec, o, rep, prog, problem, verified, failed)
			}
		}
		if !ok {
			problem("blob %x is indexed in pack %s, which is not indexed", id[:8], loc.Pack)
			return nil
		}
		if uint64(loc.Offset)+uint64(loc.Length) > rec.DataLen {
			problem("blob %x lies outside pack %s", id[:8], loc.Pack)
			return nil
		}
		if o.ReadData && !verified[verifiedBlob{loc.Pack, loc.Offset, loc.Length, id}] {
			// Not checked with its pack (a damaged data shard, or an index
			// entry that disagrees with the pack header): read it alone,
			// reconstructing if need be.
			if _, err := t.readBlobFresh(ctx, packInfo(t.container(), rec), BlobType(loc.Type), id, loc); err != nil {
				problem("blob %x in pack %s: %v", id[:8], loc.Pack, err)
			}
			prog.Bytes.Add(int64(loc.Length))
		}
		return ctx.Err()
	})
	if err != nil {
		return false, err
	}
	seen := map[tree.ID]bool{}
	err = t.e.db.Snapshots(t.id, func(rec index.SnapshotRec) error {
		rep.Snapshots++
		s, err := t.openSnapshot(rec)
		if err != nil {
			problem("%v", err)
			return nil
		}
		id, err := parseTreeID(s.Tree)
		if err != nil {
			problem("snapshot %s: %v", s.ID[:8], err)
			return nil
		}
		t.checkTree(ctx, id, seen, func(format string, args ...any) {
			unreachable = true
			problem("snapshot %s: "+format, append([]any{s.ID[:8]}, args...)...)
		})
		return ctx.Err()
	})
	return unreachable, err
}

// verifiedBlob is a blob whose sealed bytes were authenticated and whose
// content ID was checked, at this place in this pack.
type verifiedBlob struct {
	pack   index.PackID
	offset uint32
	length uint32
	id     index.BlobID
}

func (t *Tenant) checkPack(ctx context.Context, rec index.PackRec, o CheckOptions, rep *CheckReport, prog *Progress, problem func(string, ...any), verified map[verifiedBlob]bool, failed map[repo.DriveID]bool) {
	p := packInfo(t.container(), rec)
	var trailer []byte
	var data [][]byte // verified data shards, with ReadData
	if o.ReadData {
		data = make([][]byte, p.K)
	}
	// Shards never written or on drives the operator marked failed are
	// known reduced redundancy; a drive that is merely unavailable is damage.
	degraded := map[int]bool{}
	for i, d := range p.Drives {
		if d == (repo.DriveID{}) || failed[d] {
			degraded[i] = true
		}
	}
	good := 0
	defer func() {
		if good < p.K {
			problem("pack %s has %d good shards, fewer than the %d needed to read it", p.ID, good, p.K)
		}
	}()
	for i, d := range p.Drives {
		rep.Shards++
		prog.Files.Add(1)
		if degraded[i] {
			// A shard never written (a backup with a drive down) or on a
			// drive marked failed: known reduced redundancy, not damage.
			rep.Notes = append(rep.Notes, fmt.Sprintf("tenant %s: pack %s shard %d is not on a drive in service (below full redundancy; scrub --repair rewrites it)", t.ID()[:8], p.ID, i))
			continue
		}
		hdr, tr, err := t.e.rp().ReadShardTrailer(ctx, d, p.Container, p.ID, i)
		if err != nil {
			problem("pack %s shard %d on drive %s: %v", p.ID, i, d, err)
			continue
		}
		if hdr.K != p.K || hdr.M != p.M || hdr.DataLen != p.DataLen || hdr.ShardLen != p.ShardLen {
			problem("pack %s shard %d on drive %s: header does not match the index", p.ID, i, d)
			continue
		}
		if o.ReadData {
			var err error
			if i < p.K {
				// Data shards are kept: the pack's blobs are checked from them
				// below, so every byte is read once.
				var b []byte
				if b, err = t.e.rp().ReadShardVerified(ctx, p, i); err == nil {
					data[i] = b
				}
			} else {
				err = t.e.rp().VerifyShard(ctx, p, i)
			}
			if err != nil {
				problem("pack %s shard %d on drive %s: %v", p.ID, i, d, err)
				continue
			}
			prog.Bytes.Add(p.ShardLen)
		}
		if _, err := t.openPackHeader(p.ID, tr); err != nil {
			problem("pack %s shard %d on drive %s: sealed pack header: %v", p.ID, i, d, err)
			continue
		}
		if trailer == nil {
			trailer = tr
		}
		good++
	}
	if trailer == nil {
		return
	}
	h, _ := t.openPackHeader(p.ID, trailer)
	if h.K != p.K || h.M != p.M || int64(h.DataLen) != p.DataLen || len(h.Blobs) != int(rec.Blobs) {
		problem("pack %s: sealed header does not match the index", p.ID)
		return
	}
	if o.ReadData && !slices.ContainsFunc(data, func(b []byte) bool { return b == nil }) {
		pack := make([]byte, 0, int64(p.K)*p.ShardLen)
		for _, b := range data {
			pack = append(pack, b...)
		}
		for _, bl := range h.Blobs {
			sealed := pack[bl.Offset : bl.Offset+bl.Length]
			plain, err := openBlob(t.sealKey(bl.Type), t.id, bl.Type, bl.ID, sealed, int(bl.Raw))
			if err == nil && t.keys.ids.Sum(plain) == chunk.ID(bl.ID) {
				verified[verifiedBlob{rec.ID, bl.Offset, bl.Length, index.BlobID(bl.ID)}] = true
			}
		}
	}
	for i := range h.Hashes {
		if i < len(p.Hashes) && repo.Hash(h.Hashes[i]) != p.Hashes[i] {
			problem("pack %s: shard %d hash differs between the sealed header and the index", p.ID, i)
		}
	}
}

// openPackHeader authenticates and decodes a sealed pack header.
func (t *Tenant) openPackHeader(id repo.PackID, trailer []byte) (*packHeader, error) {
	plain, err := openRaw(&t.keys.meta, headerAD(t.id, id), trailer)
	if err != nil {
		return nil, err
	}
	plain, err = decompress(plain, 0)
	if err != nil {
		return nil, err
	}
	h, err := decodePackHeader(plain)
	if err != nil {
		return nil, err
	}
	if h.Tenant != t.id || h.Pack != id {
		return nil, fmt.Errorf("%w: header names another pack", ErrCorrupt)
	}
	return h, nil
}

// checkTree walks a tree once, checking that every subtree decodes and every
// content blob is indexed.
func (t *Tenant) checkTree(ctx context.Context, id tree.ID, seen map[tree.ID]bool, problem func(string, ...any)) {
	if seen[id] || ctx.Err() != nil {
		return
	}
	seen[id] = true
	tr, err := t.loadTree(ctx, id)
	if err != nil {
		problem("tree %x: %v", id[:8], err)
		return
	}
	for i := range tr.Nodes {
		n := &tr.Nodes[i]
		switch n.Type {
		case tree.Dir:
			t.checkTree(ctx, n.Subtree, seen, problem)
		case tree.File:
			for _, c := range n.Content {
				if _, ok, err := t.e.db.Blob(t.id, index.BlobID(c)); err != nil || !ok {
					problem("tree %x: content blob %x is not indexed", id[:8], c[:8])
				}
			}
		}
	}
}
