package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"coffer/engine/policy"
	"coffer/index"
)

// ForgetOptions configure Forget.
type ForgetOptions struct {
	// Policy, when not empty, decides which snapshots to keep, separately
	// for each group of snapshots with the same host and the same paths
	// (policy.ApplyGrouped); every snapshot it does not keep is forgotten.
	// It is used only when no snapshot IDs are given.
	Policy policy.Policy
	// DryRun decides and reports, and changes nothing.
	DryRun bool
}

// ForgetItem is one snapshot in a ForgetReport.
type ForgetItem struct {
	ID    string    `json:"id"`
	Time  time.Time `json:"time"`
	Host  string    `json:"hostname"`
	Paths []string  `json:"paths"`
	Tags  []string  `json:"tags,omitempty"`
	// Reasons says which rules keep the snapshot (kept snapshots only).
	Reasons []string `json:"reasons,omitempty"`
}

// ForgetGroup is the verdict of the policy on one (host, paths) group,
// newest snapshot first.
type ForgetGroup struct {
	Host   string       `json:"host"`
	Paths  []string     `json:"paths"`
	Keep   []ForgetItem `json:"keep"`
	Remove []ForgetItem `json:"remove"`
}

// ForgetReport says what Forget removed (or, with DryRun, would remove) and,
// for a policy, why each kept snapshot is kept.
type ForgetReport struct {
	DryRun bool `json:"dry_run"`
	// Policy describes the policy applied ("" when snapshots were named).
	Policy string `json:"policy,omitempty"`
	// Groups holds the policy's verdict per (host, paths) group; empty when
	// snapshots were named.
	Groups []ForgetGroup `json:"groups"`
	// Removed lists the snapshots forgotten (with DryRun: to be forgotten),
	// oldest first.
	Removed []ForgetItem `json:"removed"`
	// Kept counts the tenant's snapshots that remain.
	Kept int `json:"kept"`
}

// snapshotTombstone is the sealed body of a forgotten snapshot's record.
// It holds the snapshot's ID and when it was forgotten, nothing else:
// a tombstone never carries host names, paths or tags.
type snapshotTombstone struct {
	ID        string    `json:"id"`
	Forgotten time.Time `json:"forgotten_at"`
}

// Forget removes snapshots of the tenant: those named by ids (full IDs,
// unique prefixes of at least 4 hex digits, or "latest"), or, when ids is
// empty, every snapshot that o.Policy does not keep, deciding per group of
// (host, paths). Giving both, or neither, is an error wrapping ErrInvalid;
// so is a policy that fails Validate.
//
// Forgetting a snapshot writes a sealed tombstone of its record (version +
// 1, tombstone flag) durably to the drives first, then deletes the snapshot
// from the index in one synced batch. So a drive that was offline cannot
// bring the snapshot back, and an index rebuild keeps it forgotten. A crash
// in between leaves the snapshot listed by the index with a tombstone on the
// drives: prune still treats it as live (nothing it needs is deleted) and
// running forget again finishes the job. Forget deletes no data: prune does.
//
// The decision uses only the snapshots' recorded times (with their recorded
// UTC offsets), never the clock. Forget holds the tenant's lock, so it waits
// for a running backup or prune of the tenant. With o.DryRun nothing is
// written. Returns the report; on error after some snapshots were forgotten,
// the report lists those too.
func (t *Tenant) Forget(ctx context.Context, ids []string, o ForgetOptions) (rep *ForgetReport, err error) {
	if len(ids) > 0 && !o.Policy.Empty() {
		return nil, invalidf("give snapshot IDs or a retention policy, not both")
	}
	if len(ids) == 0 && o.Policy.Empty() {
		return nil, invalidf("nothing to forget: give snapshot IDs or a retention policy (--keep-*)")
	}
	if err := o.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	unlock := t.e.lockTenant(t.id)
	defer unlock()
	if !o.DryRun {
		defer func() {
			detail := ""
			if rep != nil {
				detail = forgetAuditDetail(rep)
			}
			err = t.e.audited(ctx, "forget", t.id, detail, err)
		}()
	}
	// A policy decided on a lagging snapshot list could forget the wrong
	// snapshots.
	if err := t.requireInStep(ctx); err != nil {
		return nil, err
	}

	all, versions, err := t.snapshotsWithVersions(ctx)
	if err != nil {
		return nil, err
	}
	rep = &ForgetReport{DryRun: o.DryRun, Groups: []ForgetGroup{}, Removed: []ForgetItem{}}
	var remove []*Snapshot
	if len(ids) > 0 {
		remove, err = resolveSnapshots(all, ids)
		if err != nil {
			return nil, err
		}
	} else {
		rep.Policy = o.Policy.String()
		remove = t.applyPolicy(all, o.Policy, rep)
	}
	sortSnapshots(remove)
	for _, s := range remove {
		rep.Removed = append(rep.Removed, forgetItem(s, nil))
	}
	rep.Kept = len(all) - len(remove)
	if o.DryRun || len(remove) == 0 {
		return rep, nil
	}

	done, errs := t.forgetSnapshots(ctx, remove, versions)
	if len(errs) > 0 {
		// Report what was really forgotten.
		rep.Removed = rep.Removed[:0]
		for _, s := range done {
			rep.Removed = append(rep.Removed, forgetItem(s, nil))
		}
		rep.Kept = len(all) - len(done)
		return rep, fmt.Errorf("forget: %d of %d snapshots forgotten: %w", len(done), len(remove), errors.Join(errs...))
	}
	return rep, nil
}

