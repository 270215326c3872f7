package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"coffer/engine"
	"coffer/repo/drivetest"
)

// BenchmarkS3BackupRestore is an end-to-end first backup and restore of 64 MiB
// of mixed data to six drives in three racks (k=4, m=2): "s3" puts them on
// three local versitygw servers (one per rack, two buckets each; skipped
// without versitygw), "folders" on six local folders, for comparison on the
// same machine. The reported MB/s are source bytes per second of backup plus
// restore; the split is reported as backup-MB/s and restore-MB/s.
func BenchmarkS3BackupRestore(b *testing.B) {
	for _, kind := range []string{"folders", "s3"} {
		b.Run(kind, func(b *testing.B) {
			root := b.TempDir()
			src := filepath.Join(root, "src")
			size := makeTree(b, src, 64<<20)
			var specs []engine.DriveSpec
			for r := 1; r <= 3; r++ {
				var s *drivetest.S3Server
				if kind == "s3" {
					drivetest.SetS3Credentials(b)
					s = drivetest.StartS3Server(b, false, "drive-a", "drive-b")
				}
				for _, d := range []string{"drive-a", "drive-b"} {
					p := filepath.Join(root, "drives", fmt.Sprintf("r%d-%s", r, d))
					if s != nil {
						p = s.URL(d)
					}
					specs = append(specs, engine.DriveSpec{Rack: fmt.Sprintf("r%d", r), Path: p})
				}
			}
			benchBackupRestore(b, filepath.Join(root, "repo"), src, size, specs)
		})
	}
}

func benchBackupRestore(b *testing.B, dir, src string, size int64, specs []engine.DriveSpec) {
	ctx := context.Background()
	if _, err := engine.Init(ctx, dir, engine.InitOptions{Drives: specs}); err != nil {
		b.Fatal(err)
	}
	e, err := engine.Open(dir, engine.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.SetBytes(2 * size)
	b.ResetTimer()
	var backupNs, restoreNs int64
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("t%d", i)
		if _, err := e.CreateTenant(ctx, name, engine.TenantOptions{}); err != nil {
			b.Fatal(err)
		}
		t, err := e.OpenTenant(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		start := nowNs()
		s, err := t.Backup(ctx, []string{src}, engine.BackupOptions{Host: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		mid := nowNs()
		if _, err := t.Restore(ctx, s, filepath.Join(b.TempDir(), "r"), engine.RestoreOptions{}); err != nil {
			b.Fatal(err)
		}
		backupNs += mid - start
		restoreNs += nowNs() - mid
	}
	b.ReportMetric(float64(size)*float64(b.N)/1e6/(float64(backupNs)/1e9), "backup-MB/s")
	b.ReportMetric(float64(size)*float64(b.N)/1e6/(float64(restoreNs)/1e9), "restore-MB/s")
}

func nowNs() int64 { return time.Now().UnixNano() }
