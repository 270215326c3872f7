package engine

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"coffer/index"
)

// Client keys: the public keys with which a tenant's clients log in to
// `coffer serve` (docs/design.md, chapter 15). A tenant's keys form one record, sealed
// under the tenant's metadata key (so a master-key rotation leaves it
// readable, and shredding the tenant makes it unreadable with everything
// else), stored on the drives as r/keys/<tenant ID hex> in the common
// envelope with kind recClientKeys, and in the index as:
//
//	ckt/<tenant ID hex>   the sealed record body (same bytes as on the drives
//	                      after the 14-byte envelope header), version in the
//	                      first 8 bytes (u64 LE) before it
//	ck/<sha256 hex>       16-byte owner tenant ID, keyed by the SHA-256 of the
//	                      key's SSH wire encoding (its fingerprint's hash)
//
// The ck/ entries are a server-side lookup table only: a client is never
// told which tenant (if any) a key belongs to.

// recClientKeys is the record kind of a tenant's client keys (records.go and
// audit.go hold kinds 1 to 6). The number is part of the format.
const recClientKeys byte = 7

// Client key roles.
const (
	RoleBackup  = "backup"  // add data and snapshots, list snapshots and trees; never delete or read contents
	RoleRestore = "restore" // read: snapshots, ls, dump, restore
	RoleAdmin   = "admin"   // forget and prune too
)

// maxClientKeys bounds the keys of one tenant (the record is read whole).
const maxClientKeys = 256

// maxKeyComment bounds a key's comment.
const maxKeyComment = 256

// ErrClientRefused is the one answer to a client whose key is unknown or
// removed, or whose tenant is locked or shredded: callers must not tell
// these apart to the client.
var ErrClientRefused = errors.New("engine: client key refused")

// ClientKey describes a registered client key.
type ClientKey struct {
	Fingerprint string    `json:"fingerprint"` // SHA256:<base64 raw>, as OpenSSH prints it
	PublicKey   string    `json:"public_key"`  // OpenSSH authorized_keys form, without comment
	Comment     string    `json:"comment,omitempty"`
	Roles       []string  `json:"roles"`
	Added       time.Time `json:"added"`
}

// clientKeyRec is one key in the sealed JSON body.
type clientKeyRec struct {
	Key     []byte    `json:"key"` // 32-byte ed25519 public key
	Comment string    `json:"comment,omitempty"`
	Roles   []string  `json:"roles"`
	Added   time.Time `json:"added"`
}

type clientKeySet struct {
	Keys []clientKeyRec `json:"keys"`
}

func clientKeysRecordName(tenant [16]byte) string { return "r/keys/" + hex.EncodeToString(tenant[:]) }
func clientKeysMeta(tenant [16]byte) string       { return "ckt/" + hex.EncodeToString(tenant[:]) }
func clientKeyLookupMeta(pub ed25519.PublicKey) string {
	h := sha256.Sum256(sshWireKey(pub))
	return "ck/" + hex.EncodeToString(h[:])
}

// sshWireKey is the SSH wire encoding of an ed25519 public key:
// string "ssh-ed25519" || string key (each string: u32 BE length, bytes).
func sshWireKey(pub ed25519.PublicKey) []byte {
	const typ = "ssh-ed25519"
	b := binary.BigEndian.AppendUint32(nil, uint32(len(typ)))
	b = append(b, typ...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(pub)))
	return append(b, pub...)
}

// KeyFingerprint is the OpenSSH fingerprint of an ed25519 public key:
// "SHA256:" + unpadded base64 of the SHA-256 of its SSH wire encoding.
func KeyFingerprint(pub ed25519.PublicKey) string {
	h := sha256.Sum256(sshWireKey(pub))
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(h[:])
}

// AuthorizedKey is pub in OpenSSH authorized_keys form ("ssh-ed25519 AAAA…"),
// with " comment" appended when comment is not empty.
func AuthorizedKey(pub ed25519.PublicKey, comment string) string {
	s := "ssh-ed25519 " + base64.StdEncoding.EncodeToString(sshWireKey(pub))
	if comment != "" {
		s += " " + comment
	}
	return s
}

// auditKeyDetail names a key in the audit trail by its fingerprint's hash in
// hex (audit details hold only numbers and hex IDs); "" if fp is malformed.
func auditKeyDetail(fp string) string {
	h, err := base64.RawStdEncoding.DecodeString(strings.TrimPrefix(fp, "SHA256:"))
	if err != nil || len(h) != sha256.Size || !strings.HasPrefix(fp, "SHA256:") {
		return ""
	}
	return "key=" + hex.EncodeToString(h)
}