// forgetSnapshots forgets remove (the caller holds the tenant's lock):
// tombstones on the drives first, then, for those written, the index in
// one synced batch; the index forgets only what the drives already hold as
// forgotten. versions holds each snapshot's record version. It returns the
// snapshots forgotten and the errors met.
func (t *Tenant) forgetSnapshots(ctx context.Context, remove []*Snapshot, versions map[string]uint64) ([]*Snapshot, []error) {
	var done []*Snapshot
	var errs []error
	for _, s := range remove {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := t.writeTombstone(ctx, s.ID, versions[s.ID]); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, s)
	}
	if len(done) > 0 {
		b := t.e.db.NewBatch()
		for _, s := range done {
			var sid index.SnapshotID
			_ = decodeHexInto(sid[:], s.ID)
			b.DeleteSnapshot(t.id, sid)
			b.PutForgotten(t.id, index.ForgottenRec{ID: sid, Version: versions[s.ID] + 1})
		}
		cerr := b.Commit()
		b.Close()
		if cerr != nil {
			done = nil
			errs = append(errs, fmt.Errorf("remove forgotten snapshots from the index: %w", cerr))
		}
	}
	return done, errs
}

// writeTombstone writes the sealed tombstone of snapshot id (hex), version
// version+1, to the record's drives. It is durable when it returns nil.
func (t *Tenant) writeTombstone(ctx context.Context, id string, version uint64) error {
	var sid [16]byte
	if err := decodeHexInto(sid[:], id); err != nil {
		return fmt.Errorf("%w: snapshot ID %q", ErrCorrupt, id)
	}
	body, err := json.Marshal(snapshotTombstone{ID: id, Forgotten: t.e.now().UTC().Truncate(time.Second)})
	if err != nil {
		return err
	}
	name := snapshotRecordName(t.id, sid)
	rec := sealRecord(&t.keys.meta, recSnapshot, recFlagTombstone, version+1, t.id, name, body)
	if err := t.e.rp().PutRecord(ctx, name, rec); err != nil {
		return fmt.Errorf("write tombstone of snapshot %s to drives: %w", id[:8], err)
	}
	return nil
}

