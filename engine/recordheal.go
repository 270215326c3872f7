package engine

// Replicated records heal like shards. Every record name is judged by its
// kind: which copies are valid (they decode, and the sealed kinds
// authenticate under the key that seals them), which valid copy is the
// newest (the version rule of docs/design.md §8: the highest version wins,
// a tombstone at equal versions), and what the index holds of it (the same
// bytes, so a record all of whose copies were lost comes back from the
// index). The placement of the record (repo.RecordPlacement) must then hold
// the newest copy on C drives; stale copies are rewritten and copies off the
// placement removed once it is whole. Scrub checks and repairs this
// (docs/design.md §7), and drive fail and drive add repair it so that a
// drive's records are re-placed at once.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"coffer/index"
	"coffer/repo"
)

// recordJudge tells, for one record name, which copies are valid and what
// the index holds of it.
type recordJudge struct {
	what string // "config", "tenant", "snapshot", "client keys", "audit entry", ...
	// locks are the lockTenant keys that writers and deleters of the record
	// hold, in the order they take them.
	locks [][16]byte
	// preferIndex: among valid copies of the same version the index's copy
	// wins (the audit records, whose index copy is what verify trusts);
	// otherwise the copy most drives hold does.
	preferIndex bool
	valid       func(b []byte) (version uint64, tomb bool, ok bool)
	indexCopy   func() ([]byte, error) // the index's copy; nil, nil if none
	// owner is the tenant whose key seals the record, or nil: a record of
	// a tenant shredded meanwhile is left alone.
	owner *[16]byte
}

// recordFinding is what was found about one record that is not whole.
type recordFinding struct {
	name, what string
	want       int            // C, the copies it should have
	good       int            // copies of the newest version on its placement
	missing    []repo.DriveID // drives of its placement without a copy, or unreadable
	stale      []repo.DriveID // drives whose copy is older, damaged or not authentic
	extra      []repo.DriveID // drives off its placement holding the newest copy
	unreadable int            // copies that could not be read
	onSuspect  []repo.DriveID // suspect drives off its placement holding an older copy
	noValid    bool           // no valid copy on the drives nor in the index
	repaired   bool
	repairErr  string
}

func (f *recordFinding) clean() bool {
	return !f.noValid && f.good >= f.want && len(f.stale) == 0 && len(f.extra) == 0
}

// detail says what is wrong, by drive ID only.
func (f *recordFinding) detail() string {
	if f.noValid {
		return fmt.Sprintf("%s record with no valid copy on the drives or in the index", f.what)
	}
	parts := []string{fmt.Sprintf("%s record with %d of its %d copies good where it belongs", f.what, f.good, f.want)}
	if len(f.missing) > 0 {
		parts = append(parts, "missing on drive "+driveList(f.missing))
	}
	if len(f.stale) > 0 {
		parts = append(parts, "stale or damaged copy on drive "+driveList(f.stale))
	}
	if len(f.extra) > 0 {
		parts = append(parts, "extra copy off its placement on drive "+driveList(f.extra))
	}
	if f.unreadable > 0 {
		parts = append(parts, fmt.Sprintf("%d copies could not be read", f.unreadable))
	}
	return strings.Join(parts, "; ")
}

func driveList(ds []repo.DriveID) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, ", ")
}

// recordHealer checks, and with repair heals, the copies of replicated
// records. It is used from one goroutine.
type recordHealer struct {
	e       *Engine
	r       *repo.Repo
	repair  bool
	repoID  [16]byte
	mk      *masterKey
	admin   []*[KeySize]byte     // admin keys of the current and, during a rotation, the next epoch
	tenants map[[16]byte]*Tenant // live tenants: their meta keys seal snapshots and client keys
	done    map[string]bool      // names handled, so that the index's names are not handled twice
	// onSuspect counts, per suspect drive, the copies on it that are not
	// the newest: writes avoid that drive, so they are reported with it.
	onSuspect map[repo.DriveID]int
	checked   int64   // records examined
	listErrs  []error // listings that were incomplete (C or more drives failed to list)
}

// newRecordHealer prepares a healer for the drive set of the moment and the
// live tenants whose keys open.
func (e *Engine) newRecordHealer(repair bool) (*recordHealer, error) {
	e.mu.Lock()
	h := &recordHealer{
		e: e, r: e.repo, repair: repair, repoID: e.cfg.repoID(),
		tenants: map[[16]byte]*Tenant{}, done: map[string]bool{}, onSuspect: map[repo.DriveID]int{},
	}
	e.mu.Unlock()
	h.refreshKeys()
	entries, err := e.tenantEntries()
	if err != nil {
		return nil, fmt.Errorf("read tenants: %w", err)
	}
	for _, te := range entries {
		if t, err := e.tenantHandle(te); err == nil {
			h.tenants[t.id] = t
		}
	}
	return h, nil
}

