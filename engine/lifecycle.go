package engine

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"coffer/index"
	"coffer/repo"
)

// audited appends an audit entry for an action that ended with err and
// returns err, or, if the entry cannot be written, an error saying so.
//
// An action that succeeded but could not be audited gives an error wrapping
// ErrUnaudited (the CLI exits 1): no action reports success without its
// entry. (An entry is written when its record write succeeds; the drives
// decide when that is, see repo.PutRecord.)
func (e *Engine) audited(ctx context.Context, action string, tenant [16]byte, detail string, err error) error {
	if aerr := e.logAudit(context.WithoutCancel(ctx), action, tenant, err, detail); aerr != nil {
		if err != nil {
			return errors.Join(err, aerr)
		}
		return &unauditedError{fmt.Errorf("%s was done, but %w", action, aerr)}
	}
	return err
}

// unauditedError is an action done without its audit entry.
type unauditedError struct{ err error }

func (u *unauditedError) Error() string   { return u.err.Error() }
func (u *unauditedError) Unwrap() []error { return []error{ErrUnaudited, u.err} }

// LockTenant locks a tenant: no data in or out (every data command fails
// with ErrTenantLocked) until UnlockTenant, and after the grace period a
// sweep shreds it. The lock time is recorded.
func (e *Engine) LockTenant(ctx context.Context, name string) (*TenantInfo, error) {
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	te, err := e.findTenant(name)
	if err != nil {
		return nil, err
	}
	if te.meta.State == StateLocked {
		return nil, invalidf("tenant %q is already locked (since %s)", name, te.meta.LockedAt.UTC().Format(time.RFC3339))
	}
	// The lock time starts the grace period: it must agree with the
	// records (docs/design.md, chapter 9, "Time"). Checked before the
	// tenant's sessions are cut, and again once its backups have ended.
	check := func() (*evidence, time.Time, error) {
		ev, err := e.readEvidence(ctx, nil)
		if err != nil {
			return nil, time.Time{}, err
		}
		now := e.now().UTC().Truncate(time.Second)
		if err := ev.checkLockClock(now, te.meta.Created, e.grace()); err != nil {
			return nil, time.Time{}, fmt.Errorf("cannot lock tenant %q: %w", name, err)
		}
		return ev, now, nil
	}
	if _, _, err := check(); err != nil {
		return nil, err
	}
	// Cut the tenant's remote sessions (an open remote backup holds the
	// tenant's lock), wait for its local backups to finish, then lock.
	e.revoke(Revocation{Tenant: hex.EncodeToString(te.rec.ID[:])})
	unlockT := e.lockTenant(te.rec.ID)
	defer unlockT()
	ev, now, err := check()
	if err != nil {
		return nil, err
	}
	te.meta.State = StateLocked
	te.meta.LockedAt = &now
	te.meta.LockedSeq = ev.lastSeq
	err = e.putTenant(ctx, te.rec.ID, te.rec.Version+1, &te.meta)
	detail := fmt.Sprintf("locked_seq=%d newest_record=%d", ev.lastSeq, unixOrZero(ev.last))
	if err = e.audited(ctx, "tenant.lock", te.rec.ID, detail, err); err != nil {
		return nil, err
	}
	e.emit(Event{Kind: EventTenantLocked, Severity: SevNotice, TenantID: hex.EncodeToString(te.rec.ID[:]), Tenant: name})
	return e.info(te), nil
}

