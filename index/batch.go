package index

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Batch collects writes that Commit applies atomically and durably. It is
// not safe for concurrent use. Reads through the DB do not see a batch's
// writes until Commit returns nil.
//
// A Batch that failed stays failed: if a Put was given a record that cannot
// be encoded (ErrInvalid), later calls are ignored and Commit returns that
// first error without writing anything. After Commit (successful or not) or
// Close, the batch is finished: Puts are ignored and Commit returns
// ErrClosed. Always call Close (it is safe after Commit).
type Batch struct {
	db  *DB
	b   *pebble.Batch // nil once closed
	err error         // first error; a failed batch stays failed
	n   int           // operations added
	buf []byte        // scratch for encoding values; pebble copies them
}

// NewBatch returns an empty batch.
// On a closed DB the batch is already failed: Commit returns ErrClosed.
func (db *DB) NewBatch() *Batch {
	if db.closed.Load() {
		return &Batch{db: db, err: fmt.Errorf("new batch: %w", ErrClosed)}
	}
	return &Batch{db: db, b: db.db.NewBatch()}
}

// ok reports whether the batch still accepts operations.
func (b *Batch) ok() bool { return b.err == nil && b.b != nil }

func (b *Batch) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *Batch) set(key, value []byte) {
	if !b.ok() {
		return
	}
	if err := b.b.Set(key, value, nil); err != nil {
		b.fail(fmt.Errorf("batch set %x: %w", key, err))
		return
	}
	b.n++
}

func (b *Batch) del(key []byte) {
	if !b.ok() {
		return
	}
	if err := b.b.Delete(key, nil); err != nil {
		b.fail(fmt.Errorf("batch delete %x: %w", key, err))
		return
	}
	b.n++
}

func (b *Batch) delRange(start, end []byte) {
	if !b.ok() {
		return
	}
	if err := b.b.DeleteRange(start, end, nil); err != nil {
		b.fail(fmt.Errorf("batch delete range %x..%x: %w", start, end, err))
		return
	}
	b.n++
}

// PutConfig stores the repository config bytes as given.
func (b *Batch) PutConfig(v []byte) { b.set(configKey, v) }

// PutDrive stores a drive record's bytes as given.
func (b *Batch) PutDrive(id DriveID, v []byte) { b.set(driveKey(id), v) }

// DeleteDrive removes a drive record.
func (b *Batch) DeleteDrive(id DriveID) { b.del(driveKey(id)) }

// PutTenant stores a tenant record under r.ID.
func (b *Batch) PutTenant(r TenantRec) {
	b.buf = appendTenantRec(b.buf[:0], r)
	b.set(tenantKey(r.ID), b.buf)
}

// DeleteTenant removes the tenant record (and with it the wrapped key). It
// does not touch the tenant's blobs, packs or snapshots: see
// DeleteTenantData.
func (b *Batch) DeleteTenant(id TenantID) { b.del(tenantKey(id)) }

// PutBlob stores the location of blob id of tenant t.
func (b *Batch) PutBlob(t TenantID, id BlobID, l BlobLoc) {
	b.buf = appendBlobLoc(b.buf[:0], l)
	b.set(blobKey(t, id), b.buf)
}

// DeleteBlob removes the location of blob id of tenant t.
func (b *Batch) DeleteBlob(t TenantID, id BlobID) { b.del(blobKey(t, id)) }

// PutPack stores pack record p of tenant t under p.ID. len(p.Drives) and
// len(p.Hashes) must equal K+M and K must not be 0, else the batch fails
// with ErrInvalid.
func (b *Batch) PutPack(t TenantID, p PackRec) {
	if !b.ok() {
		return
	}
	if err := checkPackRec(p); err != nil {
		b.fail(err)
		return
	}
	b.buf = appendPackRec(b.buf[:0], p)
	b.set(packKey(t, p.ID), b.buf)
}

// DeletePack removes a pack record of tenant t.
func (b *Batch) DeletePack(t TenantID, id PackID) { b.del(packKey(t, id)) }

// PutSnapshot stores snapshot record s of tenant t under s.ID.
func (b *Batch) PutSnapshot(t TenantID, s SnapshotRec) {
	b.buf = appendSnapshotRec(b.buf[:0], s)
	b.set(snapshotKey(t, s.ID), b.buf)
}

// DeleteSnapshot removes a snapshot record of tenant t.
func (b *Batch) DeleteSnapshot(t TenantID, id SnapshotID) { b.del(snapshotKey(t, id)) }

// PutForgotten records that snapshot f.ID of tenant t was forgotten.
func (b *Batch) PutForgotten(t TenantID, f ForgottenRec) {
	b.buf = appendForgottenRec(b.buf[:0], f)
	b.set(forgottenKey(t, f.ID), b.buf)
}

// PutAudit stores audit entry v under sequence number seq as given.
func (b *Batch) PutAudit(seq uint64, v []byte) { b.set(auditKey(seq), v) }

// PutMeta stores a small metadata value under name (1 to 255 bytes; else
// the batch fails with ErrInvalid).
func (b *Batch) PutMeta(name string, v []byte) {
	if !b.ok() {
		return
	}
	k, err := metaKey(name)
	if err != nil {
		b.fail(err)
		return
	}
	b.set(k, v)
}

// DeleteMeta removes the metadata value stored under name.
func (b *Batch) DeleteMeta(name string) {
	if !b.ok() {
		return
	}
	k, err := metaKey(name)
	if err != nil {
		b.fail(err)
		return
	}
	b.del(k)
}

// DeleteTenantData removes every blob location, pack record, snapshot
// record and forgotten-snapshot record of tenant t with four range deletions
// (four operations in Len). It leaves the tenant record and every other
// tenant's data alone.
func (b *Batch) DeleteTenantData(t TenantID) {
	for _, kind := range []byte{kindBlob, kindPack, kindSnapshot, kindForgot} {
		p := tenantPrefix(kind, t)
		b.delRange(p, successor(p))
	}
}

// Len returns the number of operations added so far, so that callers can
// commit large batches in parts.
func (b *Batch) Len() int { return b.n }

// Commit applies the batch atomically and syncs it (pebble.Sync): when it
// returns nil, every operation is durable; if the process or machine crashes
// at any point, either all of the batch survives or none of it. After
// Commit the batch is finished; call Close.
func (b *Batch) Commit() error {
	if b.err != nil {
		return b.err
	}
	if b.b == nil {
		return fmt.Errorf("commit batch: %w", ErrClosed)
	}
	defer func() {
		if b.err == nil {
			b.err = fmt.Errorf("commit batch: already committed: %w", ErrClosed)
		}
	}()
	if b.db.closed.Load() {
		b.fail(fmt.Errorf("commit batch: %w", ErrClosed))
		return b.err
	}
	if b.db.readOnly {
		b.fail(fmt.Errorf("commit batch: %w", ErrReadOnly))
		return b.err
	}
	if err := b.b.Commit(pebble.Sync); err != nil {
		b.fail(fmt.Errorf("commit batch of %d operations: %w", b.n, wrapPebble(err)))
		return b.err
	}
	return nil
}

// Close releases the batch. It is safe to call more than once and after
// Commit; a batch closed without Commit writes nothing.
func (b *Batch) Close() error {
	if b.b == nil {
		return nil
	}
	err := b.b.Close()
	b.b = nil
	b.buf = nil
	if err != nil {
		return fmt.Errorf("close batch: %w", err)
	}
	return nil
}
