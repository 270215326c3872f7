package chunk

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"runtime"
	"sync"
)

// Why the cuts can be found in parallel. Restic's chunker (and Chunker)
// resets at the start of every chunk to the window [0 … 0 1] with the digest
// 1, appends the first MinSize-64 bytes of the chunk without hashing them,
// and then slides every further byte in. Its digest is always the fully
// reduced remainder of the window's 64 bytes, read as one polynomial, modulo
// the polynomial (sliding a byte out XORs away exactly that byte's term, and
// the mod table leaves the digest below 2^degree), so it depends on the
// window's bytes and on nothing else. A position can be cut only when the
// chunk holds at least MinSize bytes there; by then exactly 64 bytes have been
// slid in since the reset, so the window holds the 64 stream bytes ending at
// that position and not the reset's 1. So whether a position is a cut
// candidate (the low 20 bits of that digest are zero) does not depend on where
// its chunk started, and the positions the reset makes different (the first
// MinSize-1 bytes of each chunk) are exactly the ones that can never be cut.
// No stretch of the stream has to be scanned serially.
//
// Parallel reads the stream in blocks, marks every block's candidates on a
// worker goroutine (starting each block's window from the 64 stream bytes
// before it), and applies the size rules serially in NextTo: the chunk
// starting at s ends at the first candidate at or after s+MinSize-1, at
// s+MaxSize-1 if there is none before, or at the end of the stream.

// ParallelOptions tunes a Parallel chunker. Zero values take the defaults.
type ParallelOptions struct {
	// Workers is the number of goroutines marking cut candidates
	// (default runtime.GOMAXPROCS(0), at most 1024).
	Workers int
	// BlockSize is the number of stream bytes each worker marks at a time
	// (default 128 KiB, at most 64 MiB). The chunker holds 2·Workers+2
	// blocks, each with a candidate bitmap of BlockSize/8 bytes.
	BlockSize int
}

const (
	defaultBlockSize = 128 << 10
	maxBlockSize     = 64 << 20
	maxWorkers       = 1024
)

// Parallel cuts a stream at exactly the bytes Chunker (and restic's chunker)
// cuts, using several goroutines to find the cut candidates; one stream
// chunks at about Workers times one core's rate. Its methods are not safe
// for concurrent use. Close must be called to stop its goroutines.
type Parallel struct {
	min, max int    // chunk size bounds (MinSize, MaxSize but in tests)
	mask     uint64 // a candidate's digest has these bits zero
	tab      *tables
	polShift uint

	free  chan *block // blocks ready to be read into
	work  chan *block // blocks to mark, in stream order
	order chan *block // blocks to consume, in stream order
	quit  chan struct{}
	wg    sync.WaitGroup

	// Touched only by NextTo's goroutine.
	cur    *block // the block being consumed (nil: take the next from order)
	cpos   int    // cur.data[cpos:] not yet consumed
	err    error  // sticky: io.EOF, a read error or ErrClosed
	closed bool
}

// ErrClosed is returned by NextTo after Close.
var ErrClosed = errors.New("chunk: parallel chunker closed")

// block is a piece of the stream read as one; it goes free → (read by the
// producer) → work and order → (marked by a worker, consumed by NextTo) →
// free.
type block struct {
	buf  []byte           // BlockSize bytes of storage
	data []byte           // buf[:n], the stream bytes of this block
	hist [windowSize]byte // the windowSize stream bytes before data (zeros before the stream's start)
	bits []uint64         // bit i set: data[i] ends a window whose digest is a candidate
	last bool             // the stream ends with this block
	err  error            // a read error: data is empty and the stream ends here
	done chan struct{}    // a token once bits is ready (capacity 1)
}

// NewParallel returns a chunker reading r with polynomial pol and starts its
// goroutines. It fails for options out of bounds or a polynomial of a
// degree above 53 (or below 8).
func NewParallel(r io.Reader, pol Pol, opt ParallelOptions) (*Parallel, error) {
	return newParallel(r, pol, opt, MinSize, MaxSize, splitMask)
}