// UnlockTenant restores access to a locked tenant within its grace period;
// nothing is lost. After the grace period the tenant is due for deletion and
// cannot be unlocked.
func (e *Engine) UnlockTenant(ctx context.Context, name string) (*TenantInfo, error) {
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	te, err := e.findTenant(name)
	if err != nil {
		return nil, err
	}
	if te.meta.State != StateLocked {
		return nil, invalidf("tenant %q is not locked", name)
	}
	// Refused only when both the clock and the records say the grace
	// period is over: a wrong clock cannot make a tenant look due.
	ev, err := e.readEvidence(ctx, map[uint64]bool{te.meta.LockedSeq: true})
	if err != nil {
		return nil, err
	}
	if due, _ := ev.due(&te.meta, e.now().UTC(), e.grace()); due {
		return nil, invalidf("tenant %q cannot be unlocked: its grace period ended on %s and it is due for deletion", name, te.meta.LockedAt.Add(e.grace()).UTC().Format(time.RFC3339))
	}
	te.meta.State = StateActive
	te.meta.LockedAt = nil
	te.meta.LockedSeq = 0
	err = e.putTenant(ctx, te.rec.ID, te.rec.Version+1, &te.meta)
	if err = e.audited(ctx, "tenant.unlock", te.rec.ID, "", err); err != nil {
		return nil, err
	}
	e.emit(Event{Kind: EventTenantUnlocked, Severity: SevNotice, TenantID: hex.EncodeToString(te.rec.ID[:]), Tenant: name})
	return e.info(te), nil
}

// TenantUpdate changes a tenant's contact or quota; nil fields stay.
type TenantUpdate struct {
	Contact *string
	Quota   *int64
}

// UpdateTenant changes a tenant's contact address or quota.
func (e *Engine) UpdateTenant(ctx context.Context, name string, u TenantUpdate) (*TenantInfo, error) {
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	te, err := e.findTenant(name)
	if err != nil {
		return nil, err
	}
	if u.Contact != nil {
		te.meta.Contact = *u.Contact
	}
	if u.Quota != nil {
		if *u.Quota < 0 {
			return nil, invalidf("quota %d is negative", *u.Quota)
		}
		te.meta.Quota = *u.Quota
	}
	err = e.putTenant(ctx, te.rec.ID, te.rec.Version+1, &te.meta)
	if err = e.audited(ctx, "tenant.set", te.rec.ID, fmt.Sprintf("quota=%d", te.meta.Quota), err); err != nil {
		return nil, err
	}
	return e.info(te), nil
}

func (e *Engine) grace() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return time.Duration(e.cfg.GraceSeconds) * time.Second
}

// ShredReport tells what a shred, sweep or rotation did.
type ShredReport struct {
	Shredded       []string `json:"shredded"` // tenant IDs
	DestroyedEpoch uint32   `json:"destroyed_epoch,omitempty"`
	NewEpoch       uint32   `json:"new_epoch,omitempty"`
	KeyFiles       []string `json:"key_files,omitempty"` // written with the new epoch
	Warnings       []string `json:"warnings,omitempty"`
}

// ShredTenant deletes a tenant irrevocably by crypto-shredding. confirm must
// repeat the name. See docs/design.md, "Crypto-shredding", for the sequence
// and why a crash at any step is safe.
func (e *Engine) ShredTenant(ctx context.Context, name, confirm string) (*ShredReport, error) {
	if confirm != name {
		return nil, invalidf("shredding tenant %q needs --confirm %s", name, name)
	}
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	te, err := e.findTenant(name)
	if errors.Is(err, ErrTenantNotFound) && e.pending() {
		// A shred of this tenant was interrupted after its tombstone: finish.
		return e.finish(ctx, nil)
	}
	if err != nil {
		return nil, err
	}
	rep, err := e.finish(ctx, []*tenantEntry{te})
	if rep != nil {
		e.emitShredded(rep.Shredded, []*tenantEntry{te})
	}
	return rep, err
}

