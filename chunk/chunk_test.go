package chunk

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"testing"
	"testing/iotest"

	"github.com/restic/chunker"
	"golang.org/x/crypto/hkdf"
)

func testPol(t testing.TB, seed byte) Pol {
	t.Helper()
	p, err := DerivePol(hkdf.New(sha256.New, []byte{seed}, nil, []byte("test polynomial")))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func randBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func chunks(t testing.TB, data []byte, pol Pol) [][]byte {
	t.Helper()
	c := New(bytes.NewReader(data), pol)
	var out [][]byte
	buf := make([]byte, MaxSize)
	for {
		ch, err := c.Next(buf)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), ch...))
	}
}

func TestChunkBoundsAndReassembly(t *testing.T) {
	data := randBytes(24<<20, 1)
	pol := testPol(t, 1)
	cs := chunks(t, data, pol)
	if len(cs) < 3 {
		t.Fatalf("got %d chunks of 24 MiB, want several", len(cs))
	}
	var joined []byte
	for i, c := range cs {
		if len(c) > MaxSize || (len(c) < MinSize && i != len(cs)-1) {
			t.Errorf("chunk %d has %d bytes, outside [%d,%d]", i, len(c), MinSize, MaxSize)
		}
		joined = append(joined, c...)
	}
	if !bytes.Equal(joined, data) {
		t.Fatal("chunks do not reassemble to the input")
	}
}

func TestDerivePolDeterministicAndSecret(t *testing.T) {
	a1, a2, b := testPol(t, 1), testPol(t, 1), testPol(t, 9)
	if a1 != a2 {
		t.Fatal("same seed gave different polynomials")
	}
	if a1 == b {
		t.Fatal("different seeds gave the same polynomial")
	}
	if !a1.Irreducible() {
		t.Fatal("derived polynomial is reducible")
	}
}

func TestDifferentPolsCutDifferently(t *testing.T) {
	data := randBytes(16<<20, 2)
	a := chunks(t, data, testPol(t, 1))
	b := chunks(t, data, testPol(t, 9))
	if len(a) == len(b) {
		same := true
		for i := range a {
			if len(a[i]) != len(b[i]) {
				same = false
			}
		}
		if same {
			t.Fatal("two tenants' polynomials cut identical boundaries")
		}
	}
}

func TestShiftResistance(t *testing.T) {
	// Inserting bytes near the start must leave most later chunks unchanged:
	// that is what makes content-defined chunking deduplicate edited files.
	data := randBytes(16<<20, 3)
	pol := testPol(t, 1)
	h := NewHasher([32]byte{1})
	before := map[ID]bool{}
	for _, c := range chunks(t, data, pol) {
		before[h.Sum(c)] = true
	}
	edited := append(append(append([]byte(nil), data[:1000]...), []byte("inserted")...), data[1000:]...)
	after := chunks(t, edited, pol)
	shared := 0
	for _, c := range after {
		if before[h.Sum(c)] {
			shared++
		}
	}
	if shared < len(after)-2 {
		t.Fatalf("only %d of %d chunks survived a small insert", shared, len(after))
	}
}

func TestHasherKeyed(t *testing.T) {
	data := []byte("the same data in two tenants")
	a := NewHasher([32]byte{1}).Sum(data)
	b := NewHasher([32]byte{2}).Sum(data)
	if a == b {
		t.Fatal("two keys gave the same content ID")
	}
	if a != NewHasher([32]byte{1}).Sum(data) {
		t.Fatal("same key and data gave different IDs")
	}
	id, err := ParseID(a.String())
	if err != nil || id != a {
		t.Fatalf("ParseID(String()) = %v, %v", id, err)
	}
	for _, bad := range []string{"", "zz", a.String()[:10], a.String() + "00"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded", bad)
		}
	}
}

func TestHasherConcurrent(t *testing.T) {
	h := NewHasher([32]byte{7})
	want := h.Sum([]byte("x"))
	done := make(chan ID)
	for i := 0; i < 8; i++ {
		go func() { done <- h.Sum([]byte("x")) }()
	}
	for i := 0; i < 8; i++ {
		if got := <-done; got != want {
			t.Fatal("concurrent Sum differs")
		}
	}
}

