package repo_test

import (
	"context"
	"errors"
	"slices"
	"strings"
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

// inodeDrive reports plenty of bytes but a fixed number of free inodes.
type inodeDrive struct {
	repo.Drive
	avail, total int64
}

func (f inodeDrive) Free(context.Context) (int64, int64, error) { return 500 << 30, 1 << 40, nil }
func (f inodeDrive) FreeInodes(context.Context) (int64, int64, error) {
	return f.avail, f.total, nil
}

// TestWritePackReserveCountsInodes: a drive with bytes to spare but almost
// no free inodes is below its reserve too; one without a fixed number of
// inodes (total 0) never is.
func TestWritePackReserveCountsInodes(t *testing.T) {
	ctx := context.Background()
	td := newDrives(t, 6, 3, false)
	ms := td.members
	for i := range ms {
		ms[i].Drive = inodeDrive{Drive: ms[i].Drive, avail: 5 << 20, total: 10 << 20}
	}
	ms[2].Drive = inodeDrive{Drive: ms[2].Drive.(inodeDrive).Drive, avail: 100, total: 10 << 20} // 0.001% free
	ms[4].Drive = inodeDrive{Drive: ms[4].Drive.(inodeDrive).Drive, avail: 0, total: 0}          // btrfs: no fixed number
	r, err := repo.New(ms, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := r.Encode(randBytes(4, 100000))
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.WritePackWith(ctx, testContainer, packID(4), enc, nil, repo.WriteOptions{ReservePercent: 2})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(p.Drives, ms[2].ID) || !slices.Contains(p.Drives, ms[4].ID) {
		t.Errorf("shards on %v: want none on %s (out of inodes), one on %s", p.Drives, ms[2].ID, ms[4].ID)
	}
	// Two drives out of inodes: below the quorum, the write says the drives are full.
	ms[3].Drive = inodeDrive{Drive: ms[3].Drive.(inodeDrive).Drive, avail: 10, total: 10 << 20}
	r, _ = repo.New(ms, repo.Options{})
	_, err = r.WritePackWith(ctx, testContainer, packID(5), enc, nil, repo.WriteOptions{ReservePercent: 2})
	if !errors.Is(err, repo.ErrDriveFull) || !strings.Contains(err.Error(), "inodes") {
		t.Errorf("write with two drives out of inodes: %v", err)
	}
}

// TestDirDriveFreeInodes: the folder drive reports its file system's inodes.
func TestDirDriveFreeInodes(t *testing.T) {
	d, err := repo.NewDirDrive(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	avail, total, err := d.FreeInodes(context.Background())
	if err != nil || avail < 0 || avail > total && total > 0 {
		t.Errorf("FreeInodes = %d of %d, %v", avail, total, err)
	}
}
