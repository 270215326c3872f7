package chunk

import (
	"errors"
	"fmt"
	"io"

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

// Chunker cuts a stream into content-defined chunks between MinSize and
// MaxSize bytes. It is not safe for concurrent use; reuse one with Reset.
type Chunker struct {
	c *chunker.Chunker
}

// New returns a chunker reading from r with polynomial pol.
func New(r io.Reader, pol Pol) *Chunker {
	return &Chunker{c: chunker.NewWithBoundaries(r, pol, MinSize, MaxSize)}
}

// Reset makes the chunker read a new stream, keeping its internal buffers.
func (c *Chunker) Reset(r io.Reader, pol Pol) {
	c.c.ResetWithBoundaries(r, pol, MinSize, MaxSize)
}

// Next returns the next chunk, stored in buf (grown if it is smaller than
// MaxSize). The returned slice aliases buf and is valid until buf is reused.
// At the end of the stream Next returns io.EOF. A read error of the underlying
// reader is returned wrapped.
func (c *Chunker) Next(buf []byte) ([]byte, error) {
	if cap(buf) < MaxSize {
		buf = make([]byte, MaxSize)
	}
	ch, err := c.c.Next(buf[:cap(buf)])
	if errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	if err != nil {
		return nil, err
	}
	return ch.Data, nil
}