func BenchmarkChunker(b *testing.B) {
	data := randBytes(32<<20, 4)
	pol := testPol(b, 1)
	buf := make([]byte, MaxSize)
	c := New(bytes.NewReader(data), pol)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	defer reportCPU(b, len(data))()
	for i := 0; i < b.N; i++ {
		c.Reset(bytes.NewReader(data), pol)
		for {
			if _, err := c.Next(buf); err != nil {
				break
			}
		}
	}
}

func BenchmarkIDBlake3(b *testing.B) {
	data := randBytes(1<<20, 5)
	h := NewHasher([32]byte{1})
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		h.Sum(data)
	}
}

func BenchmarkIDHMAC(b *testing.B) {
	data := randBytes(1<<20, 5)
	key := make([]byte, 32)
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		m := hmac.New(sha256.New, key)
		m.Write(data)
		m.Sum(nil)
	}
}

// shortReader returns at most a pseudo-random number of bytes per Read.
type shortReader struct {
	r   io.Reader
	rng *rand.Rand
}

func (s *shortReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1+s.rng.Intn(min(len(p), 300000))]
	}
	return s.r.Read(p)
}

// The chunker cuts exactly where github.com/restic/chunker v0.4 cuts (the
// boundaries are part of every stored snapshot's deduplication), for random
// and low-entropy data, several polynomials and lengths around the bounds,
// through Next and through NextTo with a growing buffer, on streams read
// whole or in short pieces.
func TestSameCutsAsRestic(t *testing.T) {
	inputs := resticInputs()
	for _, seed := range []byte{1, 2, 3} {
		pol := testPol(t, seed)
		for name, data := range inputs {
			want := resticChunks(t, data, pol)
			got := chunks(t, data, pol)
			compareChunks(t, fmt.Sprintf("pol %d %s Next", seed, name), got, want)

			c := New(&shortReader{bytes.NewReader(data), rand.New(rand.NewSource(int64(seed)))}, pol)
			var grown [][]byte
			for {
				grows := 0
				ch, err := c.NextTo(make([]byte, 0, 1000), func(b []byte, n int) []byte {
					grows++
					nb := make([]byte, len(b), 2*cap(b)+n)
					copy(nb, b)
					return nb
				})
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(ch) > 1000 && grows == 0 {
					t.Fatalf("pol %d %s: a chunk of %d bytes without a call to grow", seed, name, len(ch))
				}
				grown = append(grown, append([]byte(nil), ch...))
			}
			compareChunks(t, fmt.Sprintf("pol %d %s NextTo", seed, name), grown, want)
		}
	}
}

// resticInputs are the streams both chunkers are compared with restic's on:
// random and low-entropy data and lengths around the bounds.
func resticInputs() map[string][]byte {
	zeros := make([]byte, 20<<20)
	pattern := bytes.Repeat(randBytes(4096, 7), 5<<10)                                                             // 20 MiB of one 4 KiB block
	mixed := append(append(append([]byte(nil), randBytes(3<<20, 8)...), zeros[:9<<20]...), randBytes(5<<20, 9)...) // random, zeros, random
	return map[string][]byte{
		"empty": nil, "one": {42}, "min-1": randBytes(MinSize-1, 10), "min": randBytes(MinSize, 11),
		"min+1": randBytes(MinSize+1, 12), "max": randBytes(MaxSize, 13), "max+1": randBytes(MaxSize+1, 14),
		"random-40M": randBytes(40<<20, 15), "zeros": zeros, "pattern": pattern, "mixed": mixed,
	}
}

func resticChunks(t *testing.T, data []byte, pol Pol) [][]byte {
	t.Helper()
	c := chunker.NewWithBoundaries(bytes.NewReader(data), pol, MinSize, MaxSize)
	buf := make([]byte, MaxSize)
	var out [][]byte
	for {
		ch, err := c.Next(buf)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), ch.Data...))
	}
}

func compareChunks(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d chunks, restic cuts %d", what, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: chunk %d: %d bytes, restic's has %d (or other bytes)", what, i, len(got[i]), len(want[i]))
		}
	}
}

func TestReadErrorReturned(t *testing.T) {
	boom := errors.New("boom")
	c := New(io.MultiReader(bytes.NewReader(randBytes(3<<20, 16)), iotest.ErrReader(boom)), testPol(t, 1))
	buf := make([]byte, MaxSize)
	for {
		_, err := c.Next(buf)
		if errors.Is(err, boom) {
			return
		}
		if err != nil {
			t.Fatalf("got %v, want the reader's error", err)
		}
	}
}