// ParseRoles parses "backup,restore": each role at most once, at least one.
func ParseRoles(s string) ([]string, error) {
	var out []string
	for _, r := range strings.Split(s, ",") {
		r = strings.TrimSpace(r)
		switch r {
		case RoleBackup, RoleRestore, RoleAdmin:
		default:
			return nil, invalidf("role %q is not one of backup, restore, admin", r)
		}
		if slices.Contains(out, r) {
			return nil, invalidf("role %q is given twice", r)
		}
		out = append(out, r)
	}
	sort.Strings(out)
	return out, nil
}

func (e *Engine) readClientKeys(te *tenantEntry, keys *tenantKeys) (*clientKeySet, uint64, error) {
	raw, err := e.db.Meta(clientKeysMeta(te.rec.ID))
	if errors.Is(err, index.ErrNotFound) {
		return &clientKeySet{}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	if len(raw) < 8 {
		return nil, 0, fmt.Errorf("%w: client keys of tenant %x", ErrCorrupt, te.rec.ID[:])
	}
	r := &record{Kind: recClientKeys, Version: binary.LittleEndian.Uint64(raw[:8]), Body: raw[8:]}
	body, err := openRecord(&keys.meta, r, te.rec.ID, clientKeysRecordName(te.rec.ID))
	if err != nil {
		return nil, 0, fmt.Errorf("client keys of tenant %x: %w", te.rec.ID[:], err)
	}
	var set clientKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, 0, fmt.Errorf("%w: client keys of tenant %x", ErrCorrupt, te.rec.ID[:])
	}
	for _, k := range set.Keys {
		if len(k.Key) != ed25519.PublicKeySize {
			return nil, 0, fmt.Errorf("%w: client key of tenant %x has %d bytes", ErrCorrupt, te.rec.ID[:], len(k.Key))
		}
	}
	return &set, r.Version, nil
}

// writeClientKeys writes a new version of a tenant's key set: drives first,
// then the index (the set and the lookup entries added and dropped) in one
// batch, so the index never holds a version the drives do not.
func (e *Engine) writeClientKeys(ctx context.Context, te *tenantEntry, keys *tenantKeys, version uint64, set *clientKeySet, added, dropped ed25519.PublicKey) error {
	body, err := json.Marshal(set)
	if err != nil {
		return err
	}
	name := clientKeysRecordName(te.rec.ID)
	rec := sealRecord(&keys.meta, recClientKeys, 0, version, te.rec.ID, name, body)
	if err := e.rp().PutRecord(ctx, name, rec); err != nil {
		return fmt.Errorf("write client keys to drives: %w", err)
	}
	b := e.db.NewBatch()
	defer b.Close()
	v := binary.LittleEndian.AppendUint64(nil, version)
	b.PutMeta(clientKeysMeta(te.rec.ID), append(v, rec[recHeaderLen:]...))
	if added != nil {
		b.PutMeta(clientKeyLookupMeta(added), append([]byte{}, te.rec.ID[:]...))
	}
	if dropped != nil {
		b.DeleteMeta(clientKeyLookupMeta(dropped))
	}
	return b.Commit()
}

func clientKeyInfo(k clientKeyRec) ClientKey {
	pub := ed25519.PublicKey(k.Key)
	return ClientKey{Fingerprint: KeyFingerprint(pub), PublicKey: AuthorizedKey(pub, ""), Comment: k.Comment, Roles: k.Roles, Added: k.Added}
}

// AddClientKey registers pub as a client key of the tenant called name with
// the given roles (see ParseRoles). A key belongs to at most one tenant: a
// key already registered anywhere is refused with ErrInvalid.
func (e *Engine) AddClientKey(ctx context.Context, name string, pub ed25519.PublicKey, comment string, roles []string) (ck *ClientKey, err error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, invalidf("a client key must be an ed25519 public key")
	}
	if len(comment) > maxKeyComment || strings.ContainsAny(comment, "\n\r\x00") {
		return nil, invalidf("key comment must be one line of at most %d bytes", maxKeyComment)
	}
	if len(roles) == 0 {
		return nil, invalidf("a client key needs at least one role")
	}
	roles, err = ParseRoles(strings.Join(roles, ","))
	if err != nil {
		return nil, err
	}
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	te, err := e.findTenant(name)
	if err != nil {
		return nil, err
	}
	fp := KeyFingerprint(pub)
	defer func() { err = e.audited(ctx, "tenant.key.add", te.rec.ID, auditKeyDetail(fp), err) }()
	if _, err := e.db.Meta(clientKeyLookupMeta(pub)); err == nil {
		return nil, invalidf("key %s is already registered (remove it first)", fp)
	} else if !errors.Is(err, index.ErrNotFound) {
		return nil, err
	}
	t, err := e.tenantHandle(te)
	if err != nil {
		return nil, err
	}
	set, version, err := e.readClientKeys(te, t.keys)
	if err != nil {
		return nil, err
	}
	if len(set.Keys) >= maxClientKeys {
		return nil, invalidf("tenant %q already has %d keys, the most allowed", name, maxClientKeys)
	}
	k := clientKeyRec{Key: append([]byte{}, pub...), Comment: comment, Roles: roles, Added: e.now().UTC().Truncate(time.Second)}
	set.Keys = append(set.Keys, k)
	if err := e.writeClientKeys(ctx, te, t.keys, version+1, set, pub, nil); err != nil {
		return nil, err
	}
	info := clientKeyInfo(k)
	return &info, nil
}

