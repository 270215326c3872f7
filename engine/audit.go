package engine

// The audit trail (docs/design.md): an append-only log of every
// administrative and data-access action, chained with HMAC-SHA256 under audit
// keys that are held only wrapped under the master key, replicated to the
// drives, and anchored by a head record on the drives and in the index.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"coffer/index"
	"coffer/repo"
)

// Record kinds of the audit trail in the common envelope (records.go). The
// numbers are part of the format and never reused.
const (
	recAuditEntry byte = 4 // one audit entry: plain fields and its chain MAC
	recAuditHead  byte = 5 // the head of the chain: version = last seq, body = its MAC
	recAuditKeys  byte = 6 // the audit keys, sealed under one or two master-key epochs
)

// Names of the audit records on the drives and in the index.
const (
	auditEntryPrefix = "r/audit/"     // + seq as 16 hex digits
	auditHeadName    = "r/audit-head" // drive record of the head
	auditKeysName    = "r/audit-key"  // drive record of the audit keys
	metaAuditHead    = "audit-head"   // index Meta of the head (same bytes)
	metaAuditKeys    = "audit-key"    // index Meta of the audit keys (same bytes)

	auditEntryFormat = 1  // first byte of an entry body
	auditMACLen      = 32 // HMAC-SHA256
	maxAuditActor    = 128
	maxAuditAction   = 64
	maxAuditOutcome  = 128
	maxAuditDetail   = 1024
	maxAuditSeals    = 8
	maxAuditProblems = 100

	// Action of the entry that links the chain across a master-key rotation.
	auditKeyRotate = "key.rotate"
)

// auditLockID is the key under which logAudit, rewrapAuditKey and
// recoverAudit serialise through Engine.lockTenant. It is not a tenant: tenant
// IDs are random, and a collision with this fixed value has probability
// 2^-128. (A dedicated mutex field in Engine would do the same.)
var auditLockID = [16]byte{0xff, 'c', 'o', 'f', 'f', 'e', 'r', '/', 'a', 'u', 'd', 'i', 't', 0xff, 0xff, 0xff}

func auditEntryName(seq uint64) string { return fmt.Sprintf("%s%016x", auditEntryPrefix, seq) }

// auditErrorClasses are the error classes an entry's outcome may name. The
// outcome of any other error is "error: failed": an error's own text may hold
// tenant names or paths, so it is never written to the log.
var auditErrorClasses = []error{
	ErrTenantLocked, ErrTenantNotFound, ErrTenantExists, ErrSnapshotNotFound,
	ErrAmbiguous, ErrPathNotFound, ErrPartialBackup, ErrCheckFailed, ErrDamage,
	ErrWrongKey, ErrNoMasterKey, ErrBadKeyFile, ErrRepoLocked, ErrInvalid,
	ErrAuth, ErrCorrupt, ErrQuotaExceeded, repo.ErrDriveFull, repo.ErrTooFewDrives, repo.ErrTooFewShards,
}