func newParallel(r io.Reader, pol Pol, opt ParallelOptions, minSize, maxSize int, mask uint64) (*Parallel, error) {
	if opt.Workers == 0 {
		opt.Workers = runtime.GOMAXPROCS(0)
	}
	if opt.BlockSize == 0 {
		opt.BlockSize = defaultBlockSize
	}
	if opt.Workers < 1 || opt.Workers > maxWorkers {
		return nil, fmt.Errorf("chunk: %d chunker workers, want 1 to %d", opt.Workers, maxWorkers)
	}
	if opt.BlockSize < 1 || opt.BlockSize > maxBlockSize {
		return nil, fmt.Errorf("chunk: chunker block size %d, want 1 to %d bytes", opt.BlockSize, maxBlockSize)
	}
	if d := pol.Deg(); d < 8 || d > 53 {
		return nil, fmt.Errorf("chunk: the polynomial has degree %d, want 8 to 53", d)
	}
	if minSize < windowSize || maxSize < minSize {
		// Below windowSize the reset's 1 would still be in the window at
		// a position that may be cut (see the comment at the top).
		return nil, fmt.Errorf("chunk: chunk bounds %d–%d", minSize, maxSize)
	}
	n := 2*opt.Workers + 2
	p := &Parallel{
		min: minSize, max: maxSize, mask: mask,
		tab: tablesFor(pol), polShift: uint(pol.Deg() - 8),
		free:  make(chan *block, n),
		work:  make(chan *block, n),
		order: make(chan *block, n),
		quit:  make(chan struct{}),
	}
	for i := 0; i < n; i++ {
		p.free <- &block{
			buf:  make([]byte, opt.BlockSize),
			bits: make([]uint64, (opt.BlockSize+63)/64),
			done: make(chan struct{}, 1),
		}
	}
	p.wg.Add(1 + opt.Workers)
	go p.produce(r)
	for i := 0; i < opt.Workers; i++ {
		go p.mark()
	}
	return p, nil
}

// produce reads the stream into free blocks and hands them on, in order,
// until the stream ends, a read fails or Close.
func (p *Parallel) produce(r io.Reader) {
	defer p.wg.Done()
	var hist [windowSize]byte
	for {
		var b *block
		select {
		case b = <-p.free:
		case <-p.quit:
			return
		}
		n, err := io.ReadFull(r, b.buf)
		b.data, b.hist, b.last, b.err = b.buf[:n], hist, false, nil
		switch {
		case err == nil:
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			b.last = true
		default:
			// As Chunker does: the chunk being read is abandoned.
			b.data, b.last, b.err = nil, true, err
		}
		if len(b.data) >= windowSize {
			copy(hist[:], b.data[len(b.data)-windowSize:])
		} else {
			copy(hist[:], hist[len(b.data):])
			copy(hist[windowSize-len(b.data):], b.data)
		}
		// Neither send blocks: each channel has room for every block.
		if len(b.data) > 0 {
			p.work <- b
		} else {
			b.done <- struct{}{}
		}
		p.order <- b
		if b.last {
			return
		}
	}
}

// mark sets the candidate bits of blocks until Close.
func (p *Parallel) mark() {
	defer p.wg.Done()
	for {
		select {
		case b := <-p.work:
			markCandidates(p.tab, p.polShift, p.mask, &b.hist, b.data, b.bits)
			b.done <- struct{}{}
		case <-p.quit:
			return
		}
	}
}

// markCandidates clears bits and sets bit i for every i where the digest of
// the window ending at data[i] (hist then data being the stream) has the
// bits of mask zero.
//
// One rolling digest is a chain of dependent table loads, which leaves most
// of a core idle, so the block is hashed as four lanes at once, each from
// the 64 bytes before it: about three times one chain's rate
// (BenchmarkMarkCandidates).
func markCandidates(tab *tables, polShift uint, mask uint64, hist *[windowSize]byte, data []byte, bits []uint64) {
	clear(bits[:(len(data)+63)/64])
	polShift &= 63
	// The digest is always below 2^degree, so digest>>polShift fits a
	// byte, and the conversion only spares the bounds check.
	slide := func(d uint64, out, in byte) uint64 {
		d ^= tab.out[out]
		return (d<<8 | uint64(in)) ^ tab.mod[byte(d>>polShift)]
	}
	set := func(i int) { bits[i>>6] |= 1 << (i & 63) }
	// Lane 0 starts from hist, slid in from an empty window (sliding a
	// zero out is a no-op: tab.out[0] is 0), and first slides hist out.
	var d0 uint64
	for _, b := range hist {
		d0 = slide(d0, 0, b)
	}
	for i, b := range data[:min(len(data), windowSize)] {
		if d0 = slide(d0, hist[i], b); d0&mask == 0 {
			set(i)
		}
	}
	if len(data) <= windowSize {
		return
	}
	// Lanes k = 0…3 cover data[a_k : a_k+n], a_k = windowSize+k·n; the
	// last one goes on over the remainder.
	n := (len(data) - windowSize) / 4
	warm := func(a int) (d uint64) {
		for _, b := range data[a-windowSize : a] {
			d = slide(d, 0, b)
		}
		return d
	}
	a1, a2, a3 := windowSize+n, windowSize+2*n, windowSize+3*n
	d1, d2, d3 := warm(a1), warm(a2), warm(a3)
	in0, out0 := data[windowSize:a1], data[:n]
	in1, out1 := data[a1:a1+n], data[a1-windowSize:a1-windowSize+n]
	in2, out2 := data[a2:a2+n], data[a2-windowSize:a2-windowSize+n]
	in3, out3 := data[a3:a3+n], data[a3-windowSize:a3-windowSize+n]
	for j := range in0 {
		// Written out rather than through slide: the compiler then
		// keeps all four digests in registers.
		d0 ^= tab.out[out0[j]]
		d1 ^= tab.out[out1[j]]
		d2 ^= tab.out[out2[j]]
		d3 ^= tab.out[out3[j]]
		d0 = (d0<<8 | uint64(in0[j])) ^ tab.mod[byte(d0>>polShift)]
		d1 = (d1<<8 | uint64(in1[j])) ^ tab.mod[byte(d1>>polShift)]
		d2 = (d2<<8 | uint64(in2[j])) ^ tab.mod[byte(d2>>polShift)]
		d3 = (d3<<8 | uint64(in3[j])) ^ tab.mod[byte(d3>>polShift)]
		if d0&mask == 0 || d1&mask == 0 || d2&mask == 0 || d3&mask == 0 {
			for k, d := range [4]uint64{d0, d1, d2, d3} {
				if d&mask == 0 {
					set(windowSize + k*n + j)
				}
			}
		}
	}
	for i := a3 + n; i < len(data); i++ {
		if d3 = slide(d3, data[i-windowSize], data[i]); d3&mask == 0 {
			set(i)
		}
	}
}

