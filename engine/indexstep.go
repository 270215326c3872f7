package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"coffer/index"
	"coffer/repo"
)

// ErrIndexBehind: the drives hold a record that the index does not know (a
// snapshot or tenant record written to the drives, whose index batch was
// lost: a torn WAL, a rolled-back MANIFEST, a lost table). Nothing is lost
// while the drives hold it: coffer index rebuild brings the index in step.
// Until then, nothing that decides from the index what is unneeded (scrub's
// removal of unindexed shards, prune, forget, key rotation) may run.
var ErrIndexBehind = errors.New("engine: the index is behind the drives")

// IndexDamaged reports whether err comes from a damaged index database
// (pebble corruption, a missing or truncated table, an undecodable value),
// which coffer index rebuild repairs.
func IndexDamaged(err error) bool { return errors.Is(err, index.ErrCorrupt) }

// maxUnknownRecords bounds the record names the index does not know that one
// check reads from the drives. Names past it are taken as live: the check
// errs on the side of "behind", which a rebuild clears.
const maxUnknownRecords = 1 << 16

// The index in step with the drives (docs/design.md, "The index in step
// with the drives"). Every record is written to the drives before the
// index, so the index can lag the drives but never lead them. Record names
// serve as the generation: the index knows every snapshot record name of a
// tenant, as live (index.SnapshotRec) or forgotten (index.ForgottenRec), and
// every tenant record name (live or shredded). A name on the drives that the
// index does not know, whose newest valid copy is a live record, shows an
// index behind the drives. A name whose copies all fail to authenticate is
// ignored, as a rebuild ignores it, so a rebuild always clears the finding.

// CheckSnapshotRecords compares the tenant's snapshot records on the drives
// with the index and brings the index up to date where the drives prove it
// safe: a live snapshot record the index lacks whose every tree and content
// blob the index locates (a backup stopped between writing its record and
// indexing it) is added to the index, and a tombstone the index lacks (an
// index older than forgotten-snapshot records) is recorded as forgotten. It
// returns an error wrapping ErrIndexBehind when a snapshot on the drives
// needs what the index does not locate, nil when the index is in step (or a
// writer of the tenant is running and may be indexing a snapshot right now),
// and another error when the drives or the index cannot be read.
func (t *Tenant) CheckSnapshotRecords(ctx context.Context) error {
	lag, err := t.snapshotLag(ctx, lagMode{write: true})
	if err != nil {
		return err
	}
	return lag.err(t)
}

// requireInStep is CheckSnapshotRecords for a caller that holds the tenant's
// lock: the writers of the tenant (backup, forget, prune) call it before they
// decide anything from the index.
func (t *Tenant) requireInStep(ctx context.Context) error {
	lag, err := t.snapshotLag(ctx, lagMode{held: true, write: true})
	if err != nil {
		return err
	}
	return lag.err(t)
}

// lagMode says how snapshotLag runs.
type lagMode struct {
	held  bool // the caller holds the tenant's lock: no writer of it is half-way
	write bool // add complete snapshots and tombstones the index lacks to the index
}

// snapshotLag is what the drives hold of a tenant that its index lacks.
type snapshotLag struct {
	complete []index.SnapshotID // live records whose trees and content are indexed
	behind   []index.SnapshotID // live records that need what the index does not locate
	why      string             // why the first of behind is incomplete
	// busy: a writer of the tenant holds its lock, so the names the index
	// lacks may be indexed any moment; nothing was decided.
	busy bool
}

// err returns nil, or the ErrIndexBehind sentence naming the snapshots.
func (l *snapshotLag) err(t *Tenant) error {
	if l == nil || len(l.behind) == 0 {
		return nil
	}
	return fmt.Errorf("%w: the drives hold %d snapshot record(s) of tenant %s that the index lacks (%s; %s); run coffer index rebuild",
		ErrIndexBehind, len(l.behind), t.ID()[:8], shortIDs(l.behind), l.why)
}

