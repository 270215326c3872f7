package engine

import (
	"io"
	"testing"

	"coffer/chunk"
	"coffer/internal/benchdata"
)

// Stage benchmarks of the backup hot path on the benchmark data set
// (COFFER_BENCH_DATA, else a synthetic mix; see internal/benchdata).

func benchChunks(b *testing.B) [][]byte {
	b.Helper()
	data := benchdata.Load(b, 32<<20)
	var out [][]byte
	for len(data) > 0 {
		n := min(len(data), 1<<20) // about the chunker's average
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

func BenchmarkStageCompress(b *testing.B) {
	chunks := benchChunks(b)
	var total int64
	for _, c := range chunks {
		total += int64(len(c))
	}
	b.SetBytes(total)
	buf := make([]byte, 0, 2<<20)
	var out int64
	for i := 0; i < b.N; i++ {
		out = 0
		for _, c := range chunks {
			buf = compressTo(buf, c)
			out += int64(len(buf))
		}
	}
	b.ReportMetric(float64(out)/float64(total), "ratio")
}

func BenchmarkStageSeal(b *testing.B) {
	chunks := benchChunks(b)
	var total int64
	for _, c := range chunks {
		total += int64(len(c))
	}
	key := [KeySize]byte{1}
	b.SetBytes(total)
	buf := make([]byte, 0, 2<<20)
	for i := 0; i < b.N; i++ {
		for _, c := range chunks {
			buf = sealRawTo(buf[:0], &key, blobAD([16]byte{}, DataBlob, [32]byte{}), c)
		}
	}
}

// BenchmarkStageCompressSeal is what a seal worker does per chunk.
func BenchmarkStageCompressSeal(b *testing.B) {
	chunks := benchChunks(b)
	var total int64
	for _, c := range chunks {
		total += int64(len(c))
	}
	key := [KeySize]byte{1}
	b.SetBytes(total)
	for i := 0; i < b.N; i++ {
		for _, c := range chunks {
			_, s := sealBlobScratch(&key, [16]byte{}, DataBlob, [32]byte{}, c)
			putScratch(s)
		}
	}
}

func BenchmarkStagePack(b *testing.B) {
	chunks := benchChunks(b)
	var total int64
	for _, c := range chunks {
		total += int64(len(c))
	}
	b.SetBytes(total)
	for i := 0; i < b.N; i++ {
		p := packer{size: DefaultPackSize}
		for _, c := range chunks {
			if pp := p.add(DataBlob, [32]byte{}, c, len(c)); pp != nil {
				pp.recycle()
			}
		}
	}
}

func BenchmarkStageChunkAndID(b *testing.B) {
	data := benchdata.Load(b, 32<<20)
	k, err := deriveTenantKeys([16]byte{1}, &[KeySize]byte{2})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	buf := make([]byte, chunk.MaxSize)
	c := chunk.New(nil, k.pol)
	for i := 0; i < b.N; i++ {
		c.Reset(bytesReader(data), k.pol)
		for {
			d, err := c.Next(buf)
			if err != nil {
				break
			}
			k.ids.Sum(d)
		}
	}
}

type sliceReader struct{ b []byte }

func bytesReader(b []byte) *sliceReader { return &sliceReader{b} }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
