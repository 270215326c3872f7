package engine

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"coffer/chunk"
	"coffer/internal/benchdata"
	"coffer/repo"
)

// Stage benchmarks of the backup hot path, for the ceiling computed in
// docs/benchmarks.md ("Ceiling from the stage benchmarks").
//
// Input: every file below $COFFER_BENCH_DATA (the shared data set, e.g. made
// by ../shared/bench/mkdata.py), read whole, in the order a backup walks
// them; without it, 32 MiB of synthetic mixed data (internal/benchdata). The
// files are cut by the real chunker with a tenant's polynomial, so each stage
// sees what it sees in a first backup: the chunker and the ID hash every
// chunk, the dedup lookup every chunk ID, and compression, sealing, packing,
// Reed-Solomon and the shard writes only the distinct chunks (the data set
// has zero runs and repeated blocks), each on the output of the stage before.
//
// Every benchmark reports MB/s of INPUT bytes (the whole data set), so the
// CPU cost per input byte of the pipeline is the sum of 1/(MB/s) over the
// stages. "stageMB/s" is the same time over the bytes the stage itself
// handles, "frac" those bytes over the input bytes (the lookup reports
// lookups/s instead), and "cpuMB/s" the input bytes per second of CPU time
// the process used (the cost of a stage that also waits, like the shard
// writes with their fsyncs; it includes the test process's own background
// work, such as the index's).

type stageData struct {
	paths []string // the files on disk (nil for synthetic data)
	files [][]byte
	in    int64 // input bytes

	all [][]byte   // every chunk in backup order (aliasing files)
	ids [][32]byte // content ID of every chunk

	uniq      [][]byte // the first occurrence of each distinct chunk
	uniqIDs   [][32]byte
	uniqBytes int64

	comp        [][]byte // compressTo of each distinct chunk: the seal input
	compBytes   int64
	sealed      [][]byte // the sealed blobs: the pack input
	sealedBytes int64

	keys *tenantKeys
}

var (
	stageOnce sync.Once
	stage     *stageData
	stageErr  error
)

func loadStage(b *testing.B) *stageData {
	b.Helper()
	stageOnce.Do(func() { stage, stageErr = buildStage(b) })
	if stageErr != nil {
		b.Fatal(stageErr)
	}
	b.SetBytes(stage.in)
	return stage
}

func buildStage(b *testing.B) (*stageData, error) {
	d := &stageData{}
	if dir := os.Getenv("COFFER_BENCH_DATA"); dir != "" {
		err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				d.paths = append(d.paths, p)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(d.paths)
		for _, p := range d.paths {
			f, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			d.files = append(d.files, f)
			d.in += int64(len(f))
		}
	}
	if d.in == 0 {
		d.paths, d.files = nil, [][]byte{benchdata.Synthetic(32 << 20)}
		d.in = int64(len(d.files[0]))
	}
	var err error
	if d.keys, err = deriveTenantKeys([16]byte{1}, &[KeySize]byte{2}); err != nil {
		return nil, err
	}
	buf := make([]byte, chunk.MaxSize)
	c := chunk.New(nil, d.keys.pol)
	seen := map[[32]byte]bool{}
	for _, f := range d.files {
		c.Reset(bytesReader(f), d.keys.pol)
		off := 0
		for {
			ch, err := c.Next(buf)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, err
			}
			data := f[off : off+len(ch)]
			off += len(ch)
			id := d.keys.ids.Sum(data)
			d.all = append(d.all, data)
			d.ids = append(d.ids, id)
			if !seen[id] {
				seen[id] = true
				d.uniq = append(d.uniq, data)
				d.uniqIDs = append(d.uniqIDs, id)
				d.uniqBytes += int64(len(data))
			}
		}
	}
	for i, u := range d.uniq {
		cp := compressTo(nil, u)
		d.comp = append(d.comp, cp)
		d.compBytes += int64(len(cp))
		s := sealRawTo(nil, &d.keys.data, blobAD([16]byte{1}, DataBlob, d.uniqIDs[i]), cp)
		d.sealed = append(d.sealed, s)
		d.sealedBytes += int64(len(s))
	}
	b.Logf("stage data: %d files, %d bytes, %d chunks, %d distinct (%d bytes), %d compressed, %d sealed",
		len(d.files), d.in, len(d.all), len(d.uniq), d.uniqBytes, d.compBytes, d.sealedBytes)
	return d, nil
}