// ClientKeys lists the client keys of the tenant called name, in the order
// they were added.
func (e *Engine) ClientKeys(ctx context.Context, name string) ([]ClientKey, error) {
	te, err := e.findTenant(name)
	if err != nil {
		return nil, err
	}
	t, err := e.tenantHandle(te)
	if err != nil {
		return nil, err
	}
	set, _, err := e.readClientKeys(te, t.keys)
	if err != nil {
		return nil, err
	}
	out := make([]ClientKey, 0, len(set.Keys))
	for _, k := range set.Keys {
		out = append(out, clientKeyInfo(k))
	}
	return out, nil
}

// RemoveClientKey removes the key with the given fingerprint from the tenant
// called name. Servers check the key again on every request, and a server
// that registered with OnRevoke cuts the key's open sessions at once.
func (e *Engine) RemoveClientKey(ctx context.Context, name, fingerprint string) (err error) {
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	te, err := e.findTenant(name)
	if err != nil {
		return err
	}
	defer func() { err = e.audited(ctx, "tenant.key.remove", te.rec.ID, auditKeyDetail(fingerprint), err) }()
	t, err := e.tenantHandle(te)
	if err != nil {
		return err
	}
	set, version, err := e.readClientKeys(te, t.keys)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(set.Keys, func(k clientKeyRec) bool { return KeyFingerprint(k.Key) == fingerprint })
	if i < 0 {
		return invalidf("tenant %q has no key %s (see coffer tenant key list %s)", name, fingerprint, name)
	}
	dropped := ed25519.PublicKey(set.Keys[i].Key)
	set.Keys = slices.Delete(set.Keys, i, i+1)
	if err := e.writeClientKeys(ctx, te, t.keys, version+1, set, nil, dropped); err != nil {
		return err
	}
	e.revoke(Revocation{Tenant: hex.EncodeToString(te.rec.ID[:]), Fingerprint: fingerprint})
	return nil
}

// AuthenticateClient finds the tenant a client key is registered to and
// opens it. Every failure that depends on the key or the tenant (unknown
// key, removed key, locked or shredded tenant) is ErrClientRefused, so a
// server gives them one answer; other errors are the repository's own.
func (e *Engine) AuthenticateClient(ctx context.Context, pub ed25519.PublicKey) (*Tenant, []string, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, nil, ErrClientRefused
	}
	owner, err := e.db.Meta(clientKeyLookupMeta(pub))
	if errors.Is(err, index.ErrNotFound) {
		return nil, nil, ErrClientRefused
	}
	if err != nil {
		return nil, nil, err
	}
	if len(owner) != 16 {
		return nil, nil, fmt.Errorf("%w: client key lookup entry", ErrCorrupt)
	}
	var id [16]byte
	copy(id[:], owner)
	rec, err := e.db.Tenant(id)
	if errors.Is(err, index.ErrNotFound) {
		return nil, nil, ErrClientRefused
	}
	if err != nil {
		return nil, nil, err
	}
	te, err := e.openTenantRec(rec)
	if err != nil {
		return nil, nil, err
	}
	if te.meta.State != StateActive {
		return nil, nil, ErrClientRefused
	}
	t, err := e.tenantHandle(te)
	if err != nil {
		return nil, nil, err
	}
	set, _, err := e.readClientKeys(te, t.keys)
	if err != nil {
		return nil, nil, err
	}
	for _, k := range set.Keys {
		if string(k.Key) == string(pub) {
			return t, slices.Clone(k.Roles), nil
		}
	}
	// The lookup entry outlived its key (a crash between two writes of an
	// older version): the sealed set decides.
	return nil, nil, ErrClientRefused
}
