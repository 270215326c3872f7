package index

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Value format versions. The first byte of every typed value is its format
// version. Version 0 is never valid; a number once used is never reused for a
// different layout. See docs/design.md.
const (
	blobLocV1     byte = 1
	packRecV1     byte = 1
	tenantRecV1   byte = 1
	snapshotRecV1 byte = 1
	forgottenV1   byte = 1
)

// Fixed value sizes.
const (
	blobLocLen = 1 + 1 + 16 + 4 + 4 + 4 // version, type, pack, offset, length, raw length
	// version, k, m, block size, data len, shard len, blobs, created;
	// then K+M entries of drive ID and hash.
	packRecFixedLen = 1 + 1 + 1 + 4 + 8 + 8 + 4 + 8
	packRecEntryLen = 8 + 32
	tenantRecMinLen = 1 + 8 + 4 + 1 + 1 // two empty byte strings
	snapshotMinLen  = 1 + 8 + 1
	forgottenLen    = 1 + 8 // version, record version of the tombstone
)

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

// appendBlobLoc appends the encoding of l to dst.
func appendBlobLoc(dst []byte, l BlobLoc) []byte {
	dst = append(dst, blobLocV1, byte(l.Type))
	dst = append(dst, l.Pack[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, l.Offset)
	dst = binary.LittleEndian.AppendUint32(dst, l.Length)
	dst = binary.LittleEndian.AppendUint32(dst, l.RawLength)
	return dst
}

// decodeBlobLoc decodes a BlobLoc value. It does not allocate on success and
// does not retain v.
func decodeBlobLoc(v []byte) (BlobLoc, error) {
	if len(v) != blobLocLen {
		return BlobLoc{}, corruptf("blob location: length %d, want %d", len(v), blobLocLen)
	}
	if v[0] != blobLocV1 {
		return BlobLoc{}, corruptf("blob location: unknown version %d", v[0])
	}
	var l BlobLoc
	l.Type = BlobType(v[1])
	copy(l.Pack[:], v[2:18])
	l.Offset = binary.LittleEndian.Uint32(v[18:])
	l.Length = binary.LittleEndian.Uint32(v[22:])
	l.RawLength = binary.LittleEndian.Uint32(v[26:])
	return l, nil
}

// checkPackRec reports whether p can be encoded.
func checkPackRec(p PackRec) error {
	n := int(p.K) + int(p.M)
	if p.K == 0 {
		return fmt.Errorf("pack %s: k is 0: %w", p.ID, ErrInvalid)
	}
	if len(p.Drives) != n || len(p.Hashes) != n {
		return fmt.Errorf("pack %s: %d drives and %d hashes, want k+m = %d: %w",
			p.ID, len(p.Drives), len(p.Hashes), n, ErrInvalid)
	}
	return nil
}

// appendPackRec appends the encoding of p to dst. The pack ID is part of the
// key, not of the value. p must pass checkPackRec.
func appendPackRec(dst []byte, p PackRec) []byte {
	dst = append(dst, packRecV1, p.K, p.M)
	dst = binary.LittleEndian.AppendUint32(dst, p.BlockSize)
	dst = binary.LittleEndian.AppendUint64(dst, p.DataLen)
	dst = binary.LittleEndian.AppendUint64(dst, p.ShardLen)
	dst = binary.LittleEndian.AppendUint32(dst, p.Blobs)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(p.Created))
	for i := range p.Drives {
		dst = append(dst, p.Drives[i][:]...)
		dst = append(dst, p.Hashes[i][:]...)
	}
	return dst
}

// decodePackRec decodes a PackRec value stored under pack ID id. The result
// does not share memory with v.
func decodePackRec(id PackID, v []byte) (PackRec, error) {
	if len(v) < packRecFixedLen {
		return PackRec{}, corruptf("pack %s: length %d, want at least %d", id, len(v), packRecFixedLen)
	}
	if v[0] != packRecV1 {
		return PackRec{}, corruptf("pack %s: unknown version %d", id, v[0])
	}
	p := PackRec{ID: id, K: v[1], M: v[2]}
	if p.K == 0 {
		return PackRec{}, corruptf("pack %s: k is 0", id)
	}
	n := int(p.K) + int(p.M)
	if want := packRecFixedLen + n*packRecEntryLen; len(v) != want {
		return PackRec{}, corruptf("pack %s: length %d, want %d for k=%d m=%d", id, len(v), want, p.K, p.M)
	}
	p.BlockSize = binary.LittleEndian.Uint32(v[3:])
	p.DataLen = binary.LittleEndian.Uint64(v[7:])
	p.ShardLen = binary.LittleEndian.Uint64(v[15:])
	p.Blobs = binary.LittleEndian.Uint32(v[23:])
	p.Created = int64(binary.LittleEndian.Uint64(v[27:]))
	p.Drives = make([]DriveID, n)
	p.Hashes = make([]Hash, n)
	e := v[packRecFixedLen:]
	for i := 0; i < n; i++ {
		copy(p.Drives[i][:], e[:8])
		copy(p.Hashes[i][:], e[8:40])
		e = e[packRecEntryLen:]
	}
	return p, nil
}