// auditOutcome is the outcome text of an entry: "ok" for nil, else
// "error: " and the short class of err.
func auditOutcome(err error) string {
	if err == nil {
		return "ok"
	}
	for _, c := range auditErrorClasses {
		if errors.Is(err, c) {
			return "error: " + strings.TrimPrefix(c.Error(), "engine: ")
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "error: interrupted"
	}
	return "error: failed"
}

// AuditEntry is one entry of the audit log as listed by AuditLog.
type AuditEntry struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"` // UTC
	Epoch   uint32    `json:"master_key_epoch"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Tenant  string    `json:"tenant,omitempty"` // tenant ID in hex; "" = none
	Outcome string    `json:"outcome"`          // "ok" or "error: <class>"
	Detail  string    `json:"detail,omitempty"` // "key=value ..." with numbers and IDs only
	MAC     string    `json:"mac"`              // chain MAC of this entry, hex
}

// auditRec is an encoded entry: the envelope header (kind recAuditEntry,
// version = seq) and the fields below, then the chain MAC.
type auditRec struct {
	seq     uint64
	nanos   int64 // time, Unix nanoseconds UTC
	epoch   uint32
	tenant  [16]byte
	actor   string
	action  string
	outcome string
	detail  string
	mac     [auditMACLen]byte
}

// body returns the bytes the MAC covers: envelope header || entry fields.
func (a *auditRec) body() []byte {
	h := (&record{Kind: recAuditEntry, Version: a.seq}).header()
	b := make([]byte, 0, len(h)+1+8+4+16+4+len(a.actor)+len(a.action)+len(a.outcome)+len(a.detail)+auditMACLen)
	b = append(b, h...)
	b = append(b, auditEntryFormat)
	b = binary.LittleEndian.AppendUint64(b, uint64(a.nanos))
	b = binary.LittleEndian.AppendUint32(b, a.epoch)
	b = append(b, a.tenant[:]...)
	b = append(b, byte(len(a.actor)))
	b = append(b, a.actor...)
	b = append(b, byte(len(a.action)))
	b = append(b, a.action...)
	b = append(b, byte(len(a.outcome)))
	b = append(b, a.outcome...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(a.detail)))
	return append(b, a.detail...)
}

// encode returns the whole record: body || MAC.
func (a *auditRec) encode() []byte { return append(a.body(), a.mac[:]...) }

// seal computes the entry's chain MAC from the previous one.
func (a *auditRec) seal(key *[KeySize]byte, prev [auditMACLen]byte) {
	a.mac = auditMAC(key, prev, a.body())
}

// auditMAC is HMAC-SHA256(key, prev || body).
func auditMAC(key *[KeySize]byte, prev [auditMACLen]byte, body []byte) [auditMACLen]byte {
	m := hmac.New(sha256.New, key[:])
	m.Write(prev[:])
	m.Write(body)
	var out [auditMACLen]byte
	copy(out[:], m.Sum(nil))
	return out
}

func (a *auditRec) entry() AuditEntry {
	en := AuditEntry{
		Seq: a.seq, Time: time.Unix(0, a.nanos).UTC(), Epoch: a.epoch, Actor: a.actor,
		Action: a.action, Outcome: a.outcome, Detail: a.detail, MAC: hex.EncodeToString(a.mac[:]),
	}
	if a.tenant != ([16]byte{}) {
		en.Tenant = hex.EncodeToString(a.tenant[:])
	}
	return en
}

// decodeAuditEnvelope checks the envelope of an audit record of the given
// kind and returns its version and body. Errors wrap ErrCorrupt.
func decodeAuditEnvelope(b []byte, kind byte) (uint64, []byte, error) {
	if len(b) < recHeaderLen || string(b[:4]) != recMagic {
		return 0, nil, fmt.Errorf("%w: not a coffer record", ErrCorrupt)
	}
	if b[4] != kind {
		return 0, nil, fmt.Errorf("%w: record kind %d, want %d", ErrCorrupt, b[4], kind)
	}
	if b[5] != 0 {
		return 0, nil, fmt.Errorf("%w: audit record flags %#x", ErrCorrupt, b[5])
	}
	v := binary.LittleEndian.Uint64(b[6:14])
	if v == 0 {
		return 0, nil, fmt.Errorf("%w: record version 0", ErrCorrupt)
	}
	return v, b[recHeaderLen:], nil
}

// decodeAuditRec parses an entry record. It does not check the MAC. Errors
// wrap ErrCorrupt.
func decodeAuditRec(b []byte) (*auditRec, error) {
	seq, p, err := decodeAuditEnvelope(b, recAuditEntry)
	if err != nil {
		return nil, err
	}
	bad := func(what string) (*auditRec, error) {
		return nil, fmt.Errorf("%w: audit entry %d: %s", ErrCorrupt, seq, what)
	}
	if len(p) < 1+8+4+16 {
		return bad("truncated")
	}
	if p[0] != auditEntryFormat {
		return bad(fmt.Sprintf("unknown entry format %d", p[0]))
	}
	a := &auditRec{seq: seq}
	a.nanos = int64(binary.LittleEndian.Uint64(p[1:9]))
	a.epoch = binary.LittleEndian.Uint32(p[9:13])
	copy(a.tenant[:], p[13:29])
	p = p[29:]
	str8 := func() (string, bool) {
		if len(p) < 1 || len(p) < 1+int(p[0]) {
			return "", false
		}
		s := string(p[1 : 1+int(p[0])])
		p = p[1+int(p[0]):]
		return s, true
	}
	var ok1, ok2, ok3 bool
	a.actor, ok1 = str8()
	a.action, ok2 = str8()
	a.outcome, ok3 = str8()
	if !ok1 || !ok2 || !ok3 || len(p) < 2 {
		return bad("truncated")
	}
	n := int(binary.LittleEndian.Uint16(p))
	p = p[2:]
	if len(p) != n+auditMACLen {
		return bad("length does not match its fields")
	}
	a.detail = string(p[:n])
	copy(a.mac[:], p[n:])
	return a, nil
}

// encodeAuditHead encodes the head anchor: envelope (kind recAuditHead,
// version = seq) || MAC of entry seq.
func encodeAuditHead(seq uint64, mac [auditMACLen]byte) []byte {
	return append((&record{Kind: recAuditHead, Version: seq}).header(), mac[:]...)
}

func decodeAuditHead(b []byte) (uint64, [auditMACLen]byte, error) {
	var mac [auditMACLen]byte
	seq, p, err := decodeAuditEnvelope(b, recAuditHead)
	if err != nil {
		return 0, mac, err
	}
	if len(p) != auditMACLen {
		return 0, mac, fmt.Errorf("%w: audit head of %d bytes", ErrCorrupt, len(b))
	}
	copy(mac[:], p)
	return seq, mac, nil
}

// auditKeyAD binds a seal of the audit keys to the repository and the
// master-key epoch that seals it.
func auditKeyAD(repoID [16]byte, epoch uint32) []byte {
	ad := make([]byte, 0, 8+16+4)
	ad = append(ad, "CFAK0001"...)
	ad = append(ad, repoID[:]...)
	return binary.LittleEndian.AppendUint32(ad, epoch)
}

// auditKeys are the audit keys by master-key epoch: each epoch's entries are
// chained under that epoch's key.
type auditKeys map[uint32]*[KeySize]byte

func (k auditKeys) plaintext() []byte {
	epochs := make([]uint32, 0, len(k))
	for ep := range k {
		epochs = append(epochs, ep)
	}
	sort.Slice(epochs, func(i, j int) bool { return epochs[i] < epochs[j] })
	out := make([]byte, 0, len(k)*(4+KeySize))
	for _, ep := range epochs {
		out = binary.LittleEndian.AppendUint32(out, ep)
		out = append(out, k[ep][:]...)
	}
	return out
}

// encodeAuditKeys seals keys under each of mks: envelope (kind recAuditKeys,
// version = highest sealing epoch) || seal count (u8) || per seal: epoch
// (u32) · length (u16) · nonce || XChaCha20-Poly1305(wrap key, plaintext,
// "CFAK0001" || repository ID || epoch).
func encodeAuditKeys(keys auditKeys, mks ...*masterKey) []byte {
	var version uint64
	for _, mk := range mks {
		version = max(version, uint64(mk.epoch))
	}
	plain := keys.plaintext()
	out := (&record{Kind: recAuditKeys, Version: version}).header()
	out = append(out, byte(len(mks)))
	for _, mk := range mks {
		s := sealRaw(&mk.wrap, auditKeyAD(mk.repo, mk.epoch), plain)
		out = binary.LittleEndian.AppendUint32(out, mk.epoch)
		out = binary.LittleEndian.AppendUint16(out, uint16(len(s)))
		out = append(out, s...)
	}
	return out
}

// openAuditKeys opens the seal of mk's epoch in an audit keys record. It
// also returns the epochs of the record's seals. An intact record without a
// seal for mk's epoch gives an error wrapping ErrWrongKey; a damaged one
// ErrCorrupt or ErrAuth.
func openAuditKeys(mk *masterKey, b []byte) (auditKeys, []uint32, error) {
	_, p, err := decodeAuditEnvelope(b, recAuditKeys)
	if err != nil {
		return nil, nil, err
	}
	if len(p) < 1 || p[0] == 0 || p[0] > maxAuditSeals {
		return nil, nil, fmt.Errorf("%w: audit keys record without seals", ErrCorrupt)
	}
	n := int(p[0])
	p = p[1:]
	var epochs []uint32
	var mine []byte
	for range n {
		if len(p) < 6 {
			return nil, nil, fmt.Errorf("%w: audit keys record truncated", ErrCorrupt)
		}
		ep := binary.LittleEndian.Uint32(p)
		l := int(binary.LittleEndian.Uint16(p[4:]))
		if len(p) < 6+l {
			return nil, nil, fmt.Errorf("%w: audit keys record truncated", ErrCorrupt)
		}
		epochs = append(epochs, ep)
		if ep == mk.epoch {
			mine = p[6 : 6+l]
		}
		p = p[6+l:]
	}
	if len(p) != 0 {
		return nil, nil, fmt.Errorf("%w: audit keys record has trailing bytes", ErrCorrupt)
	}
	if mine == nil {
		return nil, epochs, fmt.Errorf("%w: the audit keys are not wrapped under master key epoch %d (they are under %v)", ErrWrongKey, mk.epoch, epochs)
	}
	plain, err := openRaw(&mk.wrap, auditKeyAD(mk.repo, mk.epoch), mine)
	if err != nil {
		return nil, epochs, fmt.Errorf("open audit keys: %w", err)
	}
	if len(plain) == 0 || len(plain)%(4+KeySize) != 0 {
		return nil, epochs, fmt.Errorf("%w: audit keys of %d bytes", ErrCorrupt, len(plain))
	}
	keys := auditKeys{}
	for ; len(plain) > 0; plain = plain[4+KeySize:] {
		k := new([KeySize]byte)
		copy(k[:], plain[4:4+KeySize])
		keys[binary.LittleEndian.Uint32(plain)] = k
	}
	return keys, epochs, nil
}

// auditStore is what the audit code reads and writes: the drives, the index
// and the master key of the moment. Callers serialise writers (auditLock).
type auditStore struct {
	rp *repo.Repo
	db *index.DB
	mk *masterKey
}

func (e *Engine) auditStore() *auditStore {
	return &auditStore{rp: e.rp(), db: e.db, mk: e.currentKey()}
}

// auditLock serialises every writer of the audit log in this process.
func (e *Engine) auditLock() func() { return e.lockTenant(auditLockID) }

// keysState is the audit keys as found, and what must be rewritten.
type keysState struct {
	keys      auditKeys
	raw       []byte // record bytes to store, when writeDrives or writeIndex
	writeDrv  bool   // the drives need raw (new keys, or a seal of an old epoch dropped)
	writeIdx  bool   // the index needs raw
	foundNone bool   // no audit keys anywhere
}

// loadKeys finds the audit keys: the index first, then the drives (the
// highest version that opens under s.mk). A record that still carries a
// seal of an epoch older than s.mk's (a rotation is complete) is rewritten
// with s.mk's seal only.
func (s *auditStore) loadKeys(ctx context.Context) (*keysState, error) {
	st := &keysState{}
	raw, err := s.db.Meta(metaAuditKeys)
	switch {
	case err == nil:
		keys, epochs, oerr := openAuditKeys(s.mk, raw)
		if oerr == nil {
			st.keys = keys
			if hasOlder(epochs, s.mk.epoch) {
				st.raw, st.writeDrv, st.writeIdx = encodeAuditKeys(keys, s.mk), true, true
			}
			return st, nil
		}
		// Fall back to the drives: the index may hold a copy from before a
		// rotation that reached the drives first.
	case !errors.Is(err, index.ErrNotFound):
		return nil, fmt.Errorf("read audit keys from the index: %w", err)
	}
	copies, err := s.rp.GetRecord(ctx, auditKeysName)
	if errors.Is(err, repo.ErrNotFound) {
		st.foundNone = true
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit keys from the drives: %w", err)
	}
	var best []byte
	var bestV uint64
	var firstErr error
	for _, c := range copies {
		v, _, derr := decodeAuditEnvelope(c, recAuditKeys)
		if derr != nil {
			firstErr = cmpErr(firstErr, derr)
			continue
		}
		keys, epochs, oerr := openAuditKeys(s.mk, c)
		if oerr != nil {
			firstErr = cmpErr(firstErr, oerr)
			continue
		}
		if best == nil || v > bestV {
			best, bestV, st.keys = c, v, keys
			st.writeDrv = hasOlder(epochs, s.mk.epoch)
		}
	}
	if best == nil {
		return nil, fmt.Errorf("audit keys on the drives: %w", firstErr)
	}
	st.raw, st.writeIdx = best, true
	if st.writeDrv {
		st.raw = encodeAuditKeys(st.keys, s.mk)
	}
	return st, nil
}

func cmpErr(first, err error) error {
	if first == nil {
		return err
	}
	return first
}

func hasOlder(epochs []uint32, epoch uint32) bool {
	for _, ep := range epochs {
		if ep < epoch {
			return true
		}
	}
	return false
}

// auditPos is a position in the chain: the last seq and its MAC (seq 0 and
// a zero MAC before the first entry).
type auditPos struct {
	seq uint64
	mac [auditMACLen]byte
}

// indexHead returns the head anchored in the index, and whether there is one.
func (s *auditStore) indexHead() (auditPos, bool, error) {
	raw, err := s.db.Meta(metaAuditHead)
	if errors.Is(err, index.ErrNotFound) {
		return auditPos{}, false, nil
	}
	if err != nil {
		return auditPos{}, false, fmt.Errorf("read audit head from the index: %w", err)
	}
	seq, mac, err := decodeAuditHead(raw)
	if err != nil {
		return auditPos{}, false, fmt.Errorf("audit head in the index: %w", err)
	}
	return auditPos{seq, mac}, true, nil
}

// driveHead returns the highest valid head anchored on the drives, and
// whether there is one. Copies that do not decode are skipped; if none
// decodes, the error wraps ErrCorrupt.
func (s *auditStore) driveHead(ctx context.Context) (auditPos, bool, error) {
	copies, err := s.rp.GetRecord(ctx, auditHeadName)
	if errors.Is(err, repo.ErrNotFound) {
		return auditPos{}, false, nil
	}
	if err != nil {
		return auditPos{}, false, fmt.Errorf("read audit head from the drives: %w", err)
	}
	var best auditPos
	found := false
	var firstErr error
	for _, c := range copies {
		seq, mac, err := decodeAuditHead(c)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			continue
		}
		if !found || seq > best.seq {
			best, found = auditPos{seq, mac}, true
		}
	}
	if !found {
		return auditPos{}, false, fmt.Errorf("audit head on the drives: %w", firstErr)
	}
	return best, true, nil
}

// driveEntry reads entry seq from the drives and returns the copy that
// chains from prev under keys, or nil if no copy does.
func (s *auditStore) driveEntry(ctx context.Context, seq uint64, prev [auditMACLen]byte, keys auditKeys) (*auditRec, error) {
	copies, err := s.rp.GetRecord(ctx, auditEntryName(seq))
	if errors.Is(err, repo.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit entry %d from the drives: %w", seq, err)
	}
	for _, c := range copies {
		a, err := decodeAuditRec(c)
		if err != nil || a.seq != seq || keys[a.epoch] == nil {
			continue
		}
		if want := auditMAC(keys[a.epoch], prev, a.body()); hmac.Equal(want[:], a.mac[:]) {
			return a, nil
		}
	}
	return nil, nil
}

// lastIndexEntry returns the entry at the index head, checking that it is
// the last entry of the index and that its MAC is the head's.
func (s *auditStore) lastIndexEntry(head auditPos, present bool) (*auditRec, error) {
	var last *auditRec
	n := 0
	errStop := errors.New("stop")
	err := s.db.Audit(head.seq, func(seq uint64, v []byte) error {
		n++
		if n > 1 || !present {
			return errStop
		}
		a, err := decodeAuditRec(v)
		if err != nil {
			return err
		}
		if seq != head.seq || a.seq != seq || a.mac != head.mac {
			return fmt.Errorf("%w: the audit head in the index (entry %d) does not match its last entry (%d)", ErrCorrupt, head.seq, seq)
		}
		last = a
		return nil
	})
	if errors.Is(err, errStop) {
		if !present {
			return nil, fmt.Errorf("%w: the index holds audit entries but no audit head (run coffer index rebuild)", ErrCorrupt)
		}
		return nil, fmt.Errorf("%w: the index holds audit entries after its audit head %d", ErrCorrupt, head.seq)
	}
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	if present && last == nil {
		return nil, fmt.Errorf("%w: the audit head in the index names entry %d, which is missing", ErrCorrupt, head.seq)
	}
	return last, nil
}

// auditInput is one entry to append, before it has a place in the chain.
type auditInput struct {
	when    time.Time
	actor   string
	action  string
	tenant  [16]byte
	outcome string
	detail  string
}

func validAuditAction(a string) error {
	if len(a) == 0 || len(a) > maxAuditAction {
		return invalidf("audit action %q must have 1 to %d characters", a, maxAuditAction)
	}
	for _, c := range []byte(a) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return invalidf("audit action %q may hold only a-z, 0-9 and . _ -", a)
		}
	}
	return nil
}

// validAuditDetail checks that detail is "key=value" pairs separated by
// single spaces, keys of a-z, 0-9 and _, values of hex digits, digits and
// . : + - only: numbers and IDs, never names, paths or other text.
func validAuditDetail(d string) error {
	if d == "" {
		return nil
	}
	if len(d) > maxAuditDetail {
		return invalidf("audit detail of %d bytes, more than %d", len(d), maxAuditDetail)
	}
	for tok := range strings.SplitSeq(d, " ") {
		k, v, ok := strings.Cut(tok, "=")
		if !ok || k == "" || v == "" {
			return invalidf("audit detail %q: want key=value pairs separated by spaces", d)
		}
		for _, c := range []byte(k) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				return invalidf("audit detail key %q may hold only a-z, 0-9 and _", k)
			}
		}
		for _, c := range []byte(v) {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == '.' || c == ':' || c == '+' || c == '-') {
				return invalidf("audit detail value %q may hold only numbers and hex IDs", v)
			}
		}
	}
	return nil
}

// cleanActor keeps an actor printable and bounded: spaces and control
// characters become '_', and it is cut to maxAuditActor bytes.
func cleanActor(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c <= ' ' || c >= 0x7f {
			b[i] = '_'
		}
	}
	if len(b) > maxAuditActor {
		b = b[:maxAuditActor]
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}

// linkDetail is the detail of the entry that links the chain from epoch
// old to epoch new.
func linkDetail(old, new uint32) string {
	return fmt.Sprintf("old_epoch=%d new_epoch=%d", old, new)
}

// isLink reports whether a is the linking entry of a rotation from old to
// a.epoch.
func (a *auditRec) isLink(old uint32) bool {
	if a.action != auditKeyRotate || a.outcome != "ok" {
		return false
	}
	want := strings.Fields(linkDetail(old, a.epoch))
	have := strings.Fields(a.detail)
	return len(have) >= 2 && have[0] == want[0] && have[1] == want[1]
}

// append adds in to the log: the drives first (keys if new, the entry, the
// head), then one index batch (the entry, the head, the keys). The caller
// holds the audit lock.
func (s *auditStore) append(ctx context.Context, in auditInput) error {
	if err := validAuditAction(in.action); err != nil {
		return err
	}
	if err := validAuditDetail(in.detail); err != nil {
		return err
	}
	if len(in.outcome) > maxAuditOutcome {
		in.outcome = in.outcome[:maxAuditOutcome]
	}
	in.actor = cleanActor(in.actor)

	head, present, err := s.indexHead()
	if err != nil {
		return err
	}
	last, err := s.lastIndexEntry(head, present)
	if err != nil {
		return err
	}
	dhead, dpresent, err := s.driveHead(ctx)
	if err != nil {
		return err
	}
	ks, err := s.loadKeys(ctx)
	if err != nil {
		return err
	}
	if ks.foundNone {
		if present || dpresent {
			return fmt.Errorf("%w: the audit log has entries but its audit keys are missing from the index and the drives", ErrCorrupt)
		}
		k := new([KeySize]byte)
		randomBytes(k[:])
		ks.keys = auditKeys{s.mk.epoch: k}
		ks.raw, ks.writeDrv, ks.writeIdx = encodeAuditKeys(ks.keys, s.mk), true, true
	}
	var toIndex []*auditRec // entries for the index batch, in order
	if dpresent && dhead.seq > head.seq {
		// Writes that reached the drives but not the index (an append of a
		// linking entry and its action writes two): adopt them in order,
		// each verified against the chain.
		for seq := head.seq + 1; seq <= dhead.seq; seq++ {
			a, err := s.driveEntry(ctx, seq, head.mac, ks.keys)
			if err != nil {
				return err
			}
			if a == nil {
				return fmt.Errorf("%w: the audit log in the index ends at entry %d, the drives' head is entry %d, and entry %d is missing from the drives (run coffer index rebuild)", ErrCorrupt, head.seq, dhead.seq, seq)
			}
			toIndex = append(toIndex, a)
			last, head = a, auditPos{a.seq, a.mac}
		}
		if head.mac != dhead.mac {
			return fmt.Errorf("%w: the drives' audit head names entry %d, which does not verify", ErrCorrupt, dhead.seq)
		}
	}

	var fresh []*auditRec
	add := func(action string, tenant [16]byte, outcome, detail string) {
		a := &auditRec{
			seq: head.seq + 1, nanos: in.when.UnixNano(), epoch: s.mk.epoch, tenant: tenant,
			actor: in.actor, action: action, outcome: outcome, detail: detail,
		}
		a.seal(ks.keys[a.epoch], head.mac)
		fresh = append(fresh, a)
		head = auditPos{a.seq, a.mac}
	}
	if ks.keys[s.mk.epoch] == nil {
		return fmt.Errorf("%w: the audit keys hold no key for master key epoch %d", ErrCorrupt, s.mk.epoch)
	}
	detail := in.detail
	if last != nil && last.epoch != s.mk.epoch {
		if last.epoch > s.mk.epoch {
			return fmt.Errorf("%w: the audit log's last entry is under master key epoch %d, newer than the key file's %d", ErrWrongKey, last.epoch, s.mk.epoch)
		}
		link := linkDetail(last.epoch, s.mk.epoch)
		if in.action == auditKeyRotate && in.outcome == "ok" {
			// The caller's rotation entry is the link: it starts with the epochs.
			var rest []string
			for tok := range strings.SplitSeq(detail, " ") {
				if tok != "" && !strings.HasPrefix(tok, "old_epoch=") && !strings.HasPrefix(tok, "new_epoch=") {
					rest = append(rest, tok)
				}
			}
			detail = strings.Join(append([]string{link}, rest...), " ")
			if err := validAuditDetail(detail); err != nil {
				return err
			}
		} else {
			// A rotation that was not logged (interrupted before its entry):
			// link the chain first.
			add(auditKeyRotate, [16]byte{}, "ok", link)
		}
	}
	add(in.action, in.tenant, in.outcome, detail)

	// Drives first: keys, entries, head.
	if ks.writeDrv {
		if err := s.rp.PutRecord(ctx, auditKeysName, ks.raw); err != nil {
			return fmt.Errorf("write audit keys to drives: %w", err)
		}
	}
	for _, a := range fresh {
		if err := s.rp.PutRecord(ctx, auditEntryName(a.seq), a.encode()); err != nil {
			return fmt.Errorf("write audit entry %d to drives: %w", a.seq, err)
		}
	}
	headRaw := encodeAuditHead(head.seq, head.mac)
	if err := s.rp.PutRecord(ctx, auditHeadName, headRaw); err != nil {
		return fmt.Errorf("write audit head to drives: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, a := range append(toIndex, fresh...) {
		b.PutAudit(a.seq, a.encode())
	}
	b.PutMeta(metaAuditHead, headRaw)
	if ks.writeIdx {
		b.PutMeta(metaAuditKeys, ks.raw)
	}
	if err := b.Commit(); err != nil {
		return fmt.Errorf("write audit entry %d to the index: %w", head.seq, err)
	}
	return nil
}

// logAudit appends one entry to the audit log: the action (a short name
// such as "tenant.create"), the tenant it concerns (the zero ID for none),
// the outcome (nil for "ok", else the error's class: never its text) and a
// detail of "key=value" pairs holding numbers and IDs only (or ""). The
// actor is Options.Actor, else the OS user; the time is Options.Now.
//
// The entry is written to the drives (entry record, then head) and then to
// the index in one batch, so the index never holds an entry the drives do
// not. Concurrent calls are serialised. If the master-key epoch changed
// since the last entry and action is not "key.rotate" with a nil outcome,
// a linking "key.rotate" entry is appended first. An invalid action or
// detail gives ErrInvalid and writes nothing; a damaged log gives an error
// wrapping ErrCorrupt and writes nothing.
//
// Callers log after the action; if logAudit fails, they return an error
// saying the action was done but could not be audited.
func (e *Engine) logAudit(ctx context.Context, action string, tenant [16]byte, outcome error, detail string) error {
	actor := e.opts.Actor
	if actor == "" {
		actor = osUser()
	}
	unlock := e.auditLock()
	defer unlock()
	err := e.auditStore().append(ctx, auditInput{
		when: e.now().UTC(), actor: actor, action: action, tenant: tenant,
		outcome: auditOutcome(outcome), detail: detail,
	})
	if err != nil {
		return fmt.Errorf("write audit entry %s: %w", action, err)
	}
	return nil
}

// startAudit creates the audit keys and the first entry ("init") of a new
// repository. Init calls it once the index exists.
func startAudit(ctx context.Context, r *repo.Repo, db *index.DB, mk *masterKey, actor string, when time.Time, detail string) error {
	if actor == "" {
		actor = osUser()
	}
	s := &auditStore{rp: r, db: db, mk: mk}
	err := s.append(ctx, auditInput{when: when.UTC(), actor: actor, action: "init", outcome: "ok", detail: detail})
	if err != nil {
		return fmt.Errorf("start the audit log: %w", err)
	}
	return nil
}

// AuditHead returns the head of the audit chain as anchored in the index:
// the sequence number of the last entry and its MAC in hex. An empty log
// gives (0, "", nil). The weekly report prints it, so a later cut of the
// tail is detected by VerifyAudit with that anchor.
func (e *Engine) AuditHead() (seq uint64, mac string, err error) {
	h, ok, err := e.auditStore().indexHead()
	if err != nil || !ok {
		return 0, "", err
	}
	return h.seq, hex.EncodeToString(h.mac[:]), nil
}

// AuditLog calls fn for every entry of the audit log in the index, in
// sequence order, from one goroutine, without checking the chain (see
// VerifyAudit). Entries are streamed: memory does not grow with the log. An
// error from fn stops the listing and is returned; an entry that does not
// decode stops it with an error wrapping ErrCorrupt.
func (e *Engine) AuditLog(ctx context.Context, fn func(AuditEntry) error) error {
	return e.db.Audit(0, func(seq uint64, v []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		a, err := decodeAuditRec(v)
		if err != nil {
			return fmt.Errorf("audit entry %d: %w", seq, err)
		}
		return fn(a.entry())
	})
}

// AuditAnchor is a head of the chain recorded elsewhere (a weekly report):
// entry Seq must still exist with this MAC (hex).
type AuditAnchor struct {
	Seq uint64
	MAC string
}

// ParseAuditAnchor parses "SEQ:MAC" as printed by the weekly report.
func ParseAuditAnchor(s string) (AuditAnchor, error) {
	a, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	seq, err := strconv.ParseUint(a, 10, 64)
	var mac [auditMACLen]byte
	if !ok || err != nil || seq == 0 || decodeHexInto(mac[:], strings.ToLower(m)) != nil {
		return AuditAnchor{}, invalidf("audit anchor %q is not SEQ:MAC (a sequence number and 64 hex digits)", s)
	}
	return AuditAnchor{Seq: seq, MAC: strings.ToLower(m)}, nil
}

// AuditVerifyReport is what VerifyAudit found.
type AuditVerifyReport struct {
	Entries uint64 `json:"entries"`
	// Snapshots counts the snapshots (in the index or on the drives) whose
	// "backup" entry was looked for.
	Snapshots int      `json:"snapshots"`
	HeadSeq   uint64   `json:"head_seq"`
	HeadMAC   string   `json:"head_mac,omitempty"`
	IndexHead uint64   `json:"index_head"`
	DriveHead uint64   `json:"drive_head"`
	Rotations int      `json:"rotations"`
	Problems  []string `json:"problems"` // an altered, missing, reordered or cut-off entry
	Notes     []string `json:"notes"`    // harmless findings (an interrupted write)
}

func (r *AuditVerifyReport) problem(format string, args ...any) {
	switch {
	case len(r.Problems) < maxAuditProblems:
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	case len(r.Problems) == maxAuditProblems:
		r.Problems = append(r.Problems, "more problems not listed")
	}
}

// VerifyAudit checks the audit log in the index entry by entry, streaming:
// sequence numbers 1, 2, … without gaps, each entry stored under its own
// sequence number, each MAC recomputed under the audit key of the entry's
// master-key epoch from the previous MAC, every change of epoch introduced
// by a "key.rotate" linking entry, and the last entry equal to the heads
// anchored in the index and on the drives and to every anchor given (from
// earlier weekly reports). A single entry present on the drives but not yet
// in the index (an interrupted write, adopted by the next append) is a note.
// It returns the report and, when there is a problem, an error wrapping
// ErrCheckFailed (the CLI exits 14).
func (e *Engine) VerifyAudit(ctx context.Context, anchors ...AuditAnchor) (rep *AuditVerifyReport, err error) {
	defer func() {
		if rep != nil {
			e.emit(auditEvent(rep, err))
		}
	}()
	rep = &AuditVerifyReport{}
	// The snapshots are listed before the log is read: a backup writes its
	// entry before its snapshot, so every snapshot listed has its entry in
	// the log read after, even on a live server.
	snaps, err := e.listSnapshotIDs(ctx, rep)
	if err != nil {
		return nil, err
	}
	rep.Snapshots = len(snaps)
	backupEntry := func(a *auditRec) {
		if a.action != "backup" || a.tenant == ([16]byte{}) {
			return
		}
		for tok := range strings.SplitSeq(a.detail, " ") {
			if v, ok := strings.CutPrefix(tok, "snapshot="); ok {
				var k auditSnapKey
				copy(k[:16], a.tenant[:])
				if decodeHexInto(k[16:], v) == nil {
					delete(snaps, k)
				}
			}
		}
	}
	// The heads and the log are read under the audit lock: an entry
	// appended between reading a head and reading the log (an action on a
	// live server, whose admin socket runs this too) would look like a cut.
	unlock := e.auditLock()
	defer unlock()
	s := e.auditStore()
	ihead, ipresent, err := s.indexHead()
	if err != nil {
		rep.problem("%v", err)
	}
	dhead, dpresent, err := s.driveHead(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rep.problem("%v", err)
	}
	rep.IndexHead, rep.DriveHead = ihead.seq, dhead.seq
	ks, err := s.loadKeys(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rep.problem("audit keys: %v", err)
		ks = &keysState{keys: auditKeys{}}
	}

	// MACs seen at the positions named by the anchors, filled while streaming.
	want := map[uint64][]string{}
	for _, a := range anchors {
		want[a.Seq] = append(want[a.Seq], a.MAC)
	}
	var (
		prev      [auditMACLen]byte
		prevKnown = true
		last      *auditRec
		expect    = uint64(1)
		atIndex   *[auditMACLen]byte
		atDrive   *[auditMACLen]byte
	)
	err = s.db.Audit(0, func(seq uint64, v []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		rep.Entries++
		if seq != expect {
			if seq > expect {
				rep.problem("entries %d to %d are missing (removed)", expect, seq-1)
			} else {
				rep.problem("entry stored under sequence number %d, which is not allowed", seq)
			}
		}
		expect = seq + 1
		a, err := decodeAuditRec(v)
		if err != nil {
			rep.problem("entry %d cannot be read (altered): %v", seq, err)
			prevKnown = false
			return nil
		}
		if a.seq != seq {
			rep.problem("entry %d holds entry %d (moved or reordered)", seq, a.seq)
		}
		switch k := ks.keys[a.epoch]; {
		case k == nil:
			rep.problem("entry %d: no audit key for master key epoch %d", seq, a.epoch)
		case prevKnown:
			if m := auditMAC(k, prev, a.body()); !hmac.Equal(m[:], a.mac[:]) {
				rep.problem("entry %d does not verify: it was altered, reordered, or follows a removed entry", seq)
			}
		}
		if last != nil && a.epoch != last.epoch {
			switch {
			case a.epoch < last.epoch:
				rep.problem("entry %d: master key epoch goes back from %d to %d", seq, last.epoch, a.epoch)
			case !a.isLink(last.epoch):
				rep.problem("entry %d: master key epoch changes from %d to %d without a key.rotate linking entry", seq, last.epoch, a.epoch)
			default:
				rep.Rotations++
			}
		}
		if seq == ihead.seq {
			m := a.mac
			atIndex = &m
		}
		if seq == dhead.seq {
			m := a.mac
			atDrive = &m
		}
		for _, w := range want[seq] {
			if w != hex.EncodeToString(a.mac[:]) {
				rep.problem("entry %d differs from the anchor %d:%s recorded earlier", seq, seq, w)
			}
		}
		delete(want, seq)
		backupEntry(a)
		prev, prevKnown, last = a.mac, true, a
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rep.problem("reading the audit log stopped: %v", err)
	}
	if ks.foundNone && (rep.Entries > 0 || ipresent || dpresent) {
		rep.problem("the audit keys are missing from the index and the drives")
	}
	var end uint64
	if last != nil {
		end = last.seq
		rep.HeadSeq, rep.HeadMAC = last.seq, hex.EncodeToString(last.mac[:])
	}

	// The heads: the index's must name the last entry; the drives' too, or
	// the one entry after it (an interrupted write).
	switch {
	case !ipresent && end > 0:
		rep.problem("the index has no audit head, but %d entries", rep.Entries)
	case ipresent && ihead.seq != end:
		rep.problem("the audit head in the index names entry %d, but the log ends at entry %d (entries cut off or added)", ihead.seq, end)
	case ipresent && (atIndex == nil || *atIndex != ihead.mac):
		rep.problem("the audit head in the index does not match entry %d", ihead.seq)
	}
	switch {
	case !dpresent && end > 0:
		rep.problem("the drives have no audit head, but the log has %d entries", rep.Entries)
	case dpresent && dhead.seq == end+1 && end == ihead.seq:
		a, err := s.driveEntry(ctx, dhead.seq, prev, ks.keys)
		if err != nil {
			rep.problem("%v", err)
		} else if a == nil || a.mac != dhead.mac {
			rep.problem("the drives' audit head names entry %d, which is missing or does not verify (entries cut off)", dhead.seq)
		} else {
			rep.Notes = append(rep.Notes, fmt.Sprintf("entry %d is on the drives but not yet in the index (an interrupted write; the next audit entry adopts it)", a.seq))
			backupEntry(a)
			rep.HeadSeq, rep.HeadMAC = a.seq, hex.EncodeToString(a.mac[:])
			if ws := want[a.seq]; len(ws) > 0 {
				for _, w := range ws {
					if w != rep.HeadMAC {
						rep.problem("entry %d differs from the anchor %d:%s recorded earlier", a.seq, a.seq, w)
					}
				}
				delete(want, a.seq)
			}
			last = a
		}
	case dpresent && dhead.seq > end:
		rep.problem("the audit head on the drives names entry %d, but the log ends at entry %d (entries cut off)", dhead.seq, end)
	case dpresent && dhead.seq < end:
		rep.problem("the audit head on the drives names entry %d, but the log goes on to entry %d (the drives' anchor was rolled back, or entries were added to the index alone)", dhead.seq, end)
	case dpresent && (atDrive == nil || *atDrive != dhead.mac):
		rep.problem("the audit head on the drives does not match entry %d", dhead.seq)
	}
	for seq := range want {
		rep.problem("the anchor names entry %d, but the log ends at entry %d (entries cut off)", seq, rep.HeadSeq)
	}
	missing := make([]auditSnapKey, 0, len(snaps))
	for k := range snaps {
		missing = append(missing, k)
	}
	slices.SortFunc(missing, func(a, b auditSnapKey) int { return bytes.Compare(a[:], b[:]) })
	for _, k := range missing {
		rep.problem("snapshot %x of tenant %x has no backup entry in the audit log (it was saved unaudited)", k[16:], k[:16])
	}
	if last != nil && last.epoch < s.mk.epoch {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the last entry is under master key epoch %d, the key file has epoch %d: the next audit entry links the rotation", last.epoch, s.mk.epoch))
	}
	if last != nil && last.epoch > s.mk.epoch {
		rep.problem("the last entry is under master key epoch %d, newer than the key file's %d", last.epoch, s.mk.epoch)
	}
	if rep.Entries == 0 && rep.HeadSeq == 0 && len(rep.Problems) == 0 {
		rep.Notes = append(rep.Notes, "the audit log is empty")
	}
	if len(rep.Problems) > 0 {
		return rep, fmt.Errorf("%w: audit log: %d problems", ErrCheckFailed, len(rep.Problems))
	}
	return rep, nil
}

// auditSnapKey is a snapshot's tenant ID followed by its ID.
type auditSnapKey [32]byte

// listSnapshotIDs returns every snapshot of every tenant the index knows
// (shredded ones too), in the index or on the drives (a snapshot record on
// the drives, a forgotten one's tombstone included). Memory: one key per
// snapshot. A drive listing that fails is a note, not a problem.
func (e *Engine) listSnapshotIDs(ctx context.Context, rep *AuditVerifyReport) (map[auditSnapKey]struct{}, error) {
	var tenants []index.TenantID
	if err := e.db.Tenants(func(rec index.TenantRec) error {
		tenants = append(tenants, index.TenantID(rec.ID))
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	out := map[auditSnapKey]struct{}{}
	add := func(tid index.TenantID, sid []byte) {
		var k auditSnapKey
		copy(k[:16], tid[:])
		copy(k[16:], sid)
		out[k] = struct{}{}
	}
	for _, tid := range tenants {
		if err := e.db.Snapshots(tid, func(rec index.SnapshotRec) error {
			add(tid, rec.ID[:])
			return nil
		}); err != nil {
			return nil, fmt.Errorf("list the snapshots of tenant %x: %w", tid[:], err)
		}
		prefix := snapshotRecordName(tid, [16]byte{})
		prefix = prefix[:strings.LastIndexByte(prefix, '/')+1]
		err := e.rp().ListRecords(ctx, prefix, func(name string) error {
			var sid [16]byte
			if decodeHexInto(sid[:], strings.TrimPrefix(name, prefix)) == nil {
				add(tid, sid[:])
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			rep.Notes = append(rep.Notes, fmt.Sprintf("the snapshot records of tenant %x could not be listed on every drive: %v", tid[:], err))
		}
	}
	return out, nil
}

// rewrapAuditKey prepares the audit keys for a master-key rotation to
// newMK: it adds a fresh audit key for newMK's epoch (or keeps the one a
// previous, interrupted attempt added) and stores the keys sealed under both
// the current master key and newMK: drives first, then the index. Either key
// file therefore continues the log, whenever a crash interrupts the rotation.
//
// The rotation calls it before the repository config switches to the new
// epoch and before the old epoch is destroyed; once the engine uses newMK,
// it calls logAudit(ctx, "key.rotate", zero, nil, "") (the linking entry,
// which records old and new epochs); the first entry under newMK also drops
// the seal of the old epoch. newMK must belong to this repository and have a
// higher epoch than the current key.
func (e *Engine) rewrapAuditKey(ctx context.Context, newMK *masterKey) error {
	unlock := e.auditLock()
	defer unlock()
	s := e.auditStore()
	if newMK.repo != s.mk.repo || newMK.epoch <= s.mk.epoch {
		return invalidf("audit key rewrap to master key epoch %d of repository %x from epoch %d", newMK.epoch, newMK.repo[:], s.mk.epoch)
	}
	ks, err := s.loadKeys(ctx)
	if err != nil {
		return fmt.Errorf("rewrap audit keys: %w", err)
	}
	if ks.foundNone {
		k := new([KeySize]byte)
		randomBytes(k[:])
		ks.keys = auditKeys{s.mk.epoch: k}
	}
	if ks.keys[newMK.epoch] == nil {
		k := new([KeySize]byte)
		randomBytes(k[:])
		ks.keys[newMK.epoch] = k
	}
	raw := encodeAuditKeys(ks.keys, s.mk, newMK)
	if err := s.rp.PutRecord(ctx, auditKeysName, raw); err != nil {
		return fmt.Errorf("write audit keys to drives: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	b.PutMeta(metaAuditKeys, raw)
	if err := b.Commit(); err != nil {
		return fmt.Errorf("write audit keys to the index: %w", err)
	}
	return nil
}

// AuditRecovery tells what recoverAudit found on the drives.
type AuditRecovery struct {
	Entries uint64 // entries copied into the index
	Missing uint64 // sequence numbers up to the head with no valid copy
	Head    uint64 // last sequence number recovered
}

// recoverAudit copies the audit log from the drives into db (an index being
// rebuilt): the audit keys, every entry from 1 up to the drives' head (and
// beyond, while entries are found), and the head. For each entry it prefers
// a copy that chains from the previous one. Entries are committed in batches
// of a bounded size, so memory does not grow with the log; a missing entry is
// counted, not an error (VerifyAudit then reports it). It writes the index
// head as the drives' head when that verifies, else as the last entry
// recovered. r, db and mk are the rebuild's drive set, new index and master
// key; an index rebuild calls it before it writes the config, and nothing
// else may write the audit log of db meanwhile.
func recoverAudit(ctx context.Context, r *repo.Repo, db *index.DB, mk *masterKey) (*AuditRecovery, error) {
	s := &auditStore{rp: r, db: db, mk: mk}
	rec := &AuditRecovery{}
	copies, err := r.GetRecord(ctx, auditKeysName)
	if errors.Is(err, repo.ErrNotFound) {
		return rec, nil // no audit log was ever started
	}
	if err != nil {
		return nil, fmt.Errorf("read audit keys from the drives: %w", err)
	}
	var keysRaw []byte
	var keys auditKeys
	var bestV uint64
	for _, c := range copies {
		v, _, derr := decodeAuditEnvelope(c, recAuditKeys)
		if derr != nil {
			continue
		}
		if k, _, oerr := openAuditKeys(mk, c); oerr == nil && (keysRaw == nil || v > bestV) {
			keysRaw, keys, bestV = c, k, v
		}
	}
	if keysRaw == nil {
		return nil, fmt.Errorf("%w: no copy of the audit keys on the drives opens with master key epoch %d", ErrCorrupt, mk.epoch)
	}
	dhead, dpresent, err := s.driveHead(ctx)
	if err != nil {
		return nil, err
	}
	const batchSize = 1024
	b := db.NewBatch()
	defer func() { b.Close() }()
	b.PutMeta(metaAuditKeys, keysRaw)
	var prev [auditMACLen]byte
	var head auditPos
	for seq := uint64(1); ; seq++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		a, err := s.driveEntry(ctx, seq, prev, keys)
		if err != nil {
			return nil, err
		}
		if a == nil {
			// No copy chains: take any decodable copy, so verify can say
			// what is wrong with it.
			all, gerr := r.GetRecord(ctx, auditEntryName(seq))
			if gerr != nil && !errors.Is(gerr, repo.ErrNotFound) {
				return nil, fmt.Errorf("read audit entry %d from the drives: %w", seq, gerr)
			}
			for _, c := range all {
				if d, derr := decodeAuditRec(c); derr == nil && d.seq == seq {
					a = d
					break
				}
			}
		}
		if a == nil {
			if !dpresent || seq > dhead.seq {
				break
			}
			rec.Missing++
			continue
		}
		b.PutAudit(seq, a.encode())
		rec.Entries++
		prev, head = a.mac, auditPos{a.seq, a.mac}
		if b.Len() >= batchSize {
			if err := b.Commit(); err != nil {
				return nil, fmt.Errorf("write recovered audit entries: %w", err)
			}
			b.Close()
			b = db.NewBatch()
		}
	}
	if dpresent && dhead.seq == head.seq && dhead.mac == head.mac {
		head = dhead
	}
	rec.Head = head.seq
	if head.seq > 0 {
		b.PutMeta(metaAuditHead, encodeAuditHead(head.seq, head.mac))
	}
	if err := b.Commit(); err != nil {
		return nil, fmt.Errorf("write recovered audit log: %w", err)
	}
	return rec, nil
}
