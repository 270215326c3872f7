package repo_test

import (
	"context"
	"testing"

	"coffer/repo"
)

const benchPack = 16 << 20 // the engine's default pack size

func BenchmarkEncode(b *testing.B) {
	data := randBytes(1, benchPack)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := repo.Encode(4, 2, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWritePack(b *testing.B) {
	td := newDrives(b, 6, 3, true)
	r := newRepo(b, td, repo.Options{})
	enc, err := r.Encode(randBytes(2, benchPack))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetBytes(benchPack)
	i := 0
	for b.Loop() {
		if _, err := r.WritePack(ctx, testContainer, packID(i), enc, make([]byte, 4096)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func benchmarkReadRange(b *testing.B, n int64, lost int) {
	td := newDrives(b, 6, 3, true)
	r := newRepo(b, td, repo.Options{})
	p := writePack(b, r, packID(1), randBytes(3, benchPack), nil)
	for i := range lost {
		td.faulty[p.Drives[i]].Vanish()
	}
	ctx := context.Background()
	b.SetBytes(n)
	off := int64(0)
	for b.Loop() {
		if _, err := r.ReadRange(ctx, p, off, n, nil); err != nil {
			b.Fatal(err)
		}
		off = (off + 7*n + 12345) % (p.DataLen - n)
	}
}

func BenchmarkReadRange64K(b *testing.B)            { benchmarkReadRange(b, 64<<10, 0) }
func BenchmarkReadRange1M(b *testing.B)             { benchmarkReadRange(b, 1<<20, 0) }
func BenchmarkReadRange64KReconstruct(b *testing.B) { benchmarkReadRange(b, 64<<10, 2) }
func BenchmarkReadRange1MReconstruct(b *testing.B)  { benchmarkReadRange(b, 1<<20, 2) }
