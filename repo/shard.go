package repo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"sync"

	"github.com/klauspost/reedsolomon"
	"github.com/zeebo/blake3"
)

// Shard file layout (little-endian), specified in docs/design.md:
//
//	0   4   magic "CFS1"
//	4   1   format version = 1
//	5   1   shard index i
//	6   1   k
//	7   1   m
//	8   16  pack ID
//	24  4   block size B
//	28  8   pack data length L
//	36  8   shard data length S
//	44  4   trailer length T
//	48  4   CRC-32C of bytes 0..48
//	52  4*N block table: CRC-32C of each B-byte block of the shard data
//	    4   CRC-32C of the block table
//	    S   shard data
//	    T   trailer
const (
	shardMagic   = "CFS1"
	shardVersion = 1

	// FixedHeaderLen is the length of a shard header before its block table.
	FixedHeaderLen = 52

	// MaxPackSize bounds the length of a pack.
	MaxPackSize = 1 << 30
	// MaxTrailerLen bounds the length of a shard trailer.
	MaxTrailerLen = 1 << 30
	// MinBlockSize and MaxBlockSize bound the block size (a power of two).
	MinBlockSize = 4 << 10
	MaxBlockSize = 16 << 20
	// DefaultBlockSize is the block size used when Options.BlockSize is zero.
	DefaultBlockSize = 64 << 10
	// MaxShards bounds k+m (the shard index is one byte).
	MaxShards = 255
)

var (
	// ErrCorrupt reports bytes read from a drive that fail a check: a bad magic or
	// version, inconsistent lengths, a CRC or hash mismatch.
	ErrCorrupt = errors.New("repo: corrupt data")
	// ErrEmptyPack reports an attempt to encode a pack of zero bytes. Every pack the
	// engine writes holds at least its blobs, so an empty one is refused rather than
	// given a special zero-length shard format.
	ErrEmptyPack = errors.New("repo: empty pack")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// ShardHeader is the decoded fixed header of a shard file.
type ShardHeader struct {
	Index, K, M int
	Pack        PackID
	BlockSize   int
	DataLen     int64 // L, length of the whole pack
	ShardLen    int64 // S, length of this shard's data, ceil(L/K)
	TrailerLen  int   // T
}

// Blocks returns N, the number of blocks (and of block table entries).
func (h ShardHeader) Blocks() int { return blockCount(h.ShardLen, h.BlockSize) }

// DataOffset returns the offset of the shard data in the file: the length of the
// fixed header, the block table and the table's CRC.
func (h ShardHeader) DataOffset() int64 { return FixedHeaderLen + 4*int64(h.Blocks()) + 4 }

// TrailerOffset returns the offset of the trailer in the file.
func (h ShardHeader) TrailerOffset() int64 { return h.DataOffset() + h.ShardLen }

// FileSize returns the length of the whole shard file.
func (h ShardHeader) FileSize() int64 { return h.TrailerOffset() + int64(h.TrailerLen) }

func blockCount(s int64, b int) int { return int((s + int64(b) - 1) / int64(b)) }

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func validBlockSize(b int) bool {
	return b >= MinBlockSize && b <= MaxBlockSize && bits.OnesCount(uint(b)) == 1
}

// check validates the fields of a header; the error says which one is wrong.
func (h ShardHeader) check() error {
	switch {
	case h.K < 1:
		return fmt.Errorf("k = %d, want at least 1", h.K)
	case h.M < 0:
		return fmt.Errorf("m = %d, want at least 0", h.M)
	case h.K+h.M > MaxShards:
		return fmt.Errorf("k+m = %d, more than %d", h.K+h.M, MaxShards)
	case h.Index < 0 || h.Index >= h.K+h.M:
		return fmt.Errorf("shard index %d outside 0..%d", h.Index, h.K+h.M-1)
	case !validBlockSize(h.BlockSize):
		return fmt.Errorf("block size %d is not a power of two in %d..%d", h.BlockSize, MinBlockSize, MaxBlockSize)
	case h.DataLen < 1 || h.DataLen > MaxPackSize:
		return fmt.Errorf("pack length %d outside 1..%d", h.DataLen, MaxPackSize)
	case h.ShardLen != ceilDiv(h.DataLen, int64(h.K)):
		return fmt.Errorf("shard length %d, want ceil(%d/%d) = %d", h.ShardLen, h.DataLen, h.K, ceilDiv(h.DataLen, int64(h.K)))
	case h.TrailerLen < 0 || h.TrailerLen > MaxTrailerLen:
		return fmt.Errorf("trailer length %d outside 0..%d", h.TrailerLen, MaxTrailerLen)
	}
	return nil
}

// appendFixed appends the 52-byte fixed header (with its CRC) to dst.
func (h ShardHeader) appendFixed(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, shardMagic...)
	dst = append(dst, shardVersion, byte(h.Index), byte(h.K), byte(h.M))
	dst = append(dst, h.Pack[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.BlockSize))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.DataLen))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.ShardLen))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.TrailerLen))
	return binary.LittleEndian.AppendUint32(dst, crc32c(dst[start:]))
}

