package repo_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"coffer/repo"
	"coffer/repo/drivetest"
)

// testDrives is a set of drives for a test repository: each is a Faulty wrapper,
// over a DirDrive (dirs set) or a Mem.
type testDrives struct {
	members []repo.Member
	faulty  map[repo.DriveID]*drivetest.Faulty
	dirs    map[repo.DriveID]string // root folder of each DirDrive
}

func driveID(i int) repo.DriveID { return repo.DriveID{0xd0, byte(i >> 8), byte(i)} }

// newDrives makes n drives spread round-robin over racks r1..r<racks>.
func newDrives(t testing.TB, n, racks int, onDisk bool) *testDrives {
	t.Helper()
	td := &testDrives{faulty: map[repo.DriveID]*drivetest.Faulty{}, dirs: map[repo.DriveID]string{}}
	for i := range n {
		id := driveID(i)
		var inner repo.Drive = drivetest.NewMem()
		if onDisk {
			dir := filepath.Join(t.TempDir(), fmt.Sprintf("drive%d", i))
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			d, err := repo.NewDirDrive(dir)
			if err != nil {
				t.Fatal(err)
			}
			inner = d
			td.dirs[id] = dir
		}
		f := drivetest.NewFaulty(inner)
		td.faulty[id] = f
		td.members = append(td.members, repo.Member{ID: id, Rack: fmt.Sprintf("r%d", i%racks+1), Drive: f})
	}
	return td
}

func newRepo(t testing.TB, td *testDrives, opts repo.Options) *repo.Repo {
	t.Helper()
	r, err := repo.New(td.members, opts)
	if err != nil {
		t.Fatalf("repo.New: %v", err)
	}
	return r
}

func randBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func packID(i int) repo.PackID { return repo.PackID{0xaa, byte(i >> 8), byte(i), 0x55} }

const testContainer = "0123456789abcdef0123456789abcdef"

// writePack encodes data with r's options and writes it.
func writePack(t testing.TB, r *repo.Repo, id repo.PackID, data, trailer []byte) repo.PackInfo {
	t.Helper()
	enc, err := r.Encode(data)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	p, err := r.WritePack(context.Background(), testContainer, id, enc, trailer)
	if err != nil {
		t.Fatalf("WritePack: %v", err)
	}
	return p
}

// shardPath returns the file of shard i of p on disk.
func (td *testDrives) shardPath(p repo.PackInfo, i int) string {
	return filepath.Join(td.dirs[p.Drives[i]], filepath.FromSlash(repo.ShardName(p.Container, p.ID, i)))
}

// object returns shard i's file, read through the drive under the Faulty wrapper.
func (td *testDrives) object(t testing.TB, p repo.PackInfo, i int) (repo.Drive, string, []byte) {
	t.Helper()
	ctx := context.Background()
	d := td.faulty[p.Drives[i]].Inner()
	name := repo.ShardName(p.Container, p.ID, i)
	size, err := d.Size(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	if err := d.ReadAt(ctx, name, b, 0); err != nil {
		t.Fatal(err)
	}
	return d, name, b
}

// edit replaces shard i's file by what change makes of it (on whichever drive).
func (td *testDrives) edit(t testing.TB, p repo.PackInfo, i int, change func([]byte) []byte) {
	t.Helper()
	d, name, b := td.object(t, p, i)
	if err := d.Put(context.Background(), name, change(b)); err != nil {
		t.Fatal(err)
	}
}

// remove deletes shard i's file.
func (td *testDrives) remove(t testing.TB, p repo.PackInfo, i int) {
	t.Helper()
	d := td.faulty[p.Drives[i]].Inner()
	if err := d.Delete(context.Background(), repo.ShardName(p.Container, p.ID, i)); err != nil {
		t.Fatal(err)
	}
}

// flip flips the byte at offset off of shard i's file.
func (td *testDrives) flip(t testing.TB, p repo.PackInfo, i int, off int64) {
	t.Helper()
	td.edit(t, p, i, func(b []byte) []byte { b[off] ^= 0x40; return b })
}
