package repo_test

import (
	"context"
	"errors"
	"testing"

	"coffer/repo"
)

// fullDrive reports a fixed amount of free space.
type fullDrive struct {
	repo.Drive
	avail, total int64
}

func (f fullDrive) Free(context.Context) (int64, int64, error) { return f.avail, f.total, nil }

func TestWritePackReserve(t *testing.T) {
	ctx := context.Background()
	td := newDrives(t, 6, 3, false)
	ms := td.members
	// Two drives are nearly full: 1% free of 1 TB.
	for _, i := range []int{1, 3} {
		ms[i].Drive = fullDrive{Drive: ms[i].Drive, avail: 10 << 30, total: 1 << 40}
	}
	for _, i := range []int{0, 2, 4, 5} {
		ms[i].Drive = fullDrive{Drive: ms[i].Drive, avail: 500 << 30, total: 1 << 40}
	}
	r, err := repo.New(ms, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := r.Encode(randBytes(3, 100000))
	if err != nil {
		t.Fatal(err)
	}
	// Without a reserve (repair, prune) every drive is used.
	p, err := r.WritePack(ctx, testContainer, packID(1), enc, nil)
	if err != nil || len(r.Degraded(p)) != 0 {
		t.Fatalf("write without reserve: %v, degraded %v", err, r.Degraded(p))
	}
	// With a 2% reserve the two full drives are skipped: 4 shards < quorum 5.
	_, err = r.WritePackWith(ctx, testContainer, packID(2), enc, nil, repo.WriteOptions{ReservePercent: 2})
	if !errors.Is(err, repo.ErrDriveFull) {
		t.Fatalf("write with two full drives: %v", err)
	}
	// With one full drive the write is degraded but succeeds, and skips it.
	ms[3].Drive = fullDrive{Drive: ms[3].Drive.(fullDrive).Drive, avail: 500 << 30, total: 1 << 40}
	r, _ = repo.New(ms, repo.Options{})
	p, err = r.WritePackWith(ctx, testContainer, packID(3), enc, nil, repo.WriteOptions{ReservePercent: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range p.Drives {
		if d == ms[1].ID {
			t.Fatal("a shard went to the drive below its reserve")
		}
	}
}