// snapshotsWithVersions lists the tenant's snapshots, oldest first, and the
// record version of each (by ID).
func (t *Tenant) snapshotsWithVersions(ctx context.Context) ([]*Snapshot, map[string]uint64, error) {
	var all []*Snapshot
	versions := map[string]uint64{}
	err := t.e.db.Snapshots(t.id, func(rec index.SnapshotRec) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := t.openSnapshot(rec)
		if err != nil {
			return err
		}
		all = append(all, s)
		versions[s.ID] = rec.Version
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	sortSnapshots(all)
	return all, versions, nil
}

// sortSnapshots orders snapshots oldest first, as Snapshots does.
func sortSnapshots(ss []*Snapshot) {
	slices.SortFunc(ss, func(a, b *Snapshot) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// minSnapshotPrefix is the shortest snapshot ID prefix accepted.
const minSnapshotPrefix = 4

// resolveSnapshots resolves references (IDs, unique prefixes of at least
// minSnapshotPrefix hex digits, "latest") against all (oldest first),
// without duplicates.
func resolveSnapshots(all []*Snapshot, refs []string) ([]*Snapshot, error) {
	seen := map[string]bool{}
	var out []*Snapshot
	for _, ref := range refs {
		found, err := resolveSnapshot(all, ref)
		if err != nil {
			return nil, err
		}
		if !seen[found.ID] {
			seen[found.ID] = true
			out = append(out, found)
		}
	}
	return out, nil
}

// resolveSnapshot resolves one reference against all (oldest first).
func resolveSnapshot(all []*Snapshot, ref string) (*Snapshot, error) {
	r := strings.ToLower(strings.TrimSpace(ref))
	if r == "latest" {
		if len(all) == 0 {
			return nil, fmt.Errorf("%w: the tenant has no snapshots", ErrSnapshotNotFound)
		}
		return all[len(all)-1], nil
	}
	if len(r) < minSnapshotPrefix || strings.Trim(r, "0123456789abcdef") != "" {
		return nil, invalidf("snapshot %q: give a full ID, a prefix of at least %d hex digits, or latest", ref, minSnapshotPrefix)
	}
	var found *Snapshot
	for _, s := range all {
		if strings.HasPrefix(s.ID, r) {
			if found != nil {
				return nil, fmt.Errorf("%w: %q matches %s and %s", ErrAmbiguous, ref, found.ID[:8], s.ID[:8])
			}
			found = s
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %q (see coffer snapshots)", ErrSnapshotNotFound, ref)
	}
	return found, nil
}

// applyPolicy applies p per (host, paths) group, fills rep.Groups and
// returns the snapshots p does not keep.
func (t *Tenant) applyPolicy(all []*Snapshot, p policy.Policy, rep *ForgetReport) []*Snapshot {
	byID := make(map[string]*Snapshot, len(all))
	in := make([]policy.Snapshot, 0, len(all))
	for _, s := range all {
		byID[s.ID] = s
		// s.Time carries the UTC offset recorded at backup time (RFC 3339
		// in the sealed record): the policy's days and weeks use it.
		in = append(in, policy.Snapshot{ID: s.ID, Time: s.Time, Host: s.Host, Paths: s.Paths, Tags: s.Tags})
	}
	var remove []*Snapshot
	for _, g := range policy.ApplyGrouped(in, p) {
		fg := ForgetGroup{Host: g.Host, Paths: g.Paths, Keep: []ForgetItem{}, Remove: []ForgetItem{}}
		for _, d := range g.Decisions {
			s := byID[d.Snapshot.ID]
			if d.Keep {
				fg.Keep = append(fg.Keep, forgetItem(s, d.Reasons))
			} else {
				fg.Remove = append(fg.Remove, forgetItem(s, nil))
				remove = append(remove, s)
			}
		}
		rep.Groups = append(rep.Groups, fg)
	}
	return remove
}

func forgetItem(s *Snapshot, reasons []string) ForgetItem {
	return ForgetItem{ID: s.ID, Time: s.Time, Host: s.Host, Paths: s.Paths, Tags: s.Tags, Reasons: reasons}
}

// maxAuditIDs bounds the snapshot IDs named in one forget audit entry (the
// detail holds at most 1024 bytes); the rest are counted.
const maxAuditIDs = 24

// forgetAuditDetail names the forgotten snapshots by ID: numbers and IDs
// only.
func forgetAuditDetail(rep *ForgetReport) string {
	ids := make([]string, len(rep.Removed))
	for i, r := range rep.Removed {
		ids[i] = r.ID
	}
	return idsDetail(fmt.Sprintf("forgotten=%d kept=%d", len(rep.Removed), rep.Kept), ids)
}

// idsDetail appends up to maxAuditIDs snapshot IDs (hex) to an audit
// detail, counting the rest as omitted.
func idsDetail(d string, ids []string) string {
	var ok []string
	for _, id := range ids {
		if len(ok) == maxAuditIDs {
			break
		}
		if decodeHexInto(make([]byte, len(id)/2), id) == nil {
			ok = append(ok, id)
		}
	}
	if len(ok) > 0 {
		d += " snapshots=" + strings.Join(ok, ":")
	}
	if n := len(ids) - len(ok); n > 0 {
		d += fmt.Sprintf(" omitted=%d", n)
	}
	return d
}
