package engine

import (
	"encoding/binary"
	"fmt"
)

// packHeader is the plaintext of the sealed header stored as the trailer of
// every shard of a pack. It lets the index be rebuilt from the drives.
//
//	off  size       field
//	0    4          magic "CFP1"
//	4    16         tenant ID
//	20   16         pack ID
//	36   1          k
//	37   1          m
//	38   4          block size (u32 LE)
//	42   8          pack data length L (u64 LE)
//	50   8          shard data length S (u64 LE)
//	58   8          created, Unix seconds (i64 LE)
//	66   32*(k+m)   expected BLAKE3-256 of each shard's data, by shard index
//	..   4          blob count n (u32 LE)
//	..   45*n       blobs: type u8 | content ID [32] | offset u32 | length u32 | raw length u32
type packHeader struct {
	Tenant    [16]byte
	Pack      [16]byte
	K, M      int
	BlockSize uint32
	DataLen   uint64
	ShardLen  uint64
	Created   int64
	Hashes    [][32]byte
	Blobs     []packBlob
}

type packBlob struct {
	Type   BlobType
	ID     [32]byte
	Offset uint32
	Length uint32
	Raw    uint32
}

const (
	packHeaderMagic = "CFP1"
	packHeaderFixed = 66
	packBlobLen     = 45
)

func (h *packHeader) encode() []byte {
	b := make([]byte, 0, packHeaderFixed+32*len(h.Hashes)+4+packBlobLen*len(h.Blobs))
	b = append(b, packHeaderMagic...)
	b = append(b, h.Tenant[:]...)
	b = append(b, h.Pack[:]...)
	b = append(b, byte(h.K), byte(h.M))
	b = binary.LittleEndian.AppendUint32(b, h.BlockSize)
	b = binary.LittleEndian.AppendUint64(b, h.DataLen)
	b = binary.LittleEndian.AppendUint64(b, h.ShardLen)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Created))
	for _, x := range h.Hashes {
		b = append(b, x[:]...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(h.Blobs)))
	for _, bl := range h.Blobs {
		b = append(b, byte(bl.Type))
		b = append(b, bl.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, bl.Offset)
		b = binary.LittleEndian.AppendUint32(b, bl.Length)
		b = binary.LittleEndian.AppendUint32(b, bl.Raw)
	}
	return b
}

// decodePackHeader parses and validates a pack header. Errors wrap ErrCorrupt.
func decodePackHeader(b []byte) (*packHeader, error) {
	bad := func(what string) error { return fmt.Errorf("%w: pack header: %s", ErrCorrupt, what) }
	if len(b) < packHeaderFixed+4 || string(b[:4]) != packHeaderMagic {
		return nil, bad("bad magic or too short")
	}
	h := &packHeader{}
	copy(h.Tenant[:], b[4:20])
	copy(h.Pack[:], b[20:36])
	h.K, h.M = int(b[36]), int(b[37])
	h.BlockSize = binary.LittleEndian.Uint32(b[38:])
	h.DataLen = binary.LittleEndian.Uint64(b[42:])
	h.ShardLen = binary.LittleEndian.Uint64(b[50:])
	h.Created = int64(binary.LittleEndian.Uint64(b[58:]))
	if h.K < 1 || h.K+h.M > 255 {
		return nil, bad("bad k or m")
	}
	if h.DataLen == 0 || h.ShardLen != (h.DataLen+uint64(h.K)-1)/uint64(h.K) {
		return nil, bad("shard length does not match data length")
	}
	p := b[packHeaderFixed:]
	n := h.K + h.M
	if len(p) < 32*n+4 {
		return nil, bad("truncated shard hashes")
	}
	h.Hashes = make([][32]byte, n)
	for i := range h.Hashes {
		copy(h.Hashes[i][:], p[32*i:])
	}
	p = p[32*n:]
	count := binary.LittleEndian.Uint32(p)
	p = p[4:]
	if uint64(len(p)) != uint64(count)*packBlobLen {
		return nil, bad("blob list length does not match blob count")
	}
	h.Blobs = make([]packBlob, count)
	var end uint64
	for i := range h.Blobs {
		q := p[i*packBlobLen:]
		bl := packBlob{Type: BlobType(q[0])}
		copy(bl.ID[:], q[1:33])
		bl.Offset = binary.LittleEndian.Uint32(q[33:])
		bl.Length = binary.LittleEndian.Uint32(q[37:])
		bl.Raw = binary.LittleEndian.Uint32(q[41:])
		if bl.Type != DataBlob && bl.Type != TreeBlob {
			return nil, bad(fmt.Sprintf("blob %d has unknown type %d", i, q[0]))
		}
		if uint64(bl.Offset) != end || bl.Length < sealOverhead {
			return nil, bad(fmt.Sprintf("blob %d is not contiguous", i))
		}
		end += uint64(bl.Length)
		h.Blobs[i] = bl
	}
	if end != h.DataLen {
		return nil, bad("blobs do not fill the pack")
	}
	return h, nil
}