// refreshKeys takes the master keys of the moment: those of the current
// and, during a rotation, the next epoch.
func (h *recordHealer) refreshKeys() {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	h.mk, h.admin = h.e.mk, nil
	for _, mk := range []*masterKey{h.e.mk, h.e.mkNext} {
		if mk != nil {
			h.admin = append(h.admin, &mk.admin)
		}
	}
}

// run examines every record the drives or the index know: the names under
// r/ and under t/<tenant>/s/ of every live tenant on any drive, then the
// index's records that no drive listed. fn is called for each record that is
// not whole, after its repair when repairing. Memory holds the names seen
// (a few dozen bytes each). Errors of the index and of ctx stop it; a
// listing that is incomplete is kept in listErrs and the others go on.
func (h *recordHealer) run(ctx context.Context, fn func(*recordFinding)) error {
	visit := func(name string) error {
		if h.done[name] {
			return nil
		}
		h.done[name] = true
		f, err := h.heal(ctx, name)
		if err != nil {
			return err
		}
		if f != nil {
			fn(f)
		}
		return nil
	}
	prefixes := []string{"r/"}
	for _, c := range h.tenantContainers() {
		prefixes = append(prefixes, "t/"+c+"/s/")
	}
	for _, p := range prefixes {
		var fatal error
		err := h.r.ListRecords(ctx, p, func(name string) error {
			fatal = visit(name)
			return fatal
		})
		switch {
		case fatal != nil:
			return fatal
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			h.listErrs = append(h.listErrs, err)
		}
	}
	return h.indexNames(ctx, visit)
}

func (h *recordHealer) tenantContainers() []string {
	var out []string
	for id := range h.tenants {
		out = append(out, hex.EncodeToString(id[:]))
	}
	slices.Sort(out)
	return out
}

// indexNames calls visit with the name of every record the index holds.
func (h *recordHealer) indexNames(ctx context.Context, visit func(string) error) error {
	for _, n := range []string{configName, auditHeadName, auditKeysName} {
		if err := visit(n); err != nil {
			return err
		}
	}
	err := h.e.db.Tenants(func(rec index.TenantRec) error {
		return visit(tenantRecordName(rec.ID))
	})
	if err != nil {
		return err
	}
	for _, c := range h.tenantContainers() {
		var id [16]byte
		_ = decodeHexInto(id[:], c)
		if err := visit(clientKeysRecordName(id)); err != nil {
			return err
		}
		err := h.e.db.Snapshots(index.TenantID(id), func(s index.SnapshotRec) error {
			return visit(snapshotRecordName(id, s.ID))
		})
		if err != nil {
			return err
		}
	}
	return h.e.db.Audit(1, func(seq uint64, _ []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return visit(auditEntryName(seq))
	})
}

// heal examines one record and, when it is not whole, examines it again
// under the locks its writers hold and, with repair, makes it whole. It
// returns nil when the record is whole (or is not one the healer can judge:
// a kind it does not know, a tenant it cannot open; or is being written).
func (h *recordHealer) heal(ctx context.Context, name string) (*recordFinding, error) {
	j, ok := h.judgeFor(name)
	if !ok {
		return nil, nil
	}
	h.checked++
	f, _, _, err := h.examine(ctx, name, j)
	if err != nil || f == nil {
		return nil, err
	}
	for _, d := range f.onSuspect {
		h.onSuspect[d]++
	}
	if f.clean() {
		return nil, nil
	}
	// Look again under the locks of the record's writers: a write in
	// progress (a backup committing its snapshot, a master-key rotation
	// resealing tenant records) is not damage. A check does not wait for
	// them: a record being written is looked at next time.
	unlock, ok := h.lock(j.locks, h.repair)
	if !ok {
		return nil, nil
	}
	defer unlock()
	if j.owner != nil && !h.live(*j.owner) {
		return nil, nil // its tenant was shredded meanwhile
	}
	h.refreshKeys() // a rotation may have finished meanwhile
	if j, ok = h.judgeFor(name); !ok {
		return nil, nil
	}
	again, winner, copies, err := h.examine(ctx, name, j)
	switch {
	case err != nil:
		return nil, err
	case again == nil || again.clean():
		return nil, nil // a writer made it whole meanwhile
	case !h.repair:
		return again, nil
	case again.noValid:
		again.repairErr = "not repairable: no valid copy to copy from"
	default:
		h.fix(ctx, name, again, winner, copies)
	}
	return again, nil
}

