package chunk

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/restic/chunker"
)

// Chunk size bounds. The average is about 1 MiB (the chunker's default 20
// split bits): large enough that the per-chunk index entry and seal overhead
// are small, small enough that a 5% change in a big file rewrites little.
const (
	MinSize = 512 << 10
	MaxSize = 8 << 20
)

// Pol is a chunker polynomial. It is secret per tenant: knowing it would let an
// observer of chunk sizes fingerprint known files.
type Pol = chunker.Pol

// DerivePol derives an irreducible polynomial deterministically from a secret
// byte stream (for example an HKDF reader keyed by the tenant key). The same
// stream always gives the same polynomial.
func DerivePol(seed io.Reader) (Pol, error) {
	p, err := chunker.DerivePolynomial(seed)
	if err != nil {
		return 0, fmt.Errorf("chunk: derive polynomial: %w", err)
	}
	return p, nil
}

// The algorithm is that of github.com/restic/chunker v0.4 (Rabin fingerprint
// over a 64-byte window, cut where the low 20 bits of the digest are zero,
// no cut before MinSize, always one at MaxSize, the first MinSize-64 bytes
// of a chunk not hashed), so the boundaries are the same byte for byte
// (TestSameCutsAsRestic). It is reimplemented here to append each chunk to
// a buffer the caller provides and may grow (NextTo), instead of to one
// buffer of MaxSize per chunker: a backup hands that buffer on to be sealed
// without copying it, and does not hold 8 MiB per file worker.
const (
	windowSize = 64
	splitMask  = 1<<20 - 1
	readSize   = 512 << 10 // bytes read from the stream at a time
)

type tables struct {
	out [256]uint64 // the digest of byte b followed by windowSize-1 zero bytes: XOR slides b out
	mod [256]uint64 // reduction modulo the polynomial, indexed by the 8 bits above its degree
}

var tableCache sync.Map // Pol → *tables

func tablesFor(pol Pol) *tables {
	if t, ok := tableCache.Load(pol); ok {
		return t.(*tables)
	}
	t := &tables{}
	appendByte := func(h Pol, b byte) Pol { return (h<<8 | Pol(b)).Mod(pol) }
	for b := 0; b < 256; b++ {
		h := appendByte(0, byte(b))
		for i := 0; i < windowSize-1; i++ {
			h = appendByte(h, 0)
		}
		t.out[b] = uint64(h)
	}
	k := uint(pol.Deg())
	for b := 0; b < 256; b++ {
		t.mod[b] = uint64(Pol(uint64(b)<<k).Mod(pol) | Pol(b)<<k)
	}
	tableCache.Store(pol, t)
	return t
}

// Chunker cuts a stream into content-defined chunks between MinSize and
// MaxSize bytes. It is not safe for concurrent use; reuse one with Reset.
type Chunker struct {
	rd       io.Reader
	pol      Pol
	tab      *tables
	polShift uint
	buf      []byte // read from rd; buf[bpos:bmax] not yet consumed
	bpos     int
	bmax     int
	eof      bool
}

// New returns a chunker reading from r with polynomial pol.
func New(r io.Reader, pol Pol) *Chunker {
	c := &Chunker{buf: make([]byte, readSize)}
	c.Reset(r, pol)
	return c
}

// Reset makes the chunker read a new stream, keeping its internal buffers.
func (c *Chunker) Reset(r io.Reader, pol Pol) {
	c.rd = r
	if c.tab == nil || pol != c.pol {
		c.pol, c.tab = pol, tablesFor(pol)
		c.polShift = uint(pol.Deg() - 8)
	}
	c.bpos, c.bmax, c.eof = 0, 0, false
}

// Next returns the next chunk, stored in buf (grown if it is smaller than
// MaxSize). The returned slice aliases buf and is valid until buf is reused.
// At the end of the stream Next returns io.EOF. A read error of the
// underlying reader is returned as it is.
func (c *Chunker) Next(buf []byte) ([]byte, error) {
	if cap(buf) < MaxSize {
		buf = make([]byte, MaxSize)
	}
	return c.NextTo(buf[:0], nil)
}

// NextTo appends the next chunk to dst and returns the extended slice. When
// dst has no room for the next n bytes, grow(dst, n) is called and must
// return a slice with dst's contents and room for at least n more bytes
// (nil grow: append's growth). At the end of the stream NextTo returns
// io.EOF; a read error of the underlying reader is returned as it is, and the
// chunk is abandoned.
func (c *Chunker) NextTo(dst []byte, grow func(b []byte, n int) []byte) ([]byte, error) {
	if c.polShift > 53-8 {
		return nil, errors.New("chunk: the polynomial must have a degree of at most 53")
	}
	put := func(p []byte) {
		if grow != nil && cap(dst)-len(dst) < len(p) {
			dst = grow(dst, len(p))
		}
		dst = append(dst, p...)
	}
	tab, polShift := c.tab, c.polShift&63
	// A new chunk: an empty window, then the byte 1 slid in (restic's
	// reset). hist holds the window's bytes oldest first: the byte that
	// leaves the window as byte i of the next hashed piece enters is hist[i]
	// for i < windowSize, and the piece's own byte i-windowSize after that.
	var hist [windowSize]byte
	hist[windowSize-1] = 1
	digest := uint64(1) ^ tab.mod[0]
	count := 0                  // bytes of this chunk so far
	pre := MinSize - windowSize // bytes appended before hashing starts
	for {
		if c.bpos >= c.bmax {
			if c.eof {
				if count > 0 {
					return dst, nil
				}
				return nil, io.EOF
			}
			n, err := io.ReadFull(c.rd, c.buf)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				c.eof, err = true, nil
			}
			if err != nil {
				return nil, err
			}
			c.bpos, c.bmax = 0, n
			continue
		}
		if pre > 0 {
			n := min(pre, c.bmax-c.bpos)
			put(c.buf[c.bpos : c.bpos+n])
			c.bpos += n
			count += n
			pre -= n
			continue
		}
		seg := c.buf[c.bpos:c.bmax]
		cut := -1
		i := 0
		for ; i < len(seg) && i < windowSize; i++ {
			b := seg[i]
			digest ^= tab.out[hist[i]]
			digest = (digest<<8 | uint64(b)) ^ tab.mod[digest>>polShift]
			if digest&splitMask == 0 || count+i+1 >= MaxSize {
				if count+i+1 >= MinSize {
					cut = i
					break
				}
			}
		}
		if cut < 0 && i == windowSize {
			for j := windowSize; j < len(seg); j++ {
				b, out := seg[j], seg[j-windowSize]
				digest ^= tab.out[out]
				digest = (digest<<8 | uint64(b)) ^ tab.mod[digest>>polShift]
				if digest&splitMask == 0 || count+j+1 >= MaxSize {
					if count+j+1 >= MinSize {
						cut = j
						break
					}
				}
			}
		}
		if cut >= 0 {
			put(seg[:cut+1])
			c.bpos += cut + 1
			return dst, nil
		}
		// The piece ends without a cut: keep the window's bytes.
		if len(seg) >= windowSize {
			copy(hist[:], seg[len(seg)-windowSize:])
		} else {
			copy(hist[:], hist[len(seg):])
			copy(hist[windowSize-len(seg):], seg)
		}
		put(seg)
		count += len(seg)
		c.bpos = c.bmax
	}
}
