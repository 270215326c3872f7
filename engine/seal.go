package engine

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// BlobType says what a blob holds. The numbers are part of the format
// (associated data, pack headers, index) and are never reused.
type BlobType uint8

const (
	DataBlob BlobType = 1 // a chunk of file content
	TreeBlob BlobType = 2 // an encoded directory tree
)

func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// Compression codes: the first plaintext byte inside every sealed blob.
const (
	compNone byte = 0
	compZstd byte = 1
)

// sealOverhead is what sealing adds to a payload: nonce, compression byte, tag.
const sealOverhead = 24 + 1 + 16

var (
	zstdEncOnce sync.Once
	zstdEnc     *zstd.Encoder
	zstdDec     *zstd.Decoder
)

// codecs returns the shared zstd encoder and decoder. EncodeAll and DecodeAll
// are safe for concurrent use. The 1 MiB window (matches at most 1 MiB back)
// costs nothing on chunks that average 1.5 MiB (the shared data set's
// chunks compress to 169,544,414 bytes, 2,484 fewer than with 4 MiB) and
// keeps each of the encoder's per-core histories at 2 MiB instead of 8.
// Frames written with a larger window (before this) are still read: the
// window is in each frame.
func codecs() (*zstd.Encoder, *zstd.Decoder) {
	zstdEncOnce.Do(func() {
		var err error
		zstdEnc, err = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithWindowSize(1<<20),
			zstd.WithZeroFrames(true))
		if err != nil {
			panic(err) // only for invalid options, which are constant
		}
		zstdDec, err = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			panic(err)
		}
	})
	return zstdEnc, zstdDec
}

// blobAD is the associated data of a sealed blob: it binds tenant, type and
// content ID, so a blob cannot be moved to another tenant, type or ID.
func blobAD(tenant [16]byte, t BlobType, id [32]byte) []byte {
	ad := make([]byte, 0, 8+16+1+32)
	ad = append(ad, "CFBL0001"...)
	ad = append(ad, tenant[:]...)
	ad = append(ad, byte(t))
	return append(ad, id[:]...)
}

// compress returns comp byte || payload: zstd when that saves at least 1/32 of
// the bytes, else the data as it is.
func compress(plain []byte) []byte {
	return compressTo(make([]byte, 0, 1+len(plain)), plain)
}

func decompress(b []byte, maxLen int) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty blob", ErrAuth)
	}
	switch b[0] {
	case compNone:
		return b[1:], nil
	case compZstd:
		_, dec := codecs()
		out, err := dec.DecodeAll(b[1:], make([]byte, 0, maxLen))
		if err != nil {
			return nil, fmt.Errorf("decompress blob: %w", err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown compression code %d", b[0])
}

// compressTo is compress appending to dst[:0] (dst may be nil).
func compressTo(dst, plain []byte) []byte {
	enc, _ := codecs()
	out := append(dst[:0], compZstd)
	out = enc.EncodeAll(plain, out)
	if len(out)-1 < len(plain)-len(plain)/32 {
		return out
	}
	out = append(out[:0], compNone)
	return append(out, plain...)
}

// scratch buffers for compressing and sealing on the backup path; only
// buffers up to a maximal chunk plus overhead are kept.
var scratchPool = sync.Pool{New: func() any { return new([]byte) }}

const maxScratch = 8<<20 + 4096

func getScratch() *[]byte { return scratchPool.Get().(*[]byte) }

func putScratch(b *[]byte) {
	if cap(*b) <= maxScratch {
		scratchPool.Put(b)
	}
}

// sizeScratch returns buf, or a new buffer in its place, with room for the
// compression of n bytes, so that compressTo does not grow it piece by piece
// (each step garbage). New buffers are rounded up to 1 MiB, so a worker's
// buffer settles at the size of its largest chunk.
func sizeScratch(buf []byte, n int) []byte {
	enc, _ := codecs()
	need := 1 + enc.MaxEncodedSize(n)
	if cap(buf) >= need {
		return buf
	}
	return make([]byte, 0, (need+1<<20-1)&^(1<<20-1))
}

// sealBlobScratch compresses and seals a blob like sealBlob, into a pooled
// buffer that the caller must return with putScratch once it has copied the
// result.
func sealBlobScratch(key *[KeySize]byte, tenant [16]byte, t BlobType, id [32]byte, plain []byte) ([]byte, *[]byte) {
	c := getScratch()
	*c = compressTo(*c, plain)
	s := getScratch()
	*s = sealRawTo((*s)[:0], key, blobAD(tenant, t, id), *c)
	putScratch(c)
	return *s, s
}

// sealBlob compresses and seals a blob.
func sealBlob(key *[KeySize]byte, tenant [16]byte, t BlobType, id [32]byte, plain []byte) []byte {
	return sealRaw(key, blobAD(tenant, t, id), compress(plain))
}

// openBlob authenticates, decrypts and decompresses a sealed blob. rawLen is
// the expected plaintext length (a hint for allocation and a bound).
func openBlob(key *[KeySize]byte, tenant [16]byte, t BlobType, id [32]byte, sealed []byte, rawLen int) ([]byte, error) {
	p, err := openRaw(key, blobAD(tenant, t, id), sealed)
	if err != nil {
		return nil, err
	}
	return decompress(p, rawLen)
}

// headerAD binds a sealed pack header to its tenant and pack.
func headerAD(tenant [16]byte, pack [16]byte) []byte {
	ad := make([]byte, 0, 8+32)
	ad = append(ad, "CFPH0001"...)
	ad = append(ad, tenant[:]...)
	return append(ad, pack[:]...)
}

// recordAD binds a sealed record body to its envelope header, owner and name.
func recordAD(hdr []byte, owner [16]byte, name string) []byte {
	ad := make([]byte, 0, 8+len(hdr)+16+2+len(name))
	ad = append(ad, "CFRC0001"...)
	ad = append(ad, hdr...)
	ad = append(ad, owner[:]...)
	ad = binary.LittleEndian.AppendUint16(ad, uint16(len(name)))
	return append(ad, name...)
}