// lock takes the locks of ids in order, waiting for each if wait, else
// giving up (and releasing what it took) as soon as one is busy.
func (h *recordHealer) lock(ids [][16]byte, wait bool) (func(), bool) {
	var unlocks []func()
	release := func() {
		for i := len(unlocks) - 1; i >= 0; i-- {
			unlocks[i]()
		}
	}
	for _, id := range ids {
		if wait {
			unlocks = append(unlocks, h.e.lockTenant(id))
			continue
		}
		u, ok := h.e.tryLockTenant(id)
		if !ok {
			release()
			return nil, false
		}
		unlocks = append(unlocks, u)
	}
	return release, true
}

// examine reads every copy of name and classifies them. It returns a nil
// finding when no drive and not the index holds the record.
func (h *recordHealer) examine(ctx context.Context, name string, j *recordJudge) (*recordFinding, []byte, []repo.RecordCopy, error) {
	copies, err := h.r.ReadRecordCopies(ctx, name)
	if err != nil {
		return nil, nil, nil, err
	}
	idx, err := j.indexCopy()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read record %s from the index: %w", name, err)
	}
	if len(copies) == 0 && idx == nil {
		return nil, nil, nil, nil
	}
	place := h.r.RecordPlacement(name)
	f := &recordFinding{name: name, what: j.what, want: len(place)}
	winner := pickNewest(j, copies, idx)
	if winner == nil {
		f.noValid = true
		return f, nil, copies, nil
	}
	placed := map[repo.DriveID]bool{}
	for _, d := range place {
		placed[d] = true
	}
	seen := map[repo.DriveID]bool{}
	for _, c := range copies {
		seen[c.Drive] = true
		switch {
		case c.Err != nil:
			f.unreadable++
			if placed[c.Drive] {
				f.missing = append(f.missing, c.Drive)
			}
		case bytes.Equal(c.Data, winner) && placed[c.Drive]:
			f.good++
		case bytes.Equal(c.Data, winner):
			if !h.suspect(c.Drive) {
				f.extra = append(f.extra, c.Drive)
			}
		case !placed[c.Drive] && h.suspect(c.Drive):
			f.onSuspect = append(f.onSuspect, c.Drive)
		default:
			f.stale = append(f.stale, c.Drive)
		}
	}
	for _, d := range place {
		if !seen[d] {
			f.missing = append(f.missing, d)
		}
	}
	return f, winner, copies, nil
}

// live reports whether the index still holds tenant id with its key.
func (h *recordHealer) live(id [16]byte) bool {
	rec, err := h.e.db.Tenant(index.TenantID(id))
	return err == nil && len(rec.Wrapped) > 0
}

func (h *recordHealer) suspect(d repo.DriveID) bool {
	_, ok := h.r.Health().Suspect(d)
	return ok
}

// fix writes the newest copy where the record belongs (a drive that refuses
// is replaced by the next in placement order), and only once C copies are
// durable there removes the copies elsewhere, so the number of good copies
// never drops below what it was. Copies on suspect drives are left alone.
func (h *recordHealer) fix(ctx context.Context, name string, f *recordFinding, winner []byte, copies []repo.RecordCopy) {
	good := map[repo.DriveID]bool{}
	for _, c := range copies {
		if c.Err == nil && bytes.Equal(c.Data, winner) {
			good[c.Drive] = true
		}
	}
	held, err := h.r.RepairRecord(ctx, name, winner, func(d repo.DriveID) bool { return good[d] })
	if err != nil {
		f.repairErr = trimPrefixes(err.Error())
		return
	}
	f.repaired = true
	var left []string
	for _, c := range copies {
		if slices.Contains(held, c.Drive) || c.Err != nil || h.suspect(c.Drive) {
			continue
		}
		if err := h.r.DeleteRecordCopy(ctx, c.Drive, name); err != nil {
			left = append(left, trimPrefixes(err.Error()))
		}
	}
	if len(left) > 0 {
		f.repairErr = "copies off its placement were not removed (the next repair removes them): " + strings.Join(left, "; ")
	}
}

// candidate is one distinct valid copy of a record.
type candidate struct {
	data    []byte
	version uint64
	tomb    bool
	drives  int  // drives holding it
	index   bool // the index holds it
}

