package chunk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/restic/chunker"
)

// resticCuts returns the lengths of restic's chunks of data with the given
// bounds and average bits.
func resticCuts(t testing.TB, data []byte, pol Pol, minSize, maxSize, avgBits int) []int {
	t.Helper()
	c := chunker.NewWithBoundaries(bytes.NewReader(data), pol, uint(minSize), uint(maxSize))
	c.SetAverageBits(avgBits)
	buf := make([]byte, maxSize)
	var out []int
	for {
		ch, err := c.Next(buf)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, int(ch.Length))
	}
}

// serialCuts returns the lengths of Chunker's chunks of data.
func serialCuts(t testing.TB, data []byte, pol Pol) []int {
	t.Helper()
	c := New(bytes.NewReader(data), pol)
	buf := make([]byte, MaxSize)
	var out []int
	for {
		ch, err := c.Next(buf)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, len(ch))
	}
}

// parallelCuts returns the lengths of a Parallel chunker's chunks of r,
// checking that they are data's bytes in order. Odd calls use Next, even
// ones NextTo from a small buffer, growing it.
func parallelCuts(t testing.TB, r io.Reader, data []byte, pol Pol, opt ParallelOptions, minSize, maxSize int, mask uint64) []int {
	t.Helper()
	p, err := newParallel(r, pol, opt, minSize, maxSize, mask)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var out []int
	off := 0
	buf := make([]byte, maxSize)
	for i := 0; ; i++ {
		var ch []byte
		if i%2 == 0 {
			ch, err = p.Next(buf)
		} else {
			ch, err = p.NextTo(make([]byte, 0, 10), func(b []byte, n int) []byte {
				return append(make([]byte, 0, 2*cap(b)+n), b...)
			})
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(ch) == 0 || off+len(ch) > len(data) || !bytes.Equal(ch, data[off:off+len(ch)]) {
			t.Fatalf("chunk %d (%d bytes at %d) is not the stream's next bytes", i, len(ch), off)
		}
		off += len(ch)
		out = append(out, len(ch))
	}
	if off != len(data) {
		t.Fatalf("chunks cover %d of %d bytes", off, len(data))
	}
	if _, err := p.NextTo(nil, nil); !errors.Is(err, io.EOF) {
		t.Fatalf("NextTo after the end: %v, want io.EOF", err)
	}
	return out
}

func compareCuts(t testing.TB, what string, got, want []int) {
	t.Helper()
	if !slices.Equal(got, want) {
		n := 0
		for n < min(len(got), len(want)) && got[n] == want[n] {
			n++
		}
		t.Fatalf("%s: %d chunks, restic cuts %d; they differ from chunk %d on (got %v, want %v)",
			what, len(got), len(want), n, got[n:min(n+3, len(got))], want[n:min(n+3, len(want))])
	}
}

// The parallel chunker cuts exactly where restic's chunker cuts, on the
// inputs of TestSameCutsAsRestic, with one to three workers, blocks of
// several sizes (none a divisor of the chunk bounds but the default), and
// streams read whole or in short pieces.
func TestParallelSameCutsAsRestic(t *testing.T) {
	inputs := resticInputs()
	opts := []ParallelOptions{{}, {Workers: 1, BlockSize: 1<<20 + 1}, {Workers: 3, BlockSize: 64<<10 - 1}, {Workers: 2, BlockSize: 100_003}}
	seeds := []byte{1, 2, 3}
	if testing.Short() { // for -race: the bounds and one mixed stream
		opts, seeds = opts[2:], seeds[:1]
		for name, data := range inputs {
			if len(data) > MaxSize+1 && name != "mixed" {
				delete(inputs, name)
			}
		}
	}
	for _, seed := range seeds {
		pol := testPol(t, seed)
		for name, data := range inputs {
			want := resticCuts(t, data, pol, MinSize, MaxSize, 20)
			for i, opt := range opts {
				what := fmt.Sprintf("pol %d %s %+v", seed, name, opt)
				var r io.Reader = bytes.NewReader(data)
				if i%2 == 1 {
					r = &shortReader{r, rand.New(rand.NewSource(int64(seed) + int64(i)))}
				}
				compareCuts(t, what, parallelCuts(t, r, data, pol, opt, MinSize, MaxSize, splitMask), want)
			}
		}
	}
}

// Where a run of zeros starts, every window from its 64th byte on has the
// digest 0, so the first candidate is known: this places it, and the
// windows before it, at every offset from a block boundary.
func TestParallelCandidateAtBlockEdges(t *testing.T) {
	pol := testPol(t, 4)
	const block = 64 << 10
	rnd := randBytes(MinSize+2*block, 20)
	step := 1
	if testing.Short() {
		step = 5
	}
	for k := -2 * windowSize; k <= 2*windowSize; k += step {
		at := MinSize + block + k // the zeros start here; the first candidate ends at+63
		data := append(append([]byte(nil), rnd[:at]...), make([]byte, MinSize+block)...)
		want := resticCuts(t, data, pol, MinSize, MaxSize, 20)
		if want[0] > at+windowSize {
			t.Fatalf("offset %d: restic's first cut is %d bytes, not at the zeros", k, want[0])
		}
		got := parallelCuts(t, bytes.NewReader(data), data, pol, ParallelOptions{Workers: 2, BlockSize: block}, MinSize, MaxSize, splitMask)
		compareCuts(t, fmt.Sprintf("zeros at block edge %+d", k), got, want)
	}
}

// With small bounds and 6 to 10 average bits (restic's chunker takes both),
// chunks are a few hundred bytes, so every size rule meets blocks of every
// small size at every offset: bounds at the window size, equal bounds, and
// blocks of one byte up to more than a chunk.
func TestParallelSmallBoundsSameCutsAsRestic(t *testing.T) {
	low := bytes.Repeat([]byte("ab\x00\x00\x00\x00c"), 3000)
	streams := map[string][]byte{
		"random": randBytes(40_000, 21),
		"zeros":  make([]byte, 20_000),
		"mixed":  append(append(append(randBytes(9_000, 22), make([]byte, 5_000)...), low...), randBytes(9_000, 23)...),
	}
	type bounds struct{ min, max, bits int }
	all := []bounds{{64, 64, 6}, {64, 65, 6}, {64, 1024, 8}, {65, 300, 6}, {100, 4000, 10}, {200, 201, 7}}
	blockSizes := []int{1, 2, 63, 64, 65, 127, 129, 1000, 4096}
	if testing.Short() {
		all, blockSizes = all[1:3], []int{1, 64, 65, 1000}
	}
	for _, bd := range all {
		for _, seed := range []byte{1, 5} {
			pol := testPol(t, seed)
			for name, data := range streams {
				want := resticCuts(t, data, pol, bd.min, bd.max, bd.bits)
				for _, bs := range blockSizes {
					for _, w := range []int{1, 3} {
						opt := ParallelOptions{Workers: w, BlockSize: bs}
						what := fmt.Sprintf("pol %d %s bounds %+v %+v", seed, name, bd, opt)
						r := &shortReader{bytes.NewReader(data), rand.New(rand.NewSource(int64(bs)))}
						got := parallelCuts(t, r, data, pol, opt, bd.min, bd.max, 1<<bd.bits-1)
						compareCuts(t, what, got, want)
					}
				}
			}
		}
	}
}

// markCandidates marks exactly the positions whose window's Rabin
// fingerprint, computed from its definition (the window's 64 bytes as a
// polynomial, reduced by the polynomial), has the mask's bits zero, for every
// split of a stream into history and block.
func TestMarkCandidatesDefinition(t *testing.T) {
	pol := testPol(t, 6)
	tab := tablesFor(pol)
	stream := append(randBytes(700, 24), make([]byte, 100)...)
	stream = append(stream, randBytes(300, 25)...)
	const mask = 7
	want := make([]bool, len(stream))
	for p := windowSize - 1; p < len(stream); p++ {
		var h Pol
		for _, b := range stream[p-windowSize+1 : p+1] {
			h = (h<<8 | Pol(b)).Mod(pol)
		}
		want[p] = uint64(h)&mask == 0
	}
	bits := make([]uint64, len(stream)/64+1)
	for split := windowSize; split < 300; split++ {
		for _, n := range []int{0, 1, 63, 64, 65, 66, 67, 68, 69, 70, 71, 127, 128, 129, 300, 501} {
			data := stream[split:min(split+n, len(stream))]
			hist := (*[windowSize]byte)(stream[split-windowSize : split])
			for i := range bits {
				bits[i] = ^uint64(0) // must be cleared
			}
			markCandidates(tab, uint(pol.Deg()-8), mask, hist, data, bits)
			for i := range data {
				if got := bits[i>>6]>>(i&63)&1 == 1; got != want[split+i] {
					t.Fatalf("split %d, %d bytes: position %d marked %v, its fingerprint says %v", split, n, i, got, want[split+i])
				}
			}
		}
	}
}

func TestFirstSet(t *testing.T) {
	bs := make([]uint64, 4)
	set := []int{0, 63, 64, 130, 255}
	for _, i := range set {
		bs[i>>6] |= 1 << (i & 63)
	}
	for lo := 0; lo < 256; lo++ {
		for hi := lo - 1; hi < 256; hi++ {
			want := -1
			for _, i := range set {
				if i >= lo && i <= hi {
					want = i
					break
				}
			}
			if got := firstSet(bs, lo, hi); got != want {
				t.Fatalf("firstSet(%d, %d) = %d, want %d", lo, hi, got, want)
			}
		}
	}
}

// A read error is returned as it is, after the chunks that end before it,
// and again on every later call.
func TestParallelReadError(t *testing.T) {
	boom := errors.New("boom")
	pol := testPol(t, 1)
	data := randBytes(5<<20, 16)
	want := resticCuts(t, data, pol, MinSize, MaxSize, 20)
	p, err := NewParallel(io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom)), pol, ParallelOptions{BlockSize: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var got []int
	for {
		ch, err := p.Next(nil)
		if errors.Is(err, boom) {
			break
		}
		if err != nil {
			t.Fatalf("got %v, want the reader's error", err)
		}
		got = append(got, len(ch))
	}
	if len(got) >= len(want) || !slices.Equal(got, want[:len(got)]) {
		t.Fatalf("before the error: chunks %v, restic's of the data read: %v", got, want)
	}
	if _, err := p.NextTo(nil, nil); !errors.Is(err, boom) {
		t.Fatalf("after the error: %v", err)
	}
}

// endless is a stream that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

// Close stops every goroutine, also of a chunker stopped in the middle of
// an endless stream, and NextTo then fails.
func TestParallelClose(t *testing.T) {
	before := runtime.NumGoroutine()
	p, err := NewParallel(endless{}, testPol(t, 1), ParallelOptions{Workers: 4, BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Next(nil); err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Close()
	if _, err := p.Next(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewParallelRefuses(t *testing.T) {
	pol := testPol(t, 1)
	for _, opt := range []ParallelOptions{{Workers: -1}, {Workers: maxWorkers + 1}, {BlockSize: -1}, {BlockSize: maxBlockSize + 1}} {
		if _, err := NewParallel(bytes.NewReader(nil), pol, opt); err == nil {
			t.Errorf("options %+v accepted", opt)
		}
	}
	for _, bad := range []Pol{0, 0x3, Pol(1)<<60 | 1} {
		if _, err := NewParallel(bytes.NewReader(nil), bad, ParallelOptions{}); err == nil {
			t.Errorf("polynomial %#x accepted", uint64(bad))
		}
	}
	if _, err := newParallel(bytes.NewReader(nil), pol, ParallelOptions{}, windowSize-1, 100, 1); err == nil {
		t.Error("a minimum chunk size below the window accepted")
	}
}

// fuzzStream builds a stream from a recipe: per 3 bytes, a kind (random,
// zeros, a repeated short pattern, or a copy of earlier bytes) and a length
// up to 1 MiB, at most 12 MiB in all.
func fuzzStream(recipe []byte) []byte {
	var s []byte
	for len(recipe) >= 3 && len(s) < 12<<20 {
		kind, n := recipe[0]%4, int(binary.LittleEndian.Uint16(recipe[1:]))*16+int(recipe[0]>>2)
		recipe = recipe[3:]
		switch kind {
		case 0:
			s = append(s, randBytes(n, int64(len(s)))...)
		case 1:
			s = append(s, make([]byte, n)...)
		case 2:
			pat := randBytes(1+int(recipe0(recipe))%100, int64(n))
			for i := 0; i < n; i++ {
				s = append(s, pat[i%len(pat)])
			}
		case 3:
			if len(s) > 0 {
				from := n % len(s)
				s = append(s, s[from:from+min(n, len(s)-from)]...)
			}
		}
	}
	return s
}

func recipe0(r []byte) byte {
	if len(r) == 0 {
		return 0
	}
	return r[0]
}

// The parallel chunker cuts where the serial one does (which cuts where
// restic's does) on streams built from fuzzed recipes, with fuzzed block
// sizes and worker counts, at the real bounds and at small ones (compared
// with restic's chunker there).
func FuzzParallelSameCuts(f *testing.F) {
	f.Add(uint16(0), uint8(1), []byte{0, 0xff, 0xff, 1, 0xff, 0xff, 0, 0xff, 0xff})
	f.Add(uint16(63), uint8(2), []byte{0, 0x10, 0x80, 5, 0xff, 0x10, 2, 0xff, 0xff, 3, 0xff, 0xff})
	f.Add(uint16(4097), uint8(3), []byte{1, 0xff, 0xff, 0, 0x00, 0x01, 1, 0xff, 0xff})
	f.Add(uint16(1), uint8(2), []byte{0, 0x40, 0, 6, 0x40, 0, 3, 0x20, 0})
	pol := testPol(f, 1)
	f.Fuzz(func(t *testing.T, blockSize uint16, workers uint8, recipe []byte) {
		data := fuzzStream(recipe)
		opt := ParallelOptions{Workers: 1 + int(workers%4), BlockSize: 1 + int(blockSize)}
		if len(data) > 16<<10 {
			// Blocks of at least 1/2000 of the stream keep a run short.
			opt.BlockSize = max(1+int(blockSize)*16, len(data)/2000)
			want := serialCuts(t, data, pol)
			got := parallelCuts(t, bytes.NewReader(data), data, pol, opt, MinSize, MaxSize, splitMask)
			compareCuts(t, fmt.Sprintf("%d bytes %+v", len(data), opt), got, want)
		}
		small := data[:min(len(data), 16<<10)]
		minSize := windowSize + int(blockSize%200)
		maxSize := minSize + int(workers)*8
		bits := 6 + int(blockSize%5)
		want := resticCuts(t, small, pol, minSize, maxSize, bits)
		got := parallelCuts(t, bytes.NewReader(small), small, pol, opt, minSize, maxSize, 1<<bits-1)
		compareCuts(t, fmt.Sprintf("%d bytes, bounds %d–%d, %d bits, %+v", len(small), minSize, maxSize, bits, opt), got, want)
	})
}

// BenchmarkParallel measures the parallel chunker alone (candidates and
// cuts, chunks copied out as a backup does) with one worker per
// GOMAXPROCS: compare -cpu 1,2 with each other and with BenchmarkChunker.
// cpu-MB/s divides the bytes by the process's CPU time, which a shared
// machine's load does not change (a perfect split over 2 cores gives twice
// its MB/s).
func BenchmarkParallel(b *testing.B) {
	data := randBytes(32<<20, 4)
	pol := testPol(b, 1)
	buf := make([]byte, MaxSize)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	defer reportCPU(b, len(data))()
	for i := 0; i < b.N; i++ {
		p, err := NewParallel(bytes.NewReader(data), pol, ParallelOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := p.Next(buf); err != nil {
				break
			}
		}
		p.Close()
	}
}

// reportCPU returns a function that reports the bytes per CPU second
// since the call (n bytes per op).
func reportCPU(b *testing.B, n int) func() {
	cpu := func() float64 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	start := cpu()
	return func() {
		b.ReportMetric(float64(n)*float64(b.N)/(cpu()-start)/1e6, "cpu-MB/s")
	}
}

// BenchmarkMarkCandidates measures one worker's candidate marking alone.
func BenchmarkMarkCandidates(b *testing.B) {
	data := randBytes(defaultBlockSize, 4)
	pol := testPol(b, 1)
	tab := tablesFor(pol)
	bits := make([]uint64, len(data)/64+1)
	var hist [windowSize]byte
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		markCandidates(tab, uint(pol.Deg()-8), splitMask, &hist, data, bits)
	}
}
