package engine

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"coffer/index"
)

// Snapshot is one backup: when, of what, and the root tree. Its record is
// sealed under the tenant's metadata key; only its random ID is visible.
type Snapshot struct {
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Host     string    `json:"hostname"`
	Paths    []string  `json:"paths"`
	Tags     []string  `json:"tags,omitempty"`
	Excludes []string  `json:"excludes,omitempty"`
	Username string    `json:"username,omitempty"`
	Tree     string    `json:"tree"`
	Parent   string    `json:"parent,omitempty"`
	Program  string    `json:"program_version"`
	// Original is the snapshot this one was rewritten from (coffer
	// rewrite); empty for a backup.
	Original string        `json:"original,omitempty"`
	Stats    SnapshotStats `json:"summary"`
}

// SnapshotStats summarise what a backup did.
type SnapshotStats struct {
	Start          time.Time `json:"backup_start"`
	End            time.Time `json:"backup_end"`
	Files          int64     `json:"total_files_processed"`
	Dirs           int64     `json:"dirs_processed"`
	Bytes          int64     `json:"total_bytes_processed"`
	FilesUnchanged int64     `json:"files_unmodified"`
	FilesFailed    int64     `json:"files_failed,omitempty"`
	BlobsAdded     int64     `json:"data_blobs_added"`
	BytesAdded     int64     `json:"data_added"`        // plaintext bytes of new blobs
	BytesStored    int64     `json:"data_added_packed"` // sealed bytes of new blobs (before parity)
}

// ProgramVersion is recorded in every snapshot.
const ProgramVersion = "coffer 0.1.0"

func snapshotRecordName(tenant [16]byte, id [16]byte) string {
	return "t/" + hex.EncodeToString(tenant[:]) + "/s/" + hex.EncodeToString(id[:])
}

func (t *Tenant) openSnapshot(rec index.SnapshotRec) (*Snapshot, error) {
	r := &record{Kind: recSnapshot, Version: rec.Version, Body: rec.Sealed}
	body, err := openRecord(&t.keys.meta, r, t.id, snapshotRecordName(t.id, rec.ID))
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot %x: %v", ErrDamage, rec.ID[:4], err)
	}
	var s Snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("%w: snapshot %x is unreadable", ErrCorrupt, rec.ID[:4])
	}
	s.ID = hex.EncodeToString(rec.ID[:])
	return &s, nil
}

// commitAudited saves snapshot s (everything it references indexed) with
// its audit entry "backup", whose detail is "snapshot=ID", then extra, then
// the counts. The entry is written first: no snapshot is ever saved without
// its entry (audit --verify checks that), and a backup whose entry cannot be
// written saves nothing (its packs stay until prune). If the snapshot then
// cannot be saved, a second entry records the failure with "committed=0".
// A crash between the two leaves an entry naming a snapshot that does not
// exist, like a snapshot forgotten since. outcome is nil or
// ErrPartialBackup. On success s.ID is the new snapshot's ID.
//
// It returns whether the outcome is audited; false (with ctx's error) when
// ctx ended before the entry was written, for the caller to audit.
func (t *Tenant) commitAudited(ctx context.Context, s *Snapshot, outcome error, extra string) (bool, error) {
	var id [16]byte
	randomBytes(id[:])
	sid := hex.EncodeToString(id[:])
	detail := fmt.Sprintf("snapshot=%s%s files=%d bytes=%d added=%d", sid, extra, s.Stats.Files, s.Stats.Bytes, s.Stats.BytesStored)
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := t.e.logAudit(ctx, "backup", t.id, outcome, detail); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return true, fmt.Errorf("the backup was not saved, as its audit entry could not be written (its packs stay until prune): %w", err)
	}
	if err := t.commitSnapshot(ctx, s, id); err != nil {
		if aerr := t.e.logAudit(context.WithoutCancel(ctx), "backup", t.id, err, fmt.Sprintf("snapshot=%s%s committed=0", sid, extra)); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return true, err
	}
	return true, nil
}

// commitSnapshot records a snapshot under the new ID id: sealed record
// durable on the drives first, then the index. Everything it references is
// indexed before this is called.
func (t *Tenant) commitSnapshot(ctx context.Context, s *Snapshot, id [16]byte) error {
	s.ID = ""
	body, err := json.Marshal(s)
	if err != nil {
		return err
	}
	name := snapshotRecordName(t.id, id)
	rec := sealRecord(&t.keys.meta, recSnapshot, 0, 1, t.id, name, body)
	if err := t.e.rp().PutRecord(ctx, name, rec); err != nil {
		// Below its quorum the write failed: the copies that did reach a
		// drive (the name is new) are removed, best effort, so that an index
		// rebuild does not bring back a backup that was reported as failed.
		_ = t.e.rp().DeleteRecord(context.WithoutCancel(ctx), name)
		return fmt.Errorf("write snapshot record to drives: %w", err)
	}
	b := t.e.db.NewBatch()
	defer b.Close()
	b.PutSnapshot(t.id, index.SnapshotRec{ID: id, Version: 1, Sealed: rec[recHeaderLen:]})
	if err := b.Commit(); err != nil {
		return fmt.Errorf("index snapshot: %w", err)
	}
	s.ID = hex.EncodeToString(id[:])
	return nil
}

// Snapshots lists the tenant's snapshots, oldest first.
func (t *Tenant) Snapshots(ctx context.Context) ([]*Snapshot, error) {
	var out []*Snapshot
	err := t.e.db.Snapshots(t.id, func(rec index.SnapshotRec) error {
		s, err := t.openSnapshot(rec)
		if err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// FindSnapshot resolves a snapshot reference: a full ID, a unique prefix of
// at least 4 hex digits, or "latest".
func (t *Tenant) FindSnapshot(ctx context.Context, ref string) (*Snapshot, error) {
	all, err := t.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	if ref == "latest" && len(all) == 0 {
		return nil, fmt.Errorf("%w: tenant %q has no snapshots", ErrSnapshotNotFound, t.name)
	}
	return resolveSnapshot(all, ref)
}

// sameStrings reports whether a and b hold the same strings in any order.
func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x := append([]string(nil), a...)
	y := append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}