// SweepTenants shreds every locked tenant whose grace period is over at the
// given time and by the evidence of the records (the age of its lock
// measured by the audit log, docs/design.md, chapter 9, "Time"), with one
// master-key rotation for all of them. A tenant that the clock says is due
// but the records do not is kept, with a warning. Every run is audited
// ("tenant.sweep", with at and the newest record's time), so daily sweeps
// keep the records' evidence fresh. Safe to rerun.
func (e *Engine) SweepTenants(ctx context.Context, at time.Time) (rep *ShredReport, err error) {
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	all, err := e.tenantEntries()
	if err != nil {
		return nil, err
	}
	want := map[uint64]bool{}
	for _, te := range all {
		if te.meta.State == StateLocked && te.meta.LockedSeq != 0 {
			want[te.meta.LockedSeq] = true
		}
	}
	ev, err := e.readEvidence(ctx, want)
	if err != nil {
		return nil, err
	}
	grace := e.grace()
	var due []*tenantEntry
	var kept []string
	for _, te := range all {
		ok, why := ev.due(&te.meta, at, grace)
		switch {
		case ok:
			due = append(due, te)
		case why != "":
			kept = append(kept, fmt.Sprintf("tenant %s was kept: %s", hex.EncodeToString(te.rec.ID[:4]), why))
		}
	}
	rep = &ShredReport{}
	if len(due) > 0 || e.pending() {
		if rep, err = e.finish(ctx, due); rep == nil {
			rep = &ShredReport{}
		}
	}
	rep.Warnings = append(rep.Warnings, kept...)
	detail := fmt.Sprintf("at=%d newest_record=%d shredded=%d kept=%d", at.Unix(), unixOrZero(ev.last), len(rep.Shredded), len(kept))
	err = e.audited(ctx, "tenant.sweep", tenantAdmin, detail, err)
	e.emitSweep(rep, due, len(kept), err)
	return rep, err
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// RotateMasterKey moves every tenant key to a new master-key epoch and
// destroys the old one (and finishes an interrupted shred or rotation).
func (e *Engine) RotateMasterKey(ctx context.Context) (*ShredReport, error) {
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	return e.finish(ctx, nil)
}

func (e *Engine) pending() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg.RotatingTo != 0 || len(e.cfg.PendingShred) > 0 || e.mkNext != nil
}

