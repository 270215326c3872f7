package engine

import (
	"encoding/binary"
	"fmt"
)

// Record kinds of the envelope of small replicated records on drives. The
// numbers are part of the format and never reused.
const (
	recConfig   byte = 1 // repository config, plain JSON (no secrets, no tenant data)
	recTenant   byte = 2 // tenant record: wrapped key and sealed metadata
	recSnapshot byte = 3 // snapshot record, sealed under the tenant's metadata key
	// 4, 5 and 6 are the audit log's kinds (audit.go); 7 is recClientKeys
	// (clientkeys.go).
)

const (
	recFlagTombstone byte = 1
	recHeaderLen          = 14
	recMagic              = "CFR1"
)

// record is a decoded envelope. Body is plain for recConfig; for the sealed
// kinds it is opened by the caller with recordAD(Header(), owner, name).
type record struct {
	Kind    byte
	Flags   byte
	Version uint64
	Body    []byte
}

func (r *record) tombstone() bool { return r.Flags&recFlagTombstone != 0 }

// header returns the 14 envelope header bytes:
// magic "CFR1" | kind u8 | flags u8 | version u64 LE.
func (r *record) header() []byte {
	h := make([]byte, recHeaderLen)
	copy(h, recMagic)
	h[4] = r.Kind
	h[5] = r.Flags
	binary.LittleEndian.PutUint64(h[6:], r.Version)
	return h
}

func (r *record) encode() []byte {
	return append(r.header(), r.Body...)
}

// decodeRecord parses an envelope. Errors wrap ErrCorrupt.
func decodeRecord(b []byte) (*record, error) {
	if len(b) < recHeaderLen || string(b[:4]) != recMagic {
		return nil, fmt.Errorf("%w: not a coffer record", ErrCorrupt)
	}
	r := &record{Kind: b[4], Flags: b[5], Version: binary.LittleEndian.Uint64(b[6:14])}
	if r.Kind < recConfig || r.Kind > recClientKeys {
		return nil, fmt.Errorf("%w: unknown record kind %d", ErrCorrupt, r.Kind)
	}
	if r.Flags&^recFlagTombstone != 0 {
		return nil, fmt.Errorf("%w: unknown record flags %#x", ErrCorrupt, r.Flags)
	}
	if r.Version == 0 {
		return nil, fmt.Errorf("%w: record version 0", ErrCorrupt)
	}
	r.Body = b[recHeaderLen:]
	return r, nil
}

// sealRecord seals body into a record of the given kind under key, bound to
// owner (tenant ID, or repository ID for tenant records) and the record name.
func sealRecord(key *[KeySize]byte, kind, flags byte, version uint64, owner [16]byte, name string, body []byte) []byte {
	r := &record{Kind: kind, Flags: flags, Version: version}
	r.Body = sealRaw(key, recordAD(r.header(), owner, name), compress(body))
	return r.encode()
}

// openRecord authenticates and opens a sealed record body.
func openRecord(key *[KeySize]byte, r *record, owner [16]byte, name string) ([]byte, error) {
	p, err := openRaw(key, recordAD(r.header(), owner, name), r.Body)
	if err != nil {
		return nil, fmt.Errorf("open record %s: %w", name, err)
	}
	return decompress(p, 0)
}
