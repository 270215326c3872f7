package engine

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"sort"
	"time"

	"coffer/index"
)

// Tenant states.
const (
	StateActive = "active"
	StateLocked = "locked"
	// stateShredded marks a tombstone: the tenant's key is destroyed.
	stateShredded = "shredded"
)

// tenantMeta is the sealed body of a tenant record (JSON inside the seal).
type tenantMeta struct {
	Name     string     `json:"name"`
	Contact  string     `json:"contact,omitempty"`
	Quota    int64      `json:"quota,omitempty"`
	State    string     `json:"state"`
	Created  time.Time  `json:"created"`
	LockedAt *time.Time `json:"locked_at,omitempty"`
	// LockedSeq is the sequence number of the newest audit entry the lock
	// time was checked against; the age of the lock is measured from it
	// (clock.go). 0 in records written before it existed.
	LockedSeq uint64 `json:"locked_seq,omitempty"`
	Epoch     uint32 `json:"epoch"`
	Wrapped   []byte `json:"wrapped_key"`
}

// TenantInfo describes a tenant.
type TenantInfo struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Contact     string     `json:"contact,omitempty"`
	Quota       int64      `json:"quota,omitempty"`
	State       string     `json:"state"`
	Created     time.Time  `json:"created"`
	LockedAt    *time.Time `json:"locked_at,omitempty"`
	DeleteAfter *time.Time `json:"delete_after,omitempty"`
}

// TenantOptions are the optional fields of a new tenant.
type TenantOptions struct {
	Contact string
	Quota   int64 // bytes; 0 = none
}

func tenantRecordName(id [16]byte) string { return "r/tenants/" + hex.EncodeToString(id[:]) }

// ValidateTenantName checks a tenant name: 1 to 64 characters from letters,
// digits and . _ - @.
func ValidateTenantName(name string) error {
	if len(name) == 0 || len(name) > 64 {
		return invalidf("tenant name %q must have 1 to 64 characters", name)
	}
	for _, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '@'
		if !ok {
			return invalidf("tenant name %q may hold only letters, digits and . _ - @", name)
		}
	}
	return nil
}

// tenantEntry is a decoded tenant record.
type tenantEntry struct {
	rec  index.TenantRec
	meta tenantMeta
}

func (e *Engine) openTenantRec(rec index.TenantRec) (*tenantEntry, error) {
	r := &record{Kind: recTenant, Version: rec.Version, Body: rec.Meta}
	if len(rec.Wrapped) == 0 {
		r.Flags = recFlagTombstone
	}
	mk, err := e.mkFor(rec.Epoch)
	if err != nil {
		// A master-key rotation may have re-sealed the record and dropped
		// its epoch since rec was read: read it again.
		if fresh, ferr := e.db.Tenant(index.TenantID(rec.ID)); ferr == nil && fresh.Epoch != rec.Epoch {
			return e.openTenantRec(fresh)
		}
		return nil, fmt.Errorf("tenant %x: %w", rec.ID[:], err)
	}
	body, err := openRecord(&mk.admin, r, rec.ID, tenantRecordName(rec.ID))
	if err != nil {
		return nil, fmt.Errorf("tenant %x: %w", rec.ID[:], err)
	}
	var m tenantMeta
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%w: tenant %x metadata", ErrCorrupt, rec.ID[:])
	}
	if r.tombstone() {
		m.State = stateShredded
	}
	return &tenantEntry{rec: rec, meta: m}, nil
}

// tenantEntries decodes every live tenant record of the index (tombstones of
// shredded tenants are left out).
func (e *Engine) tenantEntries() ([]*tenantEntry, error) {
	all, err := e.allTenantEntries()
	var out []*tenantEntry
	for _, te := range all {
		if te.meta.State != stateShredded {
			out = append(out, te)
		}
	}
	return out, err
}

// allTenantEntries decodes every tenant record, tombstones included.
func (e *Engine) allTenantEntries() ([]*tenantEntry, error) {
	var out []*tenantEntry
	err := e.db.Tenants(func(rec index.TenantRec) error {
		te, err := e.openTenantRec(rec)
		if err != nil {
			return err
		}
		out = append(out, te)
		return nil
	})
	return out, err
}

func (e *Engine) findTenant(name string) (*tenantEntry, error) {
	all, err := e.tenantEntries()
	if err != nil {
		return nil, err
	}
	for _, te := range all {
		if te.meta.Name == name {
			return te, nil
		}
	}
	return nil, fmt.Errorf("%w: %q (see coffer tenant list)", ErrTenantNotFound, name)
}

// putTenant writes a new version of a tenant record, sealed under the admin
// key of the master-key epoch m.Epoch: drives first, then the index, so the
// index never holds a version the drives do not. A record without a wrapped
// key is a tombstone.
func (e *Engine) putTenant(ctx context.Context, id [16]byte, version uint64, m *tenantMeta) error {
	mk, err := e.mkFor(m.Epoch)
	if err != nil {
		return err
	}
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var flags byte
	if len(m.Wrapped) == 0 {
		flags = recFlagTombstone
	}
	name := tenantRecordName(id)
	rec := sealRecord(&mk.admin, recTenant, flags, version, id, name, body)
	if err := e.rp().PutRecord(ctx, name, rec); err != nil {
		return fmt.Errorf("write tenant record to drives: %w", err)
	}
	b := e.db.NewBatch()
	defer b.Close()
	b.PutTenant(index.TenantRec{ID: id, Version: version, Epoch: m.Epoch, Wrapped: m.Wrapped, Meta: rec[recHeaderLen:]})
	return b.Commit()
}