// pickNewest returns the newest valid copy among the drives' copies and the
// index's: the highest version; at equal versions a tombstone; then the
// index's copy (preferIndex) or the copy most drives hold; then the index's;
// then the lowest bytes, so the choice is deterministic. nil if none is valid.
func pickNewest(j *recordJudge, copies []repo.RecordCopy, idx []byte) []byte {
	var cands []*candidate
	add := func(b []byte, fromIndex bool) {
		v, tomb, ok := j.valid(b)
		if !ok {
			return
		}
		i := slices.IndexFunc(cands, func(c *candidate) bool { return bytes.Equal(c.data, b) })
		if i < 0 {
			cands = append(cands, &candidate{data: b, version: v, tomb: tomb})
			i = len(cands) - 1
		}
		if fromIndex {
			cands[i].index = true
		} else {
			cands[i].drives++
		}
	}
	for _, c := range copies {
		if c.Err == nil {
			add(c.Data, false)
		}
	}
	if idx != nil {
		add(idx, true)
	}
	if len(cands) == 0 {
		return nil
	}
	return slices.MaxFunc(cands, func(a, b *candidate) int {
		first := 0
		if j.preferIndex {
			first = boolCmp(a.index, b.index)
		}
		return cmp.Or(cmp.Compare(a.version, b.version), boolCmp(a.tomb, b.tomb), first,
			cmp.Compare(a.drives, b.drives), boolCmp(a.index, b.index), bytes.Compare(b.data, a.data))
	}).data
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// judgeFor returns how to judge record name, or false for a name the healer
// does not judge: an unknown kind, or a record of a tenant that is not live
// (its key is needed; what the drives hold of other tenants is scrub's
// container business).
func (h *recordHealer) judgeFor(name string) (*recordJudge, bool) {
	switch {
	case name == configName:
		return h.configJudge(), true
	case name == auditHeadName:
		return h.auditHeadJudge(), true
	case name == auditKeysName:
		return h.auditKeysJudge(), true
	case strings.HasPrefix(name, auditEntryPrefix):
		seq, err := strconv.ParseUint(strings.TrimPrefix(name, auditEntryPrefix), 16, 64)
		if err != nil || seq == 0 || auditEntryName(seq) != name {
			return nil, false
		}
		return h.auditEntryJudge(seq), true
	}
	if id, ok := idAfter(name, "r/tenants/"); ok {
		return h.tenantJudge(id, name), true
	}
	if id, ok := idAfter(name, "r/keys/"); ok {
		if t := h.tenants[id]; t != nil {
			return h.clientKeysJudge(t, name), true
		}
		return nil, false
	}
	parts := strings.Split(name, "/")
	if len(parts) == 4 && parts[0] == "t" && parts[2] == "s" {
		var tid, sid [16]byte
		if decodeHexInto(tid[:], parts[1]) != nil || decodeHexInto(sid[:], parts[3]) != nil || h.tenants[tid] == nil {
			return nil, false
		}
		return h.snapshotJudge(h.tenants[tid], sid, name), true
	}
	return nil, false
}

// idAfter parses name as prefix followed by a 16-byte ID in hex.
func idAfter(name, prefix string) ([16]byte, bool) {
	var id [16]byte
	rest, ok := strings.CutPrefix(name, prefix)
	return id, ok && decodeHexInto(id[:], rest) == nil
}

// sealedValid accepts a copy of a sealed record of kind that authenticates
// under one of keys, bound to owner and name.
func sealedValid(kind byte, keys []*[KeySize]byte, owner [16]byte, name string) func([]byte) (uint64, bool, bool) {
	return func(b []byte) (uint64, bool, bool) {
		r, err := decodeRecord(b)
		if err != nil || r.Kind != kind {
			return 0, false, false
		}
		for _, k := range keys {
			if _, err := openRecord(k, r, owner, name); err == nil {
				return r.Version, r.tombstone(), true
			}
		}
		return 0, false, false
	}
}

// notFound turns the index's "not found" into no copy.
func notFound(b []byte, err error) ([]byte, error) {
	if errors.Is(err, index.ErrNotFound) {
		return nil, nil
	}
	return b, err
}

func (h *recordHealer) configJudge() *recordJudge {
	return &recordJudge{
		what: "config", locks: [][16]byte{tenantAdmin},
		valid: func(b []byte) (uint64, bool, bool) {
			r, err := decodeRecord(b)
			if err != nil || r.Kind != recConfig || r.tombstone() {
				return 0, false, false
			}
			var c config
			if json.Unmarshal(r.Body, &c) != nil || c.Format != "coffer" || c.repoID() != h.repoID {
				return 0, false, false
			}
			return r.Version, false, true
		},
		indexCopy: func() ([]byte, error) {
			raw, err := notFound(h.e.db.Config())
			if raw == nil || err != nil {
				return nil, err
			}
			var c config
			if json.Unmarshal(raw, &c) != nil {
				return nil, nil // unreadable: not a candidate
			}
			return (&record{Kind: recConfig, Version: c.Record, Body: raw}).encode(), nil
		},
	}
}

func (h *recordHealer) tenantJudge(id [16]byte, name string) *recordJudge {
	return &recordJudge{
		what: "tenant", locks: [][16]byte{tenantAdmin},
		valid: sealedValid(recTenant, h.admin, id, name),
		indexCopy: func() ([]byte, error) {
			rec, err := h.e.db.Tenant(index.TenantID(id))
			if errors.Is(err, index.ErrNotFound) {
				return nil, nil
			} else if err != nil {
				return nil, err
			}
			r := &record{Kind: recTenant, Version: rec.Version, Body: rec.Meta}
			if len(rec.Wrapped) == 0 {
				r.Flags = recFlagTombstone
			}
			return r.encode(), nil
		},
	}
}

func (h *recordHealer) clientKeysJudge(t *Tenant, name string) *recordJudge {
	return &recordJudge{
		what: "client keys", locks: [][16]byte{tenantAdmin}, owner: &t.id,
		valid: sealedValid(recClientKeys, []*[KeySize]byte{&t.keys.meta}, t.id, name),
		indexCopy: func() ([]byte, error) {
			raw, err := notFound(h.e.db.Meta(clientKeysMeta(t.id)))
			if len(raw) < 8 || err != nil {
				return nil, err
			}
			return (&record{Kind: recClientKeys, Version: binary.LittleEndian.Uint64(raw[:8]), Body: raw[8:]}).encode(), nil
		},
	}
}

func (h *recordHealer) snapshotJudge(t *Tenant, sid [16]byte, name string) *recordJudge {
	return &recordJudge{
		// A shred (tenantAdmin) deletes the tenant's records; backups and
		// forget (the tenant's lock) write them.
		what: "snapshot", locks: [][16]byte{tenantAdmin, t.id}, owner: &t.id,
		valid: sealedValid(recSnapshot, []*[KeySize]byte{&t.keys.meta}, t.id, name),
		indexCopy: func() ([]byte, error) {
			rec, err := h.e.db.Snapshot(index.TenantID(t.id), index.SnapshotID(sid))
			if errors.Is(err, index.ErrNotFound) {
				return nil, nil
			} else if err != nil {
				return nil, err
			}
			return (&record{Kind: recSnapshot, Version: rec.Version, Body: rec.Sealed}).encode(), nil
		},
	}
}

func (h *recordHealer) auditEntryJudge(seq uint64) *recordJudge {
	return &recordJudge{
		what: "audit entry", locks: [][16]byte{auditLockID}, preferIndex: true,
		valid: func(b []byte) (uint64, bool, bool) {
			a, err := decodeAuditRec(b)
			return seq, false, err == nil && a.seq == seq
		},
		indexCopy: func() ([]byte, error) {
			var out []byte
			errStop := errors.New("stop")
			err := h.e.db.Audit(seq, func(s uint64, v []byte) error {
				if s == seq {
					out = v
				}
				return errStop
			})
			if err != nil && !errors.Is(err, errStop) {
				return nil, err
			}
			return out, nil
		},
	}
}

func (h *recordHealer) auditHeadJudge() *recordJudge {
	return &recordJudge{
		what: "audit head", locks: [][16]byte{auditLockID}, preferIndex: true,
		valid: func(b []byte) (uint64, bool, bool) {
			seq, _, err := decodeAuditHead(b)
			return seq, false, err == nil
		},
		indexCopy: func() ([]byte, error) { return notFound(h.e.db.Meta(metaAuditHead)) },
	}
}

func (h *recordHealer) auditKeysJudge() *recordJudge {
	return &recordJudge{
		what: "audit keys", locks: [][16]byte{auditLockID}, preferIndex: true,
		valid: func(b []byte) (uint64, bool, bool) {
			v, _, err := decodeAuditEnvelope(b, recAuditKeys)
			if err != nil {
				return 0, false, false
			}
			_, _, err = openAuditKeys(h.mk, b)
			return v, false, err == nil
		},
		indexCopy: func() ([]byte, error) { return notFound(h.e.db.Meta(metaAuditKeys)) },
	}
}
