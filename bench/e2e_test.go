package bench

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"coffer/engine"
)

// makeTree writes a mixed data set: text-like compressible files and random
// incompressible ones, total about size bytes.
func makeTree(b *testing.B, dir string, size int) int64 {
	b.Helper()
	rng := rand.New(rand.NewSource(1))
	words := []string{"backup ", "storage ", "tenant ", "coffer ", "pack ", "shard ", "drive ", "rack ", "\n"}
	var total int64
	for i := 0; total < int64(size); i++ {
		n := 4<<10 + rng.Intn(2<<20)
		buf := make([]byte, 0, n)
		if i%2 == 0 {
			for len(buf) < n {
				buf = append(buf, words[rng.Intn(len(words))]...)
			}
		} else {
			buf = buf[:n]
			rng.Read(buf)
		}
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%7), fmt.Sprintf("f%04d", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(len(buf))
	}
	return total
}

// treeSize is the number of bytes in the regular files below dir.
func treeSize(b *testing.B, dir string) int64 {
	b.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// setup makes the source tree (COFFER_BENCH_DATA if set, else 64 MiB made by
// makeTree) and a repository in a temporary folder (under $TMPDIR).
func setup(b *testing.B) (src string, size int64, open func() (*engine.Engine, *engine.Tenant)) {
	b.Helper()
	ctx := context.Background()
	root := b.TempDir()
	if src = os.Getenv("COFFER_BENCH_DATA"); src != "" {
		// The shared data set (../shared/bench/mkdata.py), read where it is:
		// on tmpfs or in the page cache the backup is not held by a disk.
		size = treeSize(b, src)
	} else {
		src = filepath.Join(root, "src")
		size = makeTree(b, src, 64<<20)
	}
	repo := filepath.Join(root, "repo")
	if _, err := engine.Init(ctx, repo, engine.InitOptions{}); err != nil {
		b.Fatal(err)
	}
	open = func() (*engine.Engine, *engine.Tenant) {
		e, err := engine.Open(repo, engine.Options{})
		if err != nil {
			b.Fatal(err)
		}
		t, err := e.OpenTenant(ctx, "bench")
		if err != nil {
			if _, err := e.CreateTenant(ctx, "bench", engine.TenantOptions{}); err != nil {
				b.Fatal(err)
			}
			if t, err = e.OpenTenant(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		}
		return e, t
	}
	return src, size, open
}

// BenchmarkBackup is a first backup of 64 MiB of mixed data (or of
// $COFFER_BENCH_DATA) into a fresh tenant each iteration (so nothing deduplicates against earlier runs).
func BenchmarkBackup(b *testing.B) {
	src, size, open := setup(b)
	e, _ := open()
	defer e.Close()
	ctx := context.Background()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("t%d", i)
		if _, err := e.CreateTenant(ctx, name, engine.TenantOptions{}); err != nil {
			b.Fatal(err)
		}
		t, err := e.OpenTenant(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := t.Backup(ctx, []string{src}, engine.BackupOptions{Host: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIncrementalBackup backs up an unchanged tree again.
func BenchmarkIncrementalBackup(b *testing.B) {
	src, size, open := setup(b)
	e, t := open()
	defer e.Close()
	ctx := context.Background()
	if _, err := t.Backup(ctx, []string{src}, engine.BackupOptions{Host: "bench"}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := t.Backup(ctx, []string{src}, engine.BackupOptions{Host: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestore restores 64 MiB of mixed data.
func BenchmarkRestore(b *testing.B) {
	src, size, open := setup(b)
	e, t := open()
	defer e.Close()
	ctx := context.Background()
	s, err := t.Backup(ctx, []string{src}, engine.BackupOptions{Host: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := filepath.Join(b.TempDir(), "r")
		if _, err := t.Restore(ctx, s, dst, engine.RestoreOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