// appendBytes appends b as a uvarint length followed by the bytes.
func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// readBytes reads a uvarint-length-prefixed byte string from v. It returns a
// copy (nil when the length is 0) and the rest of v.
func readBytes(v []byte) ([]byte, []byte, error) {
	n, w := binary.Uvarint(v)
	if w <= 0 {
		return nil, nil, fmt.Errorf("bad length prefix")
	}
	if w != uvarintLen(n) {
		// Only the shortest form is valid, so every value has exactly one
		// encoding.
		return nil, nil, fmt.Errorf("length prefix not in shortest form")
	}
	v = v[w:]
	if n > uint64(len(v)) || n > math.MaxInt32 {
		return nil, nil, fmt.Errorf("byte string of length %d overruns the %d bytes left", n, len(v))
	}
	if n == 0 {
		return nil, v, nil
	}
	return append([]byte(nil), v[:n]...), v[n:], nil
}

// uvarintLen returns the length of the shortest uvarint encoding of n.
func uvarintLen(n uint64) int {
	w := 1
	for n >= 0x80 {
		n >>= 7
		w++
	}
	return w
}

// appendTenantRec appends the encoding of r to dst. The tenant ID is part of
// the key, not of the value.
func appendTenantRec(dst []byte, r TenantRec) []byte {
	dst = append(dst, tenantRecV1)
	dst = binary.LittleEndian.AppendUint64(dst, r.Version)
	dst = binary.LittleEndian.AppendUint32(dst, r.Epoch)
	dst = appendBytes(dst, r.Wrapped)
	dst = appendBytes(dst, r.Meta)
	return dst
}

// decodeTenantRec decodes a TenantRec value stored under tenant ID id. The
// result does not share memory with v; empty byte strings decode as nil.
func decodeTenantRec(id TenantID, v []byte) (TenantRec, error) {
	if len(v) < tenantRecMinLen {
		return TenantRec{}, corruptf("tenant %s: length %d, want at least %d", id, len(v), tenantRecMinLen)
	}
	if v[0] != tenantRecV1 {
		return TenantRec{}, corruptf("tenant %s: unknown version %d", id, v[0])
	}
	r := TenantRec{ID: id}
	r.Version = binary.LittleEndian.Uint64(v[1:])
	r.Epoch = binary.LittleEndian.Uint32(v[9:])
	rest := v[13:]
	var err error
	if r.Wrapped, rest, err = readBytes(rest); err != nil {
		return TenantRec{}, corruptf("tenant %s: wrapped key: %v", id, err)
	}
	if r.Meta, rest, err = readBytes(rest); err != nil {
		return TenantRec{}, corruptf("tenant %s: metadata: %v", id, err)
	}
	if len(rest) != 0 {
		return TenantRec{}, corruptf("tenant %s: %d trailing bytes", id, len(rest))
	}
	return r, nil
}

// appendSnapshotRec appends the encoding of s to dst. The snapshot ID is part
// of the key, not of the value.
func appendSnapshotRec(dst []byte, s SnapshotRec) []byte {
	dst = append(dst, snapshotRecV1)
	dst = binary.LittleEndian.AppendUint64(dst, s.Version)
	return appendBytes(dst, s.Sealed)
}

// decodeSnapshotRec decodes a SnapshotRec value stored under snapshot ID id.
// The result does not share memory with v; an empty Sealed decodes as nil.
func decodeSnapshotRec(id SnapshotID, v []byte) (SnapshotRec, error) {
	if len(v) < snapshotMinLen {
		return SnapshotRec{}, corruptf("snapshot %s: length %d, want at least %d", id, len(v), snapshotMinLen)
	}
	if v[0] != snapshotRecV1 {
		return SnapshotRec{}, corruptf("snapshot %s: unknown version %d", id, v[0])
	}
	s := SnapshotRec{ID: id, Version: binary.LittleEndian.Uint64(v[1:])}
	rest := v[9:]
	var err error
	if s.Sealed, rest, err = readBytes(rest); err != nil {
		return SnapshotRec{}, corruptf("snapshot %s: sealed record: %v", id, err)
	}
	if len(rest) != 0 {
		return SnapshotRec{}, corruptf("snapshot %s: %d trailing bytes", id, len(rest))
	}
	return s, nil
}

// appendForgottenRec appends the encoding of f to dst. The snapshot ID is
// part of the key, not of the value.
func appendForgottenRec(dst []byte, f ForgottenRec) []byte {
	dst = append(dst, forgottenV1)
	return binary.LittleEndian.AppendUint64(dst, f.Version)
}

// decodeForgottenRec decodes a ForgottenRec value stored under snapshot ID id.
func decodeForgottenRec(id SnapshotID, v []byte) (ForgottenRec, error) {
	if len(v) != forgottenLen {
		return ForgottenRec{}, corruptf("forgotten snapshot %s: length %d, want %d", id, len(v), forgottenLen)
	}
	if v[0] != forgottenV1 {
		return ForgottenRec{}, corruptf("forgotten snapshot %s: unknown version %d", id, v[0])
	}
	return ForgottenRec{ID: id, Version: binary.LittleEndian.Uint64(v[1:])}, nil
}