// appendTable appends the block table of data and the table's CRC to dst.
func appendTable(dst []byte, data []byte, blockSize int) []byte {
	start := len(dst)
	for off := 0; off < len(data); off += blockSize {
		dst = binary.LittleEndian.AppendUint32(dst, crc32c(data[off:min(off+blockSize, len(data))]))
	}
	return binary.LittleEndian.AppendUint32(dst, crc32c(dst[start:]))
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

// decodeFixedHeader decodes and checks the first FixedHeaderLen bytes of b.
func decodeFixedHeader(b []byte) (ShardHeader, error) {
	if len(b) < FixedHeaderLen {
		return ShardHeader{}, corruptf("shard header: %d bytes, want %d", len(b), FixedHeaderLen)
	}
	if string(b[0:4]) != shardMagic {
		return ShardHeader{}, corruptf("shard header: magic %q, want %q", b[0:4], shardMagic)
	}
	if b[4] != shardVersion {
		return ShardHeader{}, corruptf("shard header: format version %d is not supported", b[4])
	}
	if got, want := binary.LittleEndian.Uint32(b[48:52]), crc32c(b[0:48]); got != want {
		return ShardHeader{}, corruptf("shard header: CRC %08x, computed %08x", got, want)
	}
	h := ShardHeader{Index: int(b[5]), K: int(b[6]), M: int(b[7])}
	copy(h.Pack[:], b[8:24])
	blockSize := binary.LittleEndian.Uint32(b[24:28])
	dataLen := binary.LittleEndian.Uint64(b[28:36])
	shardLen := binary.LittleEndian.Uint64(b[36:44])
	trailerLen := binary.LittleEndian.Uint32(b[44:48])
	// Range checks on the raw unsigned values come first so that no conversion
	// below can overflow or turn negative.
	if blockSize > MaxBlockSize || dataLen > MaxPackSize || shardLen > MaxPackSize || trailerLen > MaxTrailerLen {
		return ShardHeader{}, corruptf("shard header: block size %d, pack length %d, shard length %d or trailer length %d out of range",
			blockSize, dataLen, shardLen, trailerLen)
	}
	h.BlockSize, h.DataLen, h.ShardLen, h.TrailerLen = int(blockSize), int64(dataLen), int64(shardLen), int(trailerLen)
	if err := h.check(); err != nil {
		return ShardHeader{}, corruptf("shard header: %v", err)
	}
	return h, nil
}

// DecodeShardHeader decodes the fixed header and the block table at the start of a
// shard file. b must hold at least h.DataOffset() bytes (FixedHeaderLen, then
// 4*N+4); bytes after that are ignored. It returns the header and the block CRCs.
// Every field and both CRCs are checked; errors wrap ErrCorrupt. It never panics.
func DecodeShardHeader(b []byte) (ShardHeader, []uint32, error) {
	h, err := decodeFixedHeader(b)
	if err != nil {
		return ShardHeader{}, nil, err
	}
	end := h.DataOffset()
	if int64(len(b)) < end {
		return ShardHeader{}, nil, corruptf("shard header: block table needs %d bytes, have %d", end, len(b))
	}
	table := b[FixedHeaderLen : end-4]
	if got, want := binary.LittleEndian.Uint32(b[end-4:end]), crc32c(table); got != want {
		return ShardHeader{}, nil, corruptf("shard block table: CRC %08x, computed %08x", got, want)
	}
	crcs := make([]uint32, h.Blocks())
	for i := range crcs {
		crcs[i] = binary.LittleEndian.Uint32(table[4*i:])
	}
	return h, crcs, nil
}

// EncodeShardFile returns the complete shard file for shard data and trailer
// described by h (whose ShardLen and TrailerLen must match them).
func EncodeShardFile(h ShardHeader, data, trailer []byte) ([]byte, error) {
	return appendShardFile(nil, h, data, trailer)
}

func appendShardFile(dst []byte, h ShardHeader, data, trailer []byte) ([]byte, error) {
	if need := int(h.FileSize()); cap(dst)-len(dst) < need {
		dst = append(make([]byte, 0, len(dst)+need), dst...)
	}
	dst, err := appendShardHead(dst, h, data, trailer)
	if err != nil {
		return nil, err
	}
	dst = append(dst, data...)
	return append(dst, trailer...), nil
}

// appendShardHead appends the part of a shard file before its data: the
// fixed header and the block table of data. The file is that, then data,
// then trailer.
func appendShardHead(dst []byte, h ShardHeader, data, trailer []byte) ([]byte, error) {
	if int64(len(data)) != h.ShardLen || len(trailer) != h.TrailerLen {
		return nil, fmt.Errorf("repo: encode shard: %d data bytes and %d trailer bytes, header says %d and %d",
			len(data), len(trailer), h.ShardLen, h.TrailerLen)
	}
	if err := h.check(); err != nil {
		return nil, fmt.Errorf("repo: encode shard: %v", err)
	}
	dst = h.appendFixed(dst)
	return appendTable(dst, data, h.BlockSize), nil
}

// checkBlocks checks data, the shard bytes starting at block first, against crcs.
func checkBlocks(data []byte, first int, blockSize int, crcs []uint32) error {
	for j, off := first, 0; off < len(data); j, off = j+1, off+blockSize {
		if j >= len(crcs) {
			return corruptf("block %d beyond the block table", j)
		}
		if got := crc32c(data[off:min(off+blockSize, len(data))]); got != crcs[j] {
			return corruptf("block %d: CRC %08x, table says %08x", j, got, crcs[j])
		}
	}
	return nil
}

// Encoded is a pack split into K data and M parity shards.
type Encoded struct {
	K, M     int
	DataLen  int64    // L, length of the pack
	ShardLen int64    // S = ceil(L/K)
	Shards   [][]byte // K+M shards of ShardLen bytes; shard i < K holds pack bytes [i*S, (i+1)*S), zero-padded
	Hashes   []Hash   // BLAKE3-256 of each shard
}

// Encode splits data into k data shards and m parity shards and hashes them.
// It does not retain data (it copies it). A pack of zero bytes is refused with
// ErrEmptyPack, one larger than MaxPackSize with an error.
func Encode(k, m int, data []byte) (*Encoded, error) {
	if err := checkKM(k, m); err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, ErrEmptyPack
	}
	if len(data) > MaxPackSize {
		return nil, fmt.Errorf("repo: pack of %d bytes is larger than %d", len(data), MaxPackSize)
	}
	enc, err := encoderFor(k, m)
	if err != nil {
		return nil, err
	}
	s := ceilDiv(int64(len(data)), int64(k))
	buf := make([]byte, int64(k+m)*s)
	copy(buf, data)
	return encodeBuf(enc, k, m, int64(len(data)), s, buf)
}