// cpuTime is the CPU time (user and system) of the process so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report adds the stage's own throughput, its share of the input and, from
// the CPU time the process used since cpu0, its input MB per CPU second
// (cpuMB/s: below MB/s when the stage waits, as for fsync on a disk).
func (d *stageData) report(b *testing.B, stageBytes int64, cpu0 time.Duration) {
	if s := b.Elapsed().Seconds(); s > 0 && stageBytes > 0 {
		b.ReportMetric(float64(stageBytes)*float64(b.N)/1e6/s, "stageMB/s")
	}
	if c := (cpuTime() - cpu0).Seconds(); c > 0 {
		b.ReportMetric(float64(d.in)*float64(b.N)/1e6/c, "cpuMB/s")
	}
	if stageBytes > 0 {
		b.ReportMetric(float64(stageBytes)/float64(d.in), "frac")
	}
}

// packs returns the sealed blobs gathered into packs of the default size,
// each in a buffer with room for its parity.
func (d *stageData) packs() []*pendingPack {
	p := packer{size: DefaultPackSize, k: DefaultDataShards, m: DefaultParityShards}
	var out []*pendingPack
	for i, s := range d.sealed {
		if pp := p.add(DataBlob, d.uniqIDs[i], s, len(d.uniq[i])); pp != nil {
			out = append(out, pp)
		}
	}
	if pp := p.take(); pp != nil {
		out = append(out, pp)
	}
	return out
}

// BenchmarkStageRead reads every file of the data set as a file worker does
// (open with O_NOATIME, read into an 8 MiB buffer, close). Only with
// COFFER_BENCH_DATA; with the data on tmpfs or in the page cache it is the
// kernel's copy.
func BenchmarkStageRead(b *testing.B) {
	d := loadStage(b)
	if d.paths == nil {
		b.Skip("needs COFFER_BENCH_DATA")
	}
	buf := make([]byte, chunk.MaxSize)
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for _, p := range d.paths {
			fd, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOATIME, 0)
			if err != nil {
				b.Fatal(err)
			}
			for {
				n, err := fd.Read(buf)
				if n == 0 || err != nil {
					break
				}
			}
			fd.Close()
		}
	}
	d.report(b, d.in, cpu0)
}

// BenchmarkStageChunk is the content-defined chunker alone.
func BenchmarkStageChunk(b *testing.B) {
	d := loadStage(b)
	buf := make([]byte, chunk.MaxSize)
	c := chunk.New(nil, d.keys.pol)
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for _, f := range d.files {
			c.Reset(bytesReader(f), d.keys.pol)
			for {
				if _, err := c.Next(buf); err != nil {
					break
				}
			}
		}
	}
	d.report(b, d.in, cpu0)
}

// BenchmarkStageID is the keyed BLAKE3 content ID of every chunk.
func BenchmarkStageID(b *testing.B) {
	d := loadStage(b)
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for _, c := range d.all {
			d.keys.ids.Sum(c)
		}
	}
	d.report(b, d.in, cpu0)
}

// BenchmarkStageChunkAndID is what a file worker computes per file: chunk
// and hash (a check on the sum of the two benchmarks above).
func BenchmarkStageChunkAndID(b *testing.B) {
	d := loadStage(b)
	buf := make([]byte, chunk.MaxSize)
	c := chunk.New(nil, d.keys.pol)
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for _, f := range d.files {
			c.Reset(bytesReader(f), d.keys.pol)
			for {
				ch, err := c.Next(buf)
				if err != nil {
					break
				}
				d.keys.ids.Sum(ch)
			}
		}
	}
	d.report(b, d.in, cpu0)
}