// firstSet returns the index of the first set bit of bs in [lo, hi], or -1.
func firstSet(bs []uint64, lo, hi int) int {
	if lo > hi {
		return -1
	}
	w, last := lo>>6, hi>>6
	x := bs[w] &^ (1<<(lo&63) - 1)
	for {
		if x != 0 {
			if i := w<<6 + bits.TrailingZeros64(x); i <= hi {
				return i
			}
			return -1
		}
		if w++; w > last {
			return -1
		}
		x = bs[w]
	}
}

// Next returns the next chunk, stored in buf (grown if it is smaller than
// MaxSize), as Chunker.Next does.
func (p *Parallel) Next(buf []byte) ([]byte, error) {
	if cap(buf) < p.max {
		buf = make([]byte, p.max)
	}
	return p.NextTo(buf[:0], nil)
}

// NextTo appends the next chunk to dst and returns the extended slice, with
// the contract of Chunker.NextTo: grow(dst, n) is called when dst has no
// room for n more bytes (nil grow: append's growth), io.EOF at the end of
// the stream, and a read error of the underlying reader returned as it is,
// the chunk abandoned. After an error every call returns it again (ErrClosed
// after Close). grow runs on the caller's goroutine.
func (p *Parallel) NextTo(dst []byte, grow func(b []byte, n int) []byte) ([]byte, error) {
	if p.err != nil {
		return nil, p.err
	}
	put := func(b []byte) {
		if grow != nil && cap(dst)-len(dst) < len(b) {
			dst = grow(dst, len(b))
		}
		dst = append(dst, b...)
	}
	count := 0 // bytes of this chunk so far
	for {
		if p.cur == nil {
			p.cur = <-p.order // never blocks for ever: the producer sends until the last block
			<-p.cur.done
			p.cpos = 0
		}
		b := p.cur
		if b.err != nil {
			p.err = b.err
			return nil, p.err
		}
		// The cut is the first candidate from the chunk's MinSize-th
		// byte on, or its MaxSize-th byte.
		lo := p.cpos + max(0, p.min-1-count)
		hi := p.cpos + p.max - 1 - count
		end := len(b.data) - 1
		cut := firstSet(b.bits, lo, min(hi, end))
		if cut < 0 && hi <= end {
			cut = hi
		}
		if cut >= 0 {
			put(b.data[p.cpos : cut+1])
			p.cpos = cut + 1
			return dst, nil
		}
		put(b.data[p.cpos:])
		count += len(b.data) - p.cpos
		p.cpos = len(b.data)
		if b.last {
			p.err = io.EOF
			if count > 0 {
				return dst, nil
			}
			return nil, io.EOF
		}
		p.cur = nil
		p.free <- b // never blocks: free has room for every block
	}
}

// Close stops the chunker's goroutines and waits for them, including a Read
// of the stream in progress. Later calls of NextTo return ErrClosed (or the
// error, io.EOF included, that NextTo had already returned).
func (p *Parallel) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	close(p.quit)
	p.wg.Wait()
	if p.err == nil {
		p.err = ErrClosed
	}
	return nil
}