// EncodeInPlace is Encode without a copy: when cap(data) holds all k+m
// shards (EncodedCap), the shards are laid out in data's own backing array,
// the padding and parity written after the data. The result then aliases
// data, which the caller must leave untouched until it is done with the
// Encoded. With a smaller capacity it is Encode.
func EncodeInPlace(k, m int, data []byte) (*Encoded, error) {
	if err := checkKM(k, m); err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, ErrEmptyPack
	}
	if len(data) > MaxPackSize {
		return nil, fmt.Errorf("repo: pack of %d bytes is larger than %d", len(data), MaxPackSize)
	}
	s := ceilDiv(int64(len(data)), int64(k))
	need := int64(k+m) * s
	if int64(cap(data)) < need {
		return Encode(k, m, data)
	}
	enc, err := encoderFor(k, m)
	if err != nil {
		return nil, err
	}
	buf := data[:need]
	clear(buf[len(data):]) // padding; parity is overwritten by the encoder
	return encodeBuf(enc, k, m, int64(len(data)), s, buf)
}

// EncodeWithParity is EncodeInPlace with the parity shards in a separate
// buffer: the k data shards are laid out in data's own backing array (its
// capacity must reach DataShardsCap, for the zero padding of the last
// shard), the m parity shards in parity, which is grown (reallocated) if it
// is shorter than m shards. So a pack that is being filled needs no room for
// its parity, and one parity buffer serves every pack written in turn. The
// result aliases data and parity, which the caller must leave untouched
// until it is done with the Encoded; it returns parity, grown or not, for
// reuse. With too small a capacity of data it is Encode.
func EncodeWithParity(k, m int, data, parity []byte) (*Encoded, []byte, error) {
	if err := checkKM(k, m); err != nil {
		return nil, parity, err
	}
	if len(data) == 0 {
		return nil, parity, ErrEmptyPack
	}
	if len(data) > MaxPackSize {
		return nil, parity, fmt.Errorf("repo: pack of %d bytes is larger than %d", len(data), MaxPackSize)
	}
	s := ceilDiv(int64(len(data)), int64(k))
	if int64(cap(data)) < int64(k)*s {
		enc, err := Encode(k, m, data)
		return enc, parity, err
	}
	enc, err := encoderFor(k, m)
	if err != nil {
		return nil, parity, err
	}
	if int64(cap(parity)) < int64(m)*s {
		parity = make([]byte, int64(m)*s)
	}
	buf := data[:int64(k)*s]
	clear(buf[len(data):]) // padding
	shards := make([][]byte, k+m)
	for i := range k {
		shards[i] = buf[int64(i)*s : int64(i+1)*s : int64(i+1)*s]
	}
	for j := range m {
		shards[k+j] = parity[int64(j)*s : int64(j+1)*s : int64(j+1)*s]
	}
	e, err := encodeShards(enc, k, m, int64(len(data)), s, shards)
	return e, parity, err
}