// CreateTenant adds a tenant with a new random ID and tenant key.
func (e *Engine) CreateTenant(ctx context.Context, name string, o TenantOptions) (*TenantInfo, error) {
	if err := ValidateTenantName(name); err != nil {
		return nil, err
	}
	if o.Quota < 0 {
		return nil, invalidf("quota %d is negative", o.Quota)
	}
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	if _, err := e.findTenant(name); err == nil {
		return nil, fmt.Errorf("%w: %q", ErrTenantExists, name)
	} else if !errors.Is(err, ErrTenantNotFound) {
		return nil, err
	}
	var id [16]byte
	randomBytes(id[:])
	var tk [KeySize]byte
	randomBytes(tk[:])
	mk := e.currentKey()
	m := &tenantMeta{
		Name: name, Contact: o.Contact, Quota: o.Quota, State: StateActive,
		Created: e.now().UTC().Truncate(time.Second), Epoch: mk.epoch,
		Wrapped: wrapTenantKey(mk, id, &tk),
	}
	if err := e.putTenant(ctx, id, 1, m); err != nil {
		return nil, err
	}
	if err := e.logAudit(ctx, "tenant.create", id, nil, ""); err != nil {
		return nil, &unauditedError{fmt.Errorf("the tenant was created, but %w", err)}
	}
	return e.info(&tenantEntry{rec: index.TenantRec{ID: id}, meta: *m}), nil
}

func (e *Engine) info(te *tenantEntry) *TenantInfo {
	ti := &TenantInfo{
		ID: hex.EncodeToString(te.rec.ID[:]), Name: te.meta.Name, Contact: te.meta.Contact,
		Quota: te.meta.Quota, State: te.meta.State, Created: te.meta.Created, LockedAt: te.meta.LockedAt,
	}
	if te.meta.LockedAt != nil {
		d := te.meta.LockedAt.Add(e.grace())
		ti.DeleteAfter = &d
	}
	return ti
}

// Tenants lists every tenant, sorted by name.
func (e *Engine) Tenants(ctx context.Context) ([]TenantInfo, error) {
	all, err := e.tenantEntries()
	if err != nil {
		return nil, err
	}
	out := make([]TenantInfo, 0, len(all))
	for _, te := range all {
		out = append(out, *e.info(te))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Tenant is an open tenant: the handle through which its data is read and
// written. It is safe for concurrent use.
type Tenant struct {
	e     *Engine
	id    [16]byte
	name  string
	quota int64
	keys  *tenantKeys
	files tenantFiles // the opener of Tenant.Open (open.go)
}

// OpenTenant opens the tenant called name for data access. A locked tenant
// gives ErrTenantLocked: no data in or out.
func (e *Engine) OpenTenant(ctx context.Context, name string) (*Tenant, error) {
	te, err := e.findTenant(name)
	if err != nil {
		return nil, err
	}
	if te.meta.State != StateActive {
		return nil, fmt.Errorf("%w: tenant %q was locked on %s; no data can go in or out until an operator unlocks it", ErrTenantLocked, name, te.meta.LockedAt.UTC().Format(time.RFC3339))
	}
	return e.tenantHandle(te)
}

// tenantKey unwraps a tenant's key under the master-key epoch it names.
// The caller clears it after use.
func (e *Engine) tenantKey(te *tenantEntry) (*[KeySize]byte, error) {
	mk, err := e.mkFor(te.meta.Epoch)
	if err != nil {
		return nil, fmt.Errorf("tenant %q: %w", te.meta.Name, err)
	}
	tk, err := unwrapTenantKey(mk, te.rec.ID, te.meta.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("tenant %q: %w", te.meta.Name, err)
	}
	return tk, nil
}

func (e *Engine) tenantHandle(te *tenantEntry) (*Tenant, error) {
	tk, err := e.tenantKey(te)
	if errors.Is(err, ErrWrongKey) {
		// The entry may predate a master-key rotation that re-wrapped the
		// tenant key and dropped the old epoch: read it again.
		if rec, rerr := e.db.Tenant(index.TenantID(te.rec.ID)); rerr == nil && rec.Epoch != te.rec.Epoch {
			if fresh, ferr := e.openTenantRec(rec); ferr == nil {
				te = fresh
				tk, err = e.tenantKey(te)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	keys, err := deriveTenantKeys(te.rec.ID, tk)
	*tk = [KeySize]byte{}
	if err != nil {
		return nil, err
	}
	return &Tenant{e: e, id: te.rec.ID, name: te.meta.Name, quota: te.meta.Quota, keys: keys}, nil
}

// Name returns the tenant's name.
func (t *Tenant) Name() string { return t.name }

// ID returns the tenant's random ID in hex (its container name on drives).
func (t *Tenant) ID() string { return hex.EncodeToString(t.id[:]) }

func (t *Tenant) container() string { return hex.EncodeToString(t.id[:]) }

func osUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}
