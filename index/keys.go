package index

import (
	"encoding/binary"
	"fmt"
)

// Key schema. Every key starts with one prefix byte naming the record kind;
// all IDs are fixed width, so a tenant's keys of one kind form one contiguous
// range [prefix+tenant, successor(prefix+tenant)) that never overlaps another
// tenant's. The table is in docs/design.md; prefix values are never
// reused for another meaning.
const (
	kindConfig   byte = 0x01 // 0x01 "config"                      → opaque
	kindDrive    byte = 0x02 // 0x02 DriveID(8)                    → opaque
	kindTenant   byte = 0x03 // 0x03 TenantID(16)                  → TenantRec
	kindBlob     byte = 0x04 // 0x04 TenantID(16) BlobID(32)       → BlobLoc
	kindPack     byte = 0x05 // 0x05 TenantID(16) PackID(16)       → PackRec
	kindSnapshot byte = 0x06 // 0x06 TenantID(16) SnapshotID(16)   → SnapshotRec
	kindAudit    byte = 0x07 // 0x07 seq uint64 big-endian         → opaque
	kindMeta     byte = 0x08 // 0x08 name (1..maxMetaName bytes)   → opaque
	kindForgot   byte = 0x09 // 0x09 TenantID(16) SnapshotID(16)   → ForgottenRec
)

// Key lengths of the fixed-width kinds.
const (
	configKeyLen   = 1 + len("config")
	driveKeyLen    = 1 + 8
	tenantKeyLen   = 1 + 16
	blobKeyLen     = 1 + 16 + 32
	packKeyLen     = 1 + 16 + 16
	snapshotKeyLen = 1 + 16 + 16
	forgotKeyLen   = 1 + 16 + 16
	auditKeyLen    = 1 + 8

	// maxMetaName bounds a metadata name; names are short engine constants.
	maxMetaName = 255
)

var configKey = []byte("\x01config")

func driveKey(id DriveID) []byte {
	k := make([]byte, driveKeyLen)
	k[0] = kindDrive
	copy(k[1:], id[:])
	return k
}

func tenantKey(id TenantID) []byte {
	k := make([]byte, tenantKeyLen)
	k[0] = kindTenant
	copy(k[1:], id[:])
	return k
}

// putBlobKey writes the blob key into dst, which must have room for
// blobKeyLen bytes, and returns dst[:blobKeyLen]. It lets the hot path build
// the key without allocating.
func putBlobKey(dst []byte, t TenantID, id BlobID) []byte {
	dst = dst[:blobKeyLen]
	dst[0] = kindBlob
	copy(dst[1:17], t[:])
	copy(dst[17:], id[:])
	return dst
}

func blobKey(t TenantID, id BlobID) []byte {
	return putBlobKey(make([]byte, blobKeyLen), t, id)
}

func packKey(t TenantID, id PackID) []byte {
	k := make([]byte, packKeyLen)
	k[0] = kindPack
	copy(k[1:17], t[:])
	copy(k[17:], id[:])
	return k
}

func snapshotKey(t TenantID, id SnapshotID) []byte {
	k := make([]byte, snapshotKeyLen)
	k[0] = kindSnapshot
	copy(k[1:17], t[:])
	copy(k[17:], id[:])
	return k
}

func forgottenKey(t TenantID, id SnapshotID) []byte {
	k := make([]byte, forgotKeyLen)
	k[0] = kindForgot
	copy(k[1:17], t[:])
	copy(k[17:], id[:])
	return k
}

func auditKey(seq uint64) []byte {
	k := make([]byte, auditKeyLen)
	k[0] = kindAudit
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

func metaKey(name string) ([]byte, error) {
	if len(name) == 0 || len(name) > maxMetaName {
		return nil, fmt.Errorf("meta name %q: length %d not in 1..%d: %w", name, len(name), maxMetaName, ErrInvalid)
	}
	k := make([]byte, 1+len(name))
	k[0] = kindMeta
	copy(k[1:], name)
	return k, nil
}

// tenantPrefix is kind followed by the tenant ID: the common prefix of all
// of that tenant's keys of that kind.
func tenantPrefix(kind byte, t TenantID) []byte {
	k := make([]byte, 1+16)
	k[0] = kind
	copy(k[1:], t[:])
	return k
}

// successor returns the smallest key greater than every key that has prefix
// p, for use as an exclusive upper bound. p must contain a byte below 0xff
// (every prefix here starts with a kind byte below 0xff).
func successor(p []byte) []byte {
	s := append([]byte(nil), p...)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] != 0xff {
			s[i]++
			return s[:i+1]
		}
	}
	// Unreachable for our prefixes; an empty upper bound means "no bound".
	return nil
}