// DataShardsCap is the capacity a pack buffer of up to n bytes needs for
// EncodeWithParity: n rounded up to a multiple of k.
func DataShardsCap(k, n int) int {
	return k * int(ceilDiv(int64(n), int64(k)))
}

// EncodedCap is the capacity a pack buffer of up to n bytes needs for
// EncodeInPlace.
func EncodedCap(k, m, n int) int {
	return (k + m) * int(ceilDiv(int64(n), int64(k)))
}

func encodeBuf(enc reedsolomon.Encoder, k, m int, dataLen, s int64, buf []byte) (*Encoded, error) {
	shards := make([][]byte, k+m)
	for i := range shards {
		shards[i] = buf[int64(i)*s : int64(i+1)*s : int64(i+1)*s]
	}
	return encodeShards(enc, k, m, dataLen, s, shards)
}

// encodeShards computes the parity of k data shards into the m shards after
// them, each of s bytes, and hashes all of them.
func encodeShards(enc reedsolomon.Encoder, k, m int, dataLen, s int64, shards [][]byte) (*Encoded, error) {
	if err := enc.Encode(shards); err != nil {
		return nil, fmt.Errorf("repo: encode pack: %w", err)
	}
	hashes := make([]Hash, k+m)
	var wg sync.WaitGroup
	for i := range shards {
		wg.Go(func() { hashes[i] = blake3.Sum256(shards[i]) })
	}
	wg.Wait()
	return &Encoded{K: k, M: m, DataLen: dataLen, ShardLen: s, Shards: shards, Hashes: hashes}, nil
}

func checkKM(k, m int) error {
	switch {
	case k < 1:
		return fmt.Errorf("repo: %d data shards, want at least 1", k)
	case m < 0:
		return fmt.Errorf("repo: %d parity shards, want at least 0", m)
	case k+m > MaxShards:
		return fmt.Errorf("repo: %d data and %d parity shards, more than %d in all", k, m, MaxShards)
	}
	return nil
}

// encoders caches one Reed-Solomon encoder per (k, m); encoders are safe for
// concurrent use and costly to build.
var encoders struct {
	mu sync.Mutex
	m  map[[2]int]reedsolomon.Encoder // guarded by mu
}

func encoderFor(k, m int) (reedsolomon.Encoder, error) {
	encoders.mu.Lock()
	defer encoders.mu.Unlock()
	if e, ok := encoders.m[[2]int{k, m}]; ok {
		return e, nil
	}
	e, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, fmt.Errorf("repo: reed-solomon encoder for k=%d, m=%d: %w", k, m, err)
	}
	if encoders.m == nil {
		encoders.m = make(map[[2]int]reedsolomon.Encoder)
	}
	encoders.m[[2]int{k, m}] = e
	return e, nil
}
