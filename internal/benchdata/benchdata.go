// Package benchdata gives benchmarks their input: the shared data set (the
// files below $COFFER_BENCH_DATA, e.g. a folder made by
// ../shared/bench/mkdata.py) when it is set, else a deterministic synthetic
// mix of text-like and random bytes. Stage benchmarks measured only on random
// bytes flatter compression (zstd gives up early on them), so the ceiling
// computed from the stages uses the same data as the end-to-end run.
package benchdata

import (
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// Load returns about n bytes of benchmark input.
func Load(tb testing.TB, n int) []byte {
	tb.Helper()
	if dir := os.Getenv("COFFER_BENCH_DATA"); dir != "" {
		var paths []string
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				paths = append(paths, p)
			}
			return nil
		})
		sort.Strings(paths)
		// Spread the sample over the whole set: every k-th file.
		step := max(1, len(paths)/256)
		out := make([]byte, 0, n)
		for i := 0; i < len(paths) && len(out) < n; i += step {
			b, err := os.ReadFile(paths[i])
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, b[:min(len(b), n-len(out), 4<<20)]...)
		}
		if len(out) > 0 {
			return out
		}
		tb.Logf("no files under %s; using synthetic data", dir)
	}
	return Synthetic(n)
}

// Synthetic returns n bytes: alternating 1 MiB runs of text-like and random
// data, the same for every call.
func Synthetic(n int) []byte {
	rng := rand.New(rand.NewSource(42))
	words := []string{"backup ", "storage ", "tenant ", "chunk ", "index ", "the ", "of ", "and ", "snapshot ", "restore\n"}
	out := make([]byte, 0, n)
	for run := 0; len(out) < n; run++ {
		m := min(1<<20, n-len(out))
		if run%2 == 0 {
			for k := 0; k < m; {
				w := words[rng.Intn(len(words))]
				w = w[:min(len(w), m-k)]
				out = append(out, w...)
				k += len(w)
			}
		} else {
			b := make([]byte, m)
			rng.Read(b)
			out = append(out, b...)
		}
	}
	return out
}
