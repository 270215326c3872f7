package index

import (
	"encoding/hex"
	"fmt"
)

// TenantID identifies a tenant. It is random and carries no tenant name.
type TenantID [16]byte

// BlobID is the keyed content ID of a blob (keyed under the tenant's ID key).
type BlobID [32]byte

// PackID identifies a pack. It is random.
type PackID [16]byte

// SnapshotID identifies a snapshot.
type SnapshotID [16]byte

// DriveID identifies a drive of the repository.
type DriveID [8]byte

// Hash is a BLAKE3-256 digest.
type Hash [32]byte

// String returns the ID as lowercase hex.
func (id TenantID) String() string { return hex.EncodeToString(id[:]) }

// String returns the ID as lowercase hex.
func (id BlobID) String() string { return hex.EncodeToString(id[:]) }

// String returns the ID as lowercase hex.
func (id PackID) String() string { return hex.EncodeToString(id[:]) }

// String returns the ID as lowercase hex.
func (id SnapshotID) String() string { return hex.EncodeToString(id[:]) }

// String returns the ID as lowercase hex.
func (id DriveID) String() string { return hex.EncodeToString(id[:]) }

// String returns the hash as lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// parseHex decodes exactly len(dst) bytes of hex from s into dst.
func parseHex(dst []byte, what, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("index: parse %s %q: want %d hex digits, got %d", what, s, 2*len(dst), len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("index: parse %s %q: %w", what, s, err)
	}
	return nil
}

// ParseTenantID parses the hex form produced by TenantID.String.
func ParseTenantID(s string) (TenantID, error) {
	var id TenantID
	return id, parseHex(id[:], "tenant ID", s)
}

// ParseBlobID parses the hex form produced by BlobID.String.
func ParseBlobID(s string) (BlobID, error) {
	var id BlobID
	return id, parseHex(id[:], "blob ID", s)
}

// ParsePackID parses the hex form produced by PackID.String.
func ParsePackID(s string) (PackID, error) {
	var id PackID
	return id, parseHex(id[:], "pack ID", s)
}

// ParseSnapshotID parses the hex form produced by SnapshotID.String.
func ParseSnapshotID(s string) (SnapshotID, error) {
	var id SnapshotID
	return id, parseHex(id[:], "snapshot ID", s)
}

// ParseDriveID parses the hex form produced by DriveID.String.
func ParseDriveID(s string) (DriveID, error) {
	var id DriveID
	return id, parseHex(id[:], "drive ID", s)
}

// ParseHash parses the hex form produced by Hash.String.
func ParseHash(s string) (Hash, error) {
	var h Hash
	return h, parseHex(h[:], "hash", s)
}

// BlobType is the kind of a blob, stored as given: 1 = data, 2 = tree.
type BlobType uint8

// Blob types known to the engine. The index stores any value as given.
const (
	DataBlob BlobType = 1
	TreeBlob BlobType = 2
)

// BlobLoc says where a sealed blob lives.
type BlobLoc struct {
	Pack      PackID
	Type      BlobType
	Offset    uint32 // of the sealed blob within the pack data
	Length    uint32 // sealed length
	RawLength uint32 // plaintext length before compression
}

// PackRec describes a pack and where its shards are.
type PackRec struct {
	ID        PackID
	K, M      uint8
	BlockSize uint32
	DataLen   uint64
	ShardLen  uint64
	Drives    []DriveID // drive holding shard i (len K+M)
	Hashes    []Hash    // expected BLAKE3-256 of shard i's data (len K+M)
	Blobs     uint32    // number of blobs in the pack
	Created   int64     // unix seconds
}

// TenantRec is a tenant's record: its wrapped key and sealed metadata.
type TenantRec struct {
	ID      TenantID
	Version uint64 // monotonic; the engine increments it on every change
	Epoch   uint32 // master-key epoch the key is wrapped under
	Wrapped []byte // tenant key wrapped under the master key (opaque here)
	Meta    []byte // sealed tenant metadata (opaque here)
}

// SnapshotRec is a snapshot's record.
type SnapshotRec struct {
	ID      SnapshotID
	Version uint64
	Sealed  []byte // opaque sealed snapshot
}

// ForgottenRec says that a snapshot was forgotten: the drives hold a
// tombstone of its record, of record version Version. The index keeps it so
// that every snapshot record name on the drives is known to the index,
// live (SnapshotRec) or forgotten, and a name it knows neither way shows an
// index behind the drives.
type ForgottenRec struct {
	ID      SnapshotID
	Version uint64
}