// snapshotLag compares the tenant's snapshot records on the drives with the
// index (see CheckSnapshotRecords). It returns nil when the index knows every
// name. Without m.held it takes the tenant's lock only if it is free, and
// returns a lag marked busy, deciding nothing, when it is not: a backup
// writes its snapshot record to the drives, then to the index, holding that
// lock, so with the lock free what is still unindexed will stay so.
func (t *Tenant) snapshotLag(ctx context.Context, m lagMode) (*snapshotLag, error) {
	unknown, err := t.unknownSnapshotNames(ctx)
	if err != nil || len(unknown) == 0 {
		return nil, err
	}
	live, forgotten, err := t.readUnknownSnapshots(ctx, unknown)
	if err != nil {
		return nil, err
	}
	if !m.held {
		unlock, ok := t.e.tryLockTenant(t.id)
		if !ok {
			return &snapshotLag{busy: true}, nil
		}
		defer unlock()
	}
	if m.write {
		if err := t.noteForgotten(forgotten); err != nil {
			return nil, err
		}
	}
	lag, err := t.classifyLive(ctx, live)
	if err != nil || !m.write || len(lag.complete) == 0 {
		return lag, err
	}
	return lag, t.adopt(live, lag)
}

// unknownSnapshotNames lists the tenant's snapshot record names on the
// drives that the index knows neither as live nor as forgotten. Names that
// are not snapshot IDs are skipped (a rebuild skips them too).
func (t *Tenant) unknownSnapshotNames(ctx context.Context) ([][16]byte, error) {
	prefix := "t/" + t.container() + "/s/"
	var unknown [][16]byte
	err := t.e.rp().ListRecords(ctx, prefix, func(name string) error {
		var id [16]byte
		if decodeHexInto(id[:], strings.TrimPrefix(name, prefix)) != nil {
			return nil
		}
		known, err := t.knowsSnapshot(id)
		if err != nil || known {
			return err
		}
		unknown = append(unknown, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the snapshot records of tenant %s on the drives: %w", t.ID()[:8], err)
	}
	return unknown, nil
}

// knowsSnapshot reports whether the index holds snapshot id as live or as
// forgotten.
func (t *Tenant) knowsSnapshot(id [16]byte) (bool, error) {
	_, err := t.e.db.Snapshot(index.TenantID(t.id), id)
	if !errors.Is(err, index.ErrNotFound) {
		return err == nil, err
	}
	_, err = t.e.db.Forgotten(index.TenantID(t.id), id)
	if errors.Is(err, index.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// readUnknownSnapshots reads the newest valid copy of each record: live
// ones and tombstones are returned apart; names without a valid copy are
// dropped. Past maxUnknownRecords, names are taken as live and unreadable.
func (t *Tenant) readUnknownSnapshots(ctx context.Context, ids [][16]byte) (live []index.SnapshotRec, forgotten []index.ForgottenRec, err error) {
	for i, id := range ids {
		if i >= maxUnknownRecords {
			for _, id := range ids[i:] {
				live = append(live, index.SnapshotRec{ID: id})
			}
			return live, forgotten, nil
		}
		name := snapshotRecordName(t.id, id)
		best, err := t.e.newestOnDrives(ctx, name, recSnapshot, []*[KeySize]byte{&t.keys.meta}, t.id)
		switch {
		case err != nil:
			return nil, nil, err
		case best == nil:
		case best.tombstone():
			forgotten = append(forgotten, index.ForgottenRec{ID: id, Version: best.Version})
		default:
			live = append(live, index.SnapshotRec{ID: id, Version: best.Version, Sealed: best.Body})
		}
	}
	return live, forgotten, nil
}

// classifyLive sorts the live records that the index still lacks into
// complete ones (every tree and content blob they reach is indexed, in an
// indexed pack) and the others.
func (t *Tenant) classifyLive(ctx context.Context, live []index.SnapshotRec) (*snapshotLag, error) {
	lag := &snapshotLag{}
	marks := newMemMarks()
	for _, rec := range live {
		known, err := t.knowsSnapshot(rec.ID)
		if err != nil {
			return nil, err
		}
		if known {
			continue // indexed meanwhile
		}
		why, err := t.snapshotIndexed(ctx, rec, marks)
		if err != nil {
			return nil, err
		}
		if why == "" {
			lag.complete = append(lag.complete, rec.ID)
			continue
		}
		if len(lag.behind) == 0 {
			lag.why = why
		}
		lag.behind = append(lag.behind, rec.ID)
	}
	return lag, nil
}

// snapshotIndexed returns "" when everything snapshot rec reaches is
// indexed, else why not.
func (t *Tenant) snapshotIndexed(ctx context.Context, rec index.SnapshotRec, marks treeMarks) (string, error) {
	if rec.Sealed == nil {
		return "too many records to read", nil
	}
	s, err := t.openSnapshot(rec)
	if err != nil {
		return err.Error(), nil
	}
	root, err := parseTreeID(s.Tree)
	if err != nil {
		return err.Error(), nil
	}
	return t.treeIndexed(ctx, root, marks)
}

// adopt adds the complete records to the index in one synced batch: the
// index batch their backup did not commit.
func (t *Tenant) adopt(live []index.SnapshotRec, lag *snapshotLag) error {
	complete := make(map[index.SnapshotID]bool, len(lag.complete))
	for _, id := range lag.complete {
		complete[id] = true
	}
	b := t.e.db.NewBatch()
	defer b.Close()
	for _, rec := range live {
		if complete[rec.ID] {
			b.PutSnapshot(index.TenantID(t.id), rec)
		}
	}
	if err := b.Commit(); err != nil {
		return fmt.Errorf("index snapshots found on the drives: %w", err)
	}
	return nil
}

// noteForgotten records, in one synced batch, snapshots that the drives hold
// as tombstones and the index did not know.
func (t *Tenant) noteForgotten(fs []index.ForgottenRec) error {
	if len(fs) == 0 {
		return nil
	}
	b := t.e.db.NewBatch()
	defer b.Close()
	for _, f := range fs {
		b.PutForgotten(index.TenantID(t.id), f)
	}
	if err := b.Commit(); err != nil {
		return fmt.Errorf("record forgotten snapshots in the index: %w", err)
	}
	return nil
}

// CheckTenantRecords compares the tenant records on the drives with the
// index: it returns an error wrapping ErrIndexBehind when the drives hold a
// valid tenant record (live or shredded) whose tenant the index does not
// know, nil when the index knows every one (or a tenant change is running),
// and another error when the drives or the index cannot be read.
func (e *Engine) CheckTenantRecords(ctx context.Context) error {
	return e.checkTenantRecords(ctx, false)
}

// checkTenantRecords is CheckTenantRecords; held says the caller holds the
// tenantAdmin lock (then no tenant change can be half-way).
func (e *Engine) checkTenantRecords(ctx context.Context, held bool) error {
	unknown, err := e.unknownTenantNames(ctx)
	if err != nil || len(unknown) == 0 {
		return err
	}
	valid, err := e.validTenantRecords(ctx, unknown)
	if err != nil || len(valid) == 0 {
		return err
	}
	if !held {
		unlock, ok := e.tryLockTenant(tenantAdmin)
		if !ok {
			return nil
		}
		defer unlock()
	}
	var missing [][16]byte
	for _, id := range valid {
		if _, err := e.db.Tenant(index.TenantID(id)); errors.Is(err, index.ErrNotFound) {
			missing = append(missing, id)
		} else if err != nil {
			return err
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: the drives hold %d tenant record(s) that the index lacks (tenant %s); run coffer index rebuild",
		ErrIndexBehind, len(missing), shortIDs(missing))
}

// tenantsCurrent returns an error wrapping ErrIndexBehind when the drives
// hold a newer live version of one of the tenant records than the index
// entries (an unlock the index lost, say): a shred must not act on an old
// state.
func (e *Engine) tenantsCurrent(ctx context.Context, entries []*tenantEntry) error {
	keys := e.adminKeys()
	for _, te := range entries {
		id := te.rec.ID
		best, err := e.newestOnDrives(ctx, tenantRecordName(id), recTenant, keys, id)
		if err != nil {
			return err
		}
		// A newer tombstone is this shred's own, interrupted: finish it.
		if best != nil && best.Version > te.rec.Version && !best.tombstone() {
			return fmt.Errorf("%w: the drives hold version %d of the record of tenant %x, the index version %d; run coffer index rebuild",
				ErrIndexBehind, best.Version, id[:4], te.rec.Version)
		}
	}
	return nil
}

// adminKeys returns the keys that seal tenant records: the current epoch's
// and, during a rotation, the next one's.
func (e *Engine) adminKeys() []*[KeySize]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	var keys []*[KeySize]byte
	for _, mk := range []*masterKey{e.mk, e.mkNext} {
		if mk != nil {
			keys = append(keys, &mk.admin)
		}
	}
	return keys
}

// unknownTenantNames lists the tenant IDs of the tenant records on the
// drives that the index does not hold.
func (e *Engine) unknownTenantNames(ctx context.Context) ([][16]byte, error) {
	const prefix = "r/tenants/"
	var unknown [][16]byte
	err := e.rp().ListRecords(ctx, prefix, func(name string) error {
		var id [16]byte
		if decodeHexInto(id[:], strings.TrimPrefix(name, prefix)) != nil {
			return nil
		}
		_, err := e.db.Tenant(index.TenantID(id))
		switch {
		case errors.Is(err, index.ErrNotFound):
			unknown = append(unknown, id)
		case err != nil:
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the tenant records on the drives: %w", err)
	}
	return unknown, nil
}

// validTenantRecords returns the IDs whose tenant record has a copy that
// authenticates under the master key (current epoch, or the next one during
// a rotation). Past maxUnknownRecords, IDs are taken as valid unread.
func (e *Engine) validTenantRecords(ctx context.Context, ids [][16]byte) ([][16]byte, error) {
	keys := e.adminKeys()
	var valid [][16]byte
	for i, id := range ids {
		if i >= maxUnknownRecords {
			return append(valid, ids[i:]...), nil
		}
		best, err := e.newestOnDrives(ctx, tenantRecordName(id), recTenant, keys, id)
		if err != nil {
			return nil, err
		}
		if best != nil {
			valid = append(valid, id)
		}
	}
	return valid, nil
}

// newestOnDrives reads every copy of a sealed record from the drives and
// returns the newest valid one (newestValidRecord), or nil when no copy is
// found or none is valid.
func (e *Engine) newestOnDrives(ctx context.Context, name string, kind byte, keys []*[KeySize]byte, owner [16]byte) (*record, error) {
	copies, err := e.rp().GetRecord(ctx, name)
	if errors.Is(err, repo.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s from the drives: %w", name, err)
	}
	best, _ := newestValidRecord(copies, kind, keys, owner, name, nil)
	return best, nil
}

// newestValidRecord picks, among the copies of the sealed record name, the
// highest version that decodes, has the kind, and authenticates under one of
// keys and owner; at equal versions a tombstone wins. bad, if not nil, is
// called for every copy that fails. It returns nil when no copy is valid.
func newestValidRecord(copies [][]byte, kind byte, keys []*[KeySize]byte, owner [16]byte, name string, bad func(error)) (best *record, body []byte) {
	for _, c := range copies {
		r, err := decodeRecord(c)
		if err == nil && r.Kind != kind {
			err = fmt.Errorf("%w: record kind %d, want %d", ErrCorrupt, r.Kind, kind)
		}
		var b []byte
		if err == nil {
			for _, key := range keys {
				if b, err = openRecord(key, r, owner, name); err == nil {
					break
				}
			}
		}
		if err != nil {
			if bad != nil {
				bad(err)
			}
			continue
		}
		if best == nil || r.Version > best.Version || (r.Version == best.Version && r.tombstone() && !best.tombstone()) {
			best, body = r, b
		}
	}
	return best, body
}

// shortIDs names up to four IDs by their first 8 hex digits.
func shortIDs[ID ~[16]byte](ids []ID) string {
	var parts []string
	for i, id := range ids {
		if i == 4 {
			parts = append(parts, fmt.Sprintf("and %d more", len(ids)-4))
			break
		}
		parts = append(parts, fmt.Sprintf("%x", id[:4]))
	}
	return strings.Join(parts, ", ")
}