// stageTenant is a fresh repository (under $TMPDIR) and tenant.
func stageTenant(b *testing.B) *Tenant {
	b.Helper()
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "repo")
	if _, err := Init(ctx, dir, InitOptions{}); err != nil {
		b.Fatal(err)
	}
	e, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	if _, err := e.CreateTenant(ctx, "bench", TenantOptions{}); err != nil {
		b.Fatal(err)
	}
	t, err := e.OpenTenant(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// BenchmarkStageLookup is the dedup lookup of every chunk ID as in a first
// backup into a fresh tenant: this backup's claimed set, then the index
// (pebble; misses), then the claim.
func BenchmarkStageLookup(b *testing.B) {
	d := loadStage(b)
	t := stageTenant(b)
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		bk := &backup{t: t, pending: map[[32]byte]struct{}{}}
		for _, id := range d.ids {
			if _, err := bk.claim(id); err != nil {
				b.Fatal(err)
			}
		}
	}
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(len(d.ids))*float64(b.N)/s, "lookups/s")
	}
	d.report(b, 0, cpu0)
}

// BenchmarkStageCompress is zstd (as configured for blobs) of every distinct
// chunk, with the fallback to storing a chunk as it is.
func BenchmarkStageCompress(b *testing.B) {
	d := loadStage(b)
	buf := make([]byte, 0, 2<<20)
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for _, c := range d.uniq {
			buf = compressTo(buf, c)
		}
	}
	d.report(b, d.uniqBytes, cpu0)
	b.ReportMetric(float64(d.compBytes)/float64(d.uniqBytes), "ratio")
}

// BenchmarkStageSeal is XChaCha20-Poly1305 of every compressed chunk.
func BenchmarkStageSeal(b *testing.B) {
	d := loadStage(b)
	buf := make([]byte, 0, 2<<20)
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for j, c := range d.comp {
			buf = sealRawTo(buf[:0], &d.keys.data, blobAD([16]byte{1}, DataBlob, d.uniqIDs[j]), c)
		}
	}
	d.report(b, d.compBytes, cpu0)
}

// BenchmarkStageCompressSeal is what a seal worker does per distinct chunk
// (a check on the sum of the two benchmarks above).
func BenchmarkStageCompressSeal(b *testing.B) {
	d := loadStage(b)
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for j, c := range d.uniq {
			_, s := sealBlobScratch(&d.keys.data, [16]byte{1}, DataBlob, d.uniqIDs[j], c)
			putScratch(s)
		}
	}
	d.report(b, d.uniqBytes, cpu0)
}

// BenchmarkStagePack appends every sealed blob to packs of the default size.
func BenchmarkStagePack(b *testing.B) {
	d := loadStage(b)
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		p := packer{size: DefaultPackSize, k: DefaultDataShards, m: DefaultParityShards}
		for j, s := range d.sealed {
			if pp := p.add(DataBlob, d.uniqIDs[j], s, len(d.uniq[j])); pp != nil {
				pp.recycle()
			}
		}
		if pp := p.take(); pp != nil {
			pp.recycle()
		}
	}
	d.report(b, d.sealedBytes, cpu0)
}

// BenchmarkStageEncode is the Reed-Solomon 4+2 encoding in place of every
// pack, with the BLAKE3 hash of each of its six shards (repo.EncodeInPlace).
func BenchmarkStageEncode(b *testing.B) {
	d := loadStage(b)
	packs := d.packs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for _, pp := range packs {
			if _, err := repo.EncodeInPlace(DefaultDataShards, DefaultParityShards, pp.data); err != nil {
				b.Fatal(err)
			}
		}
	}
	d.report(b, d.sealedBytes, cpu0)
}

// BenchmarkStageWrite writes the shards of every encoded pack (pack header
// sealed, shard headers and block CRCs, six files made durable: temporary
// name, fsync, rename, fsync of the folder) to the six default drive folders
// of a fresh repository under $TMPDIR, and indexes each pack (one synced
// pebble batch). The Reed-Solomon encoding is done before the timer.
func BenchmarkStageWrite(b *testing.B) {
	d := loadStage(b)
	t := stageTenant(b)
	packs := d.packs()
	encs := make([]*repo.Encoded, len(packs))
	for i, pp := range packs {
		var err error
		if encs[i], err = repo.EncodeInPlace(DefaultDataShards, DefaultParityShards, pp.data); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for j, pp := range packs {
			if _, err := t.writeEncoded(ctx, pp, encs[j], repo.WriteOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	d.report(b, d.sealedBytes, cpu0)
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