// finish shreds the given tenants and rotates the master key, resuming any
// interrupted shred or rotation. The order (each step durable before the
// next) is what makes a crash at any point safe:
//
//  1. the tenants are added to the config's pending list (drives, index);
//  2. each gets a tombstone record, replacing its wrapped key on the drives
//     (every copy) and in the index;
//  3. the master key rotates: the new epoch is written, with the old, to the
//     key file and every escrow copy; the config names the rotation; every
//     surviving tenant record is re-wrapped and re-sealed under the new
//     epoch; the config switches epochs; the key file and escrows are
//     rewritten with the new epoch only, destroying the old one;
//  4. the tenants' data is deleted from the index and every reachable drive;
//  5. the pending list is cleared.
//
// A rerun after a crash finds the pending list or the rotation in the config
// and carries on from there; no surviving tenant is ever left under an epoch
// missing from the key file.
func (e *Engine) finish(ctx context.Context, shred []*tenantEntry) (*ShredReport, error) {
	// A tenant the index lost would stay wrapped under the epoch that the
	// rotation destroys: its data would be lost.
	if err := e.checkTenantRecords(ctx, true); err != nil {
		return nil, err
	}
	if err := e.tenantsCurrent(ctx, shred); err != nil {
		return nil, err
	}
	rep := &ShredReport{}
	// 1. Pending list.
	var add []string
	for _, te := range shred {
		add = append(add, hex.EncodeToString(te.rec.ID[:]))
	}
	if len(add) > 0 {
		err := e.updateConfig(ctx, func(c *config) error {
			for _, id := range add {
				if !slices.Contains(c.PendingShred, id) {
					c.PendingShred = append(c.PendingShred, id)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("record pending shred: %w", err)
		}
	}
	e.mu.Lock()
	pending := append([]string(nil), e.cfg.PendingShred...)
	e.mu.Unlock()

	// 2. Tombstones.
	all, err := e.allTenantEntries()
	if err != nil {
		return nil, err
	}
	for _, te := range all {
		id := hex.EncodeToString(te.rec.ID[:])
		if !slices.Contains(pending, id) || te.meta.State == stateShredded {
			continue
		}
		// Its sessions are cut, and its registered client keys go first,
		// while its key can still open their record to find the lookup
		// entries.
		e.revoke(Revocation{Tenant: id})
		if err := e.dropClientKeys(ctx, te); err != nil {
			return nil, fmt.Errorf("remove the client keys of tenant %s: %w", id[:8], err)
		}
		name := tenantRecordName(te.rec.ID)
		if err := e.rp().DeleteRecord(ctx, name); err != nil {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("tenant %s: old key copies on unreachable drives remain (useless once the epoch is destroyed): %v", id[:8], err))
		}
		tomb := &tenantMeta{State: stateShredded, Created: te.meta.Created, Epoch: e.currentKey().epoch}
		now := e.now().UTC().Truncate(time.Second)
		tomb.LockedAt = &now // the shred time, kept for the audit
		if err := e.putTenant(ctx, te.rec.ID, te.rec.Version+1, tomb); err != nil {
			return nil, fmt.Errorf("write tombstone of tenant %s: %w", id[:8], err)
		}
	}

	// 3. Rotation.
	if err := e.rotate(ctx, rep); err != nil {
		return rep, err
	}

	// 4. Data.
	for _, id := range pending {
		var tid [16]byte
		if err := decodeHexInto(tid[:], id); err != nil {
			continue
		}
		if err := e.deleteTenantData(ctx, tid); err != nil {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("tenant %s: %v (scrub --repair removes what is left)", id[:8], err))
		}
		if err := e.audited(ctx, "tenant.shred", tid, fmt.Sprintf("destroyed_epoch=%d", rep.DestroyedEpoch), nil); err != nil {
			return rep, err
		}
		rep.Shredded = append(rep.Shredded, id)
	}

	// 5. Done.
	err = e.updateConfig(ctx, func(c *config) error {
		c.PendingShred = slices.DeleteFunc(c.PendingShred, func(id string) bool { return slices.Contains(pending, id) })
		return nil
	})
	return rep, err
}

// rotate performs step 3 of finish, resuming a rotation already under way.
func (e *Engine) rotate(ctx context.Context, rep *ShredReport) error {
	e.mu.Lock()
	cur, next := e.mk, e.mkNext
	rotating, stale := e.cfg.RotatingTo, e.keyFileStale
	e.mu.Unlock()
	if next == nil && rotating == 0 && stale {
		// A crash after the config switched epochs but before the key
		// files were rewritten: only the destruction of the old epoch is
		// left to do.
		if err := e.writeKeyFiles(keyFile{cur: cur}, rep); err != nil {
			return err
		}
		e.mu.Lock()
		e.keyFileStale = false
		e.mu.Unlock()
		rep.DestroyedEpoch, rep.NewEpoch = cur.epoch-1, cur.epoch
		return nil
	}
	if next == nil {
		if rotating != 0 {
			// The key file is always written before the config names a
			// rotation, so the next epoch missing means the key file was
			// replaced by hand.
			return fmt.Errorf("%w: the config names master key epoch %d, which is not in %s", ErrWrongKey, rotating, e.keyFile)
		}
		var raw [KeySize]byte
		randomBytes(raw[:])
		next = newMasterKey(cur.repo, cur.epoch+1, raw)
		// The new epoch is durable in every key file before anything uses it.
		if err := e.writeKeyFiles(keyFile{cur: cur, next: next}, rep); err != nil {
			return err
		}
		if err := e.updateConfig(ctx, func(c *config) error {
			c.RotatingTo = next.epoch
			c.NextCheck = next.checkHex()
			return nil
		}); err != nil {
			return fmt.Errorf("record rotation: %w", err)
		}
		e.mu.Lock()
		e.mkNext = next
		e.mu.Unlock()
	}
	// Re-wrap and re-seal every tenant record (tombstones too) under next.
	all, err := e.allTenantEntries()
	if err != nil {
		return err
	}
	for _, te := range all {
		if te.rec.Epoch == next.epoch {
			continue // done before a crash
		}
		m := te.meta
		if m.State != stateShredded {
			tk, err := e.tenantKey(te)
			if err != nil {
				return err
			}
			m.Wrapped = wrapTenantKey(next, te.rec.ID, tk)
			*tk = [KeySize]byte{}
		}
		m.Epoch = next.epoch
		if err := e.putTenant(ctx, te.rec.ID, te.rec.Version+1, &m); err != nil {
			return fmt.Errorf("re-wrap tenant %x: %w", te.rec.ID[:4], err)
		}
	}
	// The audit keys follow, sealed under both epochs until the switch.
	if err := e.rewrapAuditKey(ctx, next); err != nil {
		return fmt.Errorf("re-wrap the audit keys: %w", err)
	}
	// Switch the config to the new epoch.
	if err := e.updateConfig(ctx, func(c *config) error {
		c.MKEpoch = next.epoch
		c.MKCheck = next.checkHex()
		c.RotatingTo = 0
		c.NextCheck = ""
		return nil
	}); err != nil {
		return fmt.Errorf("switch master key epoch: %w", err)
	}
	e.mu.Lock()
	e.mk, e.mkNext = next, nil
	e.mu.Unlock()
	// Destroy the old epoch: every key file now holds only the new one.
	if err := e.writeKeyFiles(keyFile{cur: next}, rep); err != nil {
		return err
	}
	rep.DestroyedEpoch, rep.NewEpoch = next.epoch-1, next.epoch
	// The linking entry: the chain continues under the new epoch.
	return e.audited(ctx, "key.rotate", tenantAdmin, "", nil)
}

// writeKeyFiles writes kf to the master key file and every escrow copy,
// each durably (temporary file, fsync, rename, fsync of the folder).
func (e *Engine) writeKeyFiles(kf keyFile, rep *ShredReport) error {
	b := encodeKeyFile(kf)
	paths := append([]string{e.keyFile}, e.opts.Escrow...)
	rep.KeyFiles = nil
	for _, p := range paths {
		if err := writeFileDurable(p, b, 0o600); err != nil {
			return fmt.Errorf("write master key file %s: %w", p, err)
		}
		rep.KeyFiles = append(rep.KeyFiles, p)
	}
	return nil
}

// deleteTenantData removes a shredded tenant's packs and snapshots from the
// index and its container from every reachable drive.
func (e *Engine) deleteTenantData(ctx context.Context, id [16]byte) error {
	b := e.db.NewBatch()
	b.DeleteTenantData(index.TenantID(id))
	if err := b.Commit(); err != nil {
		b.Close()
		return fmt.Errorf("delete index entries: %w", err)
	}
	b.Close()
	prefix := "t/" + hex.EncodeToString(id[:]) + "/"
	var errs []error
	for _, m := range e.rp().Members() {
		if m.Failed {
			continue
		}
		if err := deletePrefix(ctx, m.Drive, prefix); err != nil {
			errs = append(errs, fmt.Errorf("drive %s: %w", m.ID, err))
		}
	}
	return errors.Join(errs...)
}

// deletePrefix removes every object under prefix, in one call where the
// drive can (repo.PrefixDeleter), else object by object.
func deletePrefix(ctx context.Context, d repo.Drive, prefix string) error {
	if pd, ok := d.(repo.PrefixDeleter); ok {
		if err := pd.DeletePrefix(ctx, prefix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	var names []string
	if err := d.List(ctx, prefix, func(name string, _ int64) error {
		names = append(names, name)
		return nil
	}); err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if err := d.Delete(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dropClientKeys removes a tenant's registered client keys from the drives and
// the index (the set and every lookup entry), so that a shredded tenant's key
// can be registered again for another tenant.
func (e *Engine) dropClientKeys(ctx context.Context, te *tenantEntry) error {
	h, err := e.tenantHandle(te)
	if err != nil {
		return err
	}
	set, _, err := e.readClientKeys(te, h.keys)
	if err != nil {
		return err
	}
	if err := e.rp().DeleteRecord(ctx, clientKeysRecordName(te.rec.ID)); err != nil {
		return err
	}
	b := e.db.NewBatch()
	defer b.Close()
	b.DeleteMeta(clientKeysMeta(te.rec.ID))
	for _, k := range set.Keys {
		b.DeleteMeta(clientKeyLookupMeta(ed25519.PublicKey(k.Key)))
	}
	return b.Commit()
}
