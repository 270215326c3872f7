package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkOpenSequential reads one 64 MiB file of a snapshot sequentially
// in 128 KiB ReadAt calls (as the kernel reads through a mount) through a
// new Opener each time (a cold cache), against RestoreFrom of the same file
// (restore-to-file, the same reader). Both SetBytes the file's size.
func BenchmarkOpenSequential(b *testing.B) {
	const size = 64 << 20
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "repo")
	if _, err := Init(ctx, dir, InitOptions{}); err != nil {
		b.Fatal(err)
	}
	e, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	if _, err := e.CreateTenant(ctx, "bench", TenantOptions{}); err != nil {
		b.Fatal(err)
	}
	tn, err := e.OpenTenant(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	src := filepath.Join(b.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	if err := os.WriteFile(filepath.Join(src, "big"), itRandBytes(11, size), 0o644); err != nil {
		b.Fatal(err)
	}
	s, err := tn.Backup(ctx, []string{src}, BackupOptions{Host: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	p := src + "/big"
	b.Run("open", func(b *testing.B) {
		b.SetBytes(size)
		buf := make([]byte, 128<<10)
		for i := 0; i < b.N; i++ {
			op, err := NewOpener(tn.Reader(), OpenerOptions{})
			if err != nil {
				b.Fatal(err)
			}
			f, err := op.Open(ctx, s, p)
			if err != nil {
				b.Fatal(err)
			}
			for off := int64(0); off < size; off += int64(len(buf)) {
				if _, err := f.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
			}
			op.Close()
		}
	})
	b.Run("restore", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			target := filepath.Join(b.TempDir(), "t")
			if _, err := RestoreFrom(ctx, tn.Reader(), s, target, RestoreOptions{Includes: []string{p}}); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(target)
		}
	})
}
