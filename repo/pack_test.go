package repo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zeebo/blake3"

	"coffer/repo"
	"coffer/repo/drivetest"
)

const bs = 4096 // block size used by the tests

var smallOpts = repo.Options{K: 4, M: 2, BlockSize: bs}

type span struct{ off, n int64 }

// spans returns interesting ranges of a pack of length l with shard length s.
func spans(l, s int64) []span {
	out := []span{{0, l}, {0, 1}, {l - 1, 1}, {l / 2, 0}}
	if l > 2 {
		out = append(out, span{1, l - 2})
	}
	for i := int64(1); i*s < l; i++ { // across each shard boundary
		out = append(out, span{i*s - 1, min(2, l-(i*s-1))})
		lo := max(0, i*s-bs-7)
		out = append(out, span{lo, min(l, i*s+bs+9) - lo})
	}
	for _, b := range []int64{bs - 1, bs, bs + 1, 3*bs + 5} { // around block boundaries
		if b < l {
			out = append(out, span{b, min(100, l-b)})
		}
	}
	return out
}

func checkRead(t *testing.T, r *repo.Repo, p repo.PackInfo, data []byte, verify func([]byte) error) {
	t.Helper()
	for _, sp := range spans(p.DataLen, p.ShardLen) {
		got, err := r.ReadRange(context.Background(), p, sp.off, sp.n, verify)
		if err != nil {
			t.Fatalf("ReadRange(%d, %d): %v", sp.off, sp.n, err)
		}
		if !bytes.Equal(got, data[sp.off:sp.off+sp.n]) {
			t.Fatalf("ReadRange(%d, %d) returned wrong bytes", sp.off, sp.n)
		}
	}
}

func TestReadRangeRoundTrip(t *testing.T) {
	sizes := []int{1, bs - 1, bs, bs + 1, 4*bs + 3, 3 << 20}
	for _, onDisk := range []bool{false, true} {
		td := newDrives(t, 6, 3, onDisk)
		r := newRepo(t, td, smallOpts)
		for i, l := range sizes {
			t.Run(fmt.Sprintf("disk=%v/L=%d", onDisk, l), func(t *testing.T) {
				data := randBytes(uint64(l), l)
				p := writePack(t, r, packID(i), data, []byte("trailer"))
				if p.ShardLen != int64((l+3)/4) || p.BlockSize != bs || len(p.Drives) != 6 {
					t.Fatalf("PackInfo %+v", p)
				}
				checkRead(t, r, p, data, nil)
			})
		}
	}
}

func TestReadRangeBadArguments(t *testing.T) {
	td := newDrives(t, 6, 3, false)
	r := newRepo(t, td, smallOpts)
	p := writePack(t, r, packID(1), randBytes(1, 1000), nil)
	ctx := context.Background()
	for _, sp := range []span{{-1, 1}, {0, 1001}, {1000, 1}, {5, -1}, {1001, 0}} {
		if _, err := r.ReadRange(ctx, p, sp.off, sp.n, nil); err == nil {
			t.Errorf("ReadRange(%d, %d) succeeded", sp.off, sp.n)
		}
	}
	broken := p
	broken.Drives = broken.Drives[:5]
	if _, err := r.ReadRange(ctx, broken, 0, 1, nil); err == nil {
		t.Error("ReadRange with 5 drives for 6 shards succeeded")
	}
	broken = p
	broken.ShardLen++
	if _, err := r.ReadRange(ctx, broken, 0, 1, nil); err == nil {
		t.Error("ReadRange with a wrong shard length succeeded")
	}
}

// TestReadRangeTouchesOnlyDataShards checks that a small read goes to one data
// shard, and that its header and block are read once.
func TestReadRangeTouchesOnlyDataShards(t *testing.T) {
	td := newDrives(t, 6, 3, false)
	r := newRepo(t, td, smallOpts)
	data := randBytes(2, 8*bs)
	p := writePack(t, r, packID(2), data, nil)
	ctx := context.Background()
	before := map[repo.DriveID]int{}
	for id, f := range td.faulty {
		before[id] = f.Calls(drivetest.OpRead)
	}
	for range 3 {
		if got, err := r.ReadRange(ctx, p, 2*bs+10, 100, nil); err != nil || !bytes.Equal(got, data[2*bs+10:2*bs+110]) {
			t.Fatalf("ReadRange: %v", err)
		}
	}
	for i, id := range p.Drives {
		n := td.faulty[id].Calls(drivetest.OpRead) - before[id]
		want := 0
		if i == 1 { // S = 2 blocks, so pack offset 2*bs+10 is in data shard 1
			want = 1 + 1 // header once, the block once (then from the block cache)
		}
		if n != want {
			t.Errorf("shard %d: %d reads, want %d", i, n, want)
		}
	}
	// ReadRangeFresh goes to the drive every time.
	id := p.Drives[1]
	n0 := td.faulty[id].Calls(drivetest.OpRead)
	for range 2 {
		if got, err := r.ReadRangeFresh(ctx, p, 2*bs+10, 100, nil); err != nil || !bytes.Equal(got, data[2*bs+10:2*bs+110]) {
			t.Fatalf("ReadRangeFresh: %v", err)
		}
	}
	if n := td.faulty[id].Calls(drivetest.OpRead) - n0; n != 2 {
		t.Errorf("ReadRangeFresh: %d reads of shard 1, want 2", n)
	}
}

// damage applies one kind of damage to shard i of p.
type damage struct {
	name  string
	apply func(t *testing.T, td *testDrives, p repo.PackInfo, i int)
}

var damages = []damage{
	{"deleted", func(t *testing.T, td *testDrives, p repo.PackInfo, i int) { td.remove(t, p, i) }},
	{"flipped data", func(t *testing.T, td *testDrives, p repo.PackInfo, i int) {
		hdr := repo.ShardHeader{K: p.K, M: p.M, BlockSize: p.BlockSize, DataLen: p.DataLen, ShardLen: p.ShardLen}
		td.edit(t, p, i, func(b []byte) []byte {
			// one byte in every block, so any range read sees it
			for off := int64(0); off < p.ShardLen; off += bs {
				b[hdr.DataOffset()+off+min(7, p.ShardLen-off-1)] ^= 0x40
			}
			return b
		})
	}},
	{"flipped header", func(t *testing.T, td *testDrives, p repo.PackInfo, i int) { td.flip(t, p, i, 30) }},
	{"flipped block table", func(t *testing.T, td *testDrives, p repo.PackInfo, i int) { td.flip(t, p, i, 53) }},
	{"truncated", func(t *testing.T, td *testDrives, p repo.PackInfo, i int) {
		td.edit(t, p, i, func(b []byte) []byte { return b[:40] })
	}},
	{"corrupt reads", func(t *testing.T, td *testDrives, p repo.PackInfo, i int) {
		td.faulty[p.Drives[i]].Add(drivetest.Rule{Op: drivetest.OpRead, Name: fmt.Sprintf(".%d", i), Action: drivetest.Corrupt})
	}},
	{"failing reads", func(t *testing.T, td *testDrives, p repo.PackInfo, i int) {
		td.faulty[p.Drives[i]].Add(drivetest.Rule{Op: drivetest.OpRead, Action: drivetest.Fail})
	}},
	{"drive gone", func(t *testing.T, td *testDrives, p repo.PackInfo, i int) {
		td.faulty[p.Drives[i]].Vanish()
	}},
}

// TestReadRangeSurvivesMBadShards damages every set of one or two shards (M=2)
// in every way, on in-memory drives, and a sample of sets on folder drives.
func TestReadRangeSurvivesMBadShards(t *testing.T) {
	l := 5*bs*4 + 1234 // S = 5 blocks and a bit
	data := randBytes(3, l)
	var sets [][]int
	for a := range 6 {
		sets = append(sets, []int{a})
		for b := a + 1; b < 6; b++ {
			sets = append(sets, []int{a, b})
		}
	}
	diskSets := [][]int{{0}, {5}, {0, 1}, {2, 4}, {3, 5}}
	for _, onDisk := range []bool{false, true} {
		for _, dmg := range damages {
			for _, set := range sets {
				if onDisk && !slices.ContainsFunc(diskSets, func(s []int) bool { return slices.Equal(s, set) }) {
					continue
				}
				t.Run(fmt.Sprintf("disk=%v/%s/%v", onDisk, dmg.name, set), func(t *testing.T) {
					td := newDrives(t, 6, 3, onDisk)
					r := newRepo(t, td, smallOpts)
					p := writePack(t, r, packID(3), data, nil)
					// Warm the header cache first for half the cases, so that
					// damage after caching is caught too.
					if set[0]%2 == 0 {
						checkRead(t, r, p, data, nil)
					}
					for _, i := range set {
						dmg.apply(t, td, p, i)
					}
					checkRead(t, r, p, data, nil)
				})
			}
		}
	}
}

func TestReadRangeTooFewShards(t *testing.T) {
	data := randBytes(4, 3*bs*4)
	for _, dmg := range damages {
		t.Run(dmg.name, func(t *testing.T) {
			td := newDrives(t, 6, 3, false)
			r := newRepo(t, td, smallOpts)
			p := writePack(t, r, packID(4), data, nil)
			for _, i := range []int{0, 3, 5} {
				dmg.apply(t, td, p, i)
			}
			_, err := r.ReadRange(context.Background(), p, 0, int64(len(data)), nil)
			if !errors.Is(err, repo.ErrTooFewShards) {
				t.Fatalf("ReadRange with 3 bad shards = %v, want ErrTooFewShards", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, p.ID.String()) {
				t.Errorf("error does not name the pack: %s", msg)
			}
			for _, i := range []int{0, 3, 5} {
				if !strings.Contains(msg, p.Drives[i].String()) {
					t.Errorf("error does not name drive %s of bad shard %d: %s", p.Drives[i], i, msg)
				}
			}
		})
	}
}

func TestReadRangeFailedMembers(t *testing.T) {
	td := newDrives(t, 8, 3, false)
	r := newRepo(t, td, smallOpts)
	data := randBytes(5, 10*bs)
	p := writePack(t, r, packID(5), data, nil)
	// Mark the drives of shards 1 and 4 failed; 6 drives stay in service.
	members := r.Members()
	for i := range members {
		if members[i].ID == p.Drives[1] || members[i].ID == p.Drives[4] {
			members[i].Failed = true
			members[i].Drive = nil
		}
	}
	r2, err := repo.New(members, smallOpts)
	if err != nil {
		t.Fatal(err)
	}
	checkRead(t, r2, p, data, nil)
}

// tamper rewrites shard i's data and fixes its CRCs, so that only the hash (or the
// caller's verify) can tell.
func tamper(t *testing.T, td *testDrives, p repo.PackInfo, i int) {
	t.Helper()
	td.edit(t, p, i, func(b []byte) []byte {
		h, _, err := repo.DecodeShardHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		data := bytes.Clone(b[h.DataOffset():h.TrailerOffset()])
		for j := range data {
			data[j] ^= 0x5a
		}
		f, err := repo.EncodeShardFile(h, data, b[h.TrailerOffset():])
		if err != nil {
			t.Fatal(err)
		}
		return f
	})
}

func TestReadRangeTamperedShard(t *testing.T) {
	l := 4*3*bs + 77
	data := randBytes(6, l)
	verifyFor := func(off, n int64) func([]byte) error {
		want := blake3.Sum256(data[off : off+n])
		return func(b []byte) error {
			if blake3.Sum256(b) != want {
				return errors.New("hash mismatch")
			}
			return nil
		}
	}
	tests := []struct {
		name     string
		tampered []int
		deleted  []int
	}{
		{"one data shard", []int{0}, nil},
		{"another data shard", []int{2}, nil},
		{"two data shards", []int{1, 2}, nil},
		{"parity only", []int{4}, nil},
		{"data shard tampered, another deleted", []int{1}, []int{0}},
		{"parity tampered, data deleted", []int{4}, []int{3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			td := newDrives(t, 6, 3, true)
			r := newRepo(t, td, smallOpts)
			p := writePack(t, r, packID(6), data, nil)
			for _, i := range tc.tampered {
				tamper(t, td, p, i)
			}
			for _, i := range tc.deleted {
				damages[0].apply(t, td, p, i)
			}
			for _, sp := range spans(p.DataLen, p.ShardLen) {
				got, err := r.ReadRange(context.Background(), p, sp.off, sp.n, verifyFor(sp.off, sp.n))
				if err != nil {
					t.Fatalf("ReadRange(%d, %d): %v", sp.off, sp.n, err)
				}
				if !bytes.Equal(got, data[sp.off:sp.off+sp.n]) {
					t.Fatalf("ReadRange(%d, %d) returned wrong bytes", sp.off, sp.n)
				}
			}
			for _, i := range tc.tampered {
				if err := r.VerifyShard(context.Background(), p, i); !errors.Is(err, repo.ErrCorrupt) {
					t.Errorf("VerifyShard of tampered shard %d = %v, want ErrCorrupt", i, err)
				}
			}
		})
	}
	t.Run("verify never accepts", func(t *testing.T) {
		td := newDrives(t, 6, 3, false)
		r := newRepo(t, td, smallOpts)
		p := writePack(t, r, packID(7), data, nil)
		no := errors.New("no")
		_, err := r.ReadRange(context.Background(), p, 0, 10, func([]byte) error { return no })
		if !errors.Is(err, repo.ErrCorrupt) || !errors.Is(err, no) {
			t.Errorf("ReadRange = %v, want ErrCorrupt and verify's error", err)
		}
	})
}

func TestWritePackFailure(t *testing.T) {
	for _, act := range []drivetest.Action{drivetest.Fail, drivetest.Gone} {
		t.Run(fmt.Sprint(act), func(t *testing.T) {
			td := newDrives(t, 6, 3, false)
			r := newRepo(t, td, smallOpts)
			bad, bad2 := td.members[2].ID, td.members[4].ID
			td.faulty[bad].Add(drivetest.Rule{Op: drivetest.OpPut, Action: act})
			data := randBytes(7, 5*bs)
			enc, err := r.Encode(data)
			if err != nil {
				t.Fatal(err)
			}
			// One failing drive: the write quorum K+1 = 5 is met; the pack is
			// degraded, its lost shard recorded with a zero drive ID.
			p, err := r.WritePack(context.Background(), testContainer, packID(8), enc, nil)
			if err != nil {
				t.Fatalf("WritePack with one failing drive: %v", err)
			}
			if d := r.Degraded(p); len(d) != 1 || p.Drives[d[0]] != (repo.DriveID{}) {
				t.Fatalf("Degraded = %v, drives %v", d, p.Drives)
			}
			got, err := r.ReadRange(context.Background(), p, 0, p.DataLen, nil)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back degraded pack: %v", err)
			}
			if err := r.DeletePack(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			// Two failing drives: only 4 of 6 durable, below the quorum.
			td.faulty[bad2].Add(drivetest.Rule{Op: drivetest.OpPut, Action: act})
			_, err = r.WritePack(context.Background(), testContainer, packID(9), enc, nil)
			if err == nil || !strings.Contains(err.Error(), bad.String()) || !strings.Contains(err.Error(), bad2.String()) {
				t.Fatalf("WritePack = %v, want an error naming drives %s and %s", err, bad, bad2)
			}
			n := 0
			r.ListShards(context.Background(), func(repo.DriveID, string, repo.PackID, int, int64) error { n++; return nil })
			if n != 0 {
				t.Errorf("%d shards left behind after a failed WritePack", n)
			}
		})
	}
	t.Run("bad arguments", func(t *testing.T) {
		td := newDrives(t, 6, 3, false)
		r := newRepo(t, td, smallOpts)
		enc, _ := r.Encode([]byte("x"))
		ctx := context.Background()
		if _, err := r.WritePack(ctx, "a/b", packID(1), enc, nil); !errors.Is(err, repo.ErrInvalidName) {
			t.Errorf("container a/b: %v", err)
		}
		if _, err := r.WritePack(ctx, testContainer, packID(1), nil, nil); err == nil {
			t.Error("nil Encoded accepted")
		}
		short := *enc
		short.Shards = short.Shards[:5]
		if _, err := r.WritePack(ctx, testContainer, packID(1), &short, nil); err == nil {
			t.Error("Encoded with 5 shards accepted")
		}
		wide, _ := repo.Encode(5, 2, []byte("x"))
		if p, err := r.WritePack(ctx, testContainer, packID(1), wide, nil); err != nil || len(r.Degraded(p)) != 1 {
			t.Errorf("7 shards on 6 drives: want 6 written and one degraded, got %v, %v", p.Drives, err)
		}
		wider, _ := repo.Encode(6, 2, []byte("x"))
		if _, err := r.WritePack(ctx, testContainer, packID(2), wider, nil); !errors.Is(err, repo.ErrTooFewDrives) {
			t.Errorf("8 shards (quorum 7) on 6 drives: %v", err)
		}
	})
}

// TestWritePackSilentLoss: a put that vanishes or is truncated is not seen by
// WritePack, but reads survive and scrub finds it.
func TestWritePackSilentLoss(t *testing.T) {
	for _, tc := range []struct {
		act  drivetest.Action
		want error
	}{{drivetest.Vanish, repo.ErrNotFound}, {drivetest.Truncate, repo.ErrCorrupt}} {
		t.Run(fmt.Sprint(tc.act), func(t *testing.T) {
			td := newDrives(t, 6, 3, false)
			r := newRepo(t, td, smallOpts)
			placed, _ := r.Place(packID(9))
			td.faulty[placed[0]].Add(drivetest.Rule{Op: drivetest.OpPut, Action: tc.act})
			data := randBytes(8, 9*bs)
			p := writePack(t, r, packID(9), data, []byte("t"))
			checkRead(t, r, p, data, nil)
			if err := r.VerifyShard(context.Background(), p, 0); !errors.Is(err, tc.want) {
				t.Errorf("VerifyShard = %v, want %v", err, tc.want)
			}
			for i := 1; i < 6; i++ {
				if err := r.VerifyShard(context.Background(), p, i); err != nil {
					t.Errorf("VerifyShard(%d): %v", i, err)
				}
			}
		})
	}
}

func TestVerifyShard(t *testing.T) {
	td := newDrives(t, 6, 3, true)
	r := newRepo(t, td, repo.Options{K: 4, M: 2, BlockSize: bs})
	data := randBytes(9, 3<<20) // shards of 768 KiB: several verify steps
	p := writePack(t, r, packID(10), data, []byte("trailer"))
	ctx := context.Background()
	for i := range 6 {
		if err := r.VerifyShard(ctx, p, i); err != nil {
			t.Errorf("VerifyShard(%d): %v", i, err)
		}
	}
	damages[1].apply(t, td, p, 1)
	if err := r.VerifyShard(ctx, p, 1); !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("flipped: %v", err)
	}
	damages[0].apply(t, td, p, 2)
	if err := r.VerifyShard(ctx, p, 2); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("deleted: %v", err)
	}
	// A longer file than the header says.
	f, err := os.OpenFile(td.shardPath(p, 3), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("junk"))
	f.Close()
	if err := r.VerifyShard(ctx, p, 3); !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("appended: %v", err)
	}
	wrong := p
	wrong.Hashes = append([]repo.Hash(nil), p.Hashes...)
	wrong.Hashes[4][0] ^= 1
	if err := r.VerifyShard(ctx, wrong, 4); !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("wrong hash: %v", err)
	}
	if err := r.VerifyShard(ctx, p, 6); err == nil {
		t.Error("VerifyShard(6) of a 6-shard pack succeeded")
	}
}

func TestRewriteShard(t *testing.T) {
	td := newDrives(t, 7, 3, true)
	r := newRepo(t, td, smallOpts)
	data := randBytes(10, 7*bs+5)
	p := writePack(t, r, packID(11), data, []byte("the trailer"))
	ctx := context.Background()
	var spare repo.DriveID
	for _, m := range td.members {
		if !containsDrive(p.Drives, m.ID) {
			spare = m.ID
		}
	}
	damages[0].apply(t, td, p, 0)
	tamper(t, td, p, 2) // a source that passes CRCs but not its hash must be skipped
	// Shard 0 to the spare drive, copying the trailer.
	if err := r.RewriteShard(ctx, p, 0, spare, nil); err != nil {
		t.Fatalf("RewriteShard(0): %v", err)
	}
	p.Drives[0] = spare
	// Shard 5 in place, with the trailer given.
	damages[0].apply(t, td, p, 5)
	if err := r.RewriteShard(ctx, p, 5, p.Drives[5], []byte("the trailer")); err != nil {
		t.Fatalf("RewriteShard(5): %v", err)
	}
	for _, i := range []int{0, 5} {
		if err := r.VerifyShard(ctx, p, i); err != nil {
			t.Errorf("VerifyShard(%d) after rewrite: %v", i, err)
		}
		h, tr, err := r.ReadShardTrailer(ctx, p.Drives[i], p.Container, p.ID, i)
		if err != nil || string(tr) != "the trailer" || h.Index != i {
			t.Errorf("shard %d trailer %q, header %+v, %v", i, tr, h, err)
		}
	}
	// The tampered shard 2 is repaired in place too; then plain reads are right.
	if err := r.RewriteShard(ctx, p, 2, p.Drives[2], nil); err != nil {
		t.Fatalf("RewriteShard(2): %v", err)
	}
	checkRead(t, r, p, data, nil)
	// Losing three shards leaves too few to rebuild a fourth.
	for _, i := range []int{1, 3, 4} {
		damages[0].apply(t, td, p, i)
	}
	if err := r.RewriteShard(ctx, p, 1, p.Drives[1], nil); !errors.Is(err, repo.ErrTooFewShards) {
		t.Errorf("RewriteShard with too few good shards = %v", err)
	}
	if err := r.RewriteShard(ctx, p, 1, repo.DriveID{0xff}, nil); err == nil {
		t.Error("RewriteShard to an unknown drive succeeded")
	}
}

func containsDrive(ds []repo.DriveID, d repo.DriveID) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}

func TestTrailers(t *testing.T) {
	td := newDrives(t, 6, 3, true)
	r := newRepo(t, td, smallOpts)
	p := writePack(t, r, packID(12), randBytes(11, 3*bs), []byte("sealed pack header"))
	ctx := context.Background()
	tr, err := r.ReadTrailer(ctx, p)
	if err != nil || string(tr) != "sealed pack header" {
		t.Fatalf("ReadTrailer = %q, %v", tr, err)
	}
	for i := range 6 {
		h, tr, err := r.ReadShardTrailer(ctx, p.Drives[i], p.Container, p.ID, i)
		if err != nil {
			t.Fatalf("ReadShardTrailer(%d): %v", i, err)
		}
		want := repo.ShardHeader{Index: i, K: 4, M: 2, Pack: p.ID, BlockSize: bs, DataLen: p.DataLen, ShardLen: p.ShardLen, TrailerLen: len(tr)}
		if h != want || string(tr) != "sealed pack header" {
			t.Errorf("shard %d: %+v %q", i, h, tr)
		}
	}
	// Shard 0 gone, shard 1's trailer damaged: ReadTrailerVerified skips both.
	damages[0].apply(t, td, p, 0)
	hdr := repo.ShardHeader{K: 4, M: 2, BlockSize: bs, DataLen: p.DataLen, ShardLen: p.ShardLen}
	td.flip(t, p, 1, hdr.TrailerOffset()+2)
	tr, err = r.ReadTrailerVerified(ctx, p, func(b []byte) error {
		if string(b) != "sealed pack header" {
			return errors.New("bad seal")
		}
		return nil
	})
	if err != nil || string(tr) != "sealed pack header" {
		t.Errorf("ReadTrailerVerified = %q, %v", tr, err)
	}
	if _, _, err := r.ReadShardTrailer(ctx, p.Drives[0], p.Container, p.ID, 0); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("ReadShardTrailer of a deleted shard = %v", err)
	}
	// A shard file under the wrong index is refused.
	src, _ := os.ReadFile(td.shardPath(p, 2))
	if err := td.faulty[p.Drives[2]].Put(ctx, repo.ShardName(p.Container, p.ID, 3), src); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.ReadShardTrailer(ctx, p.Drives[2], p.Container, p.ID, 3); !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("shard 2 stored as shard 3: %v", err)
	}
}

func TestListAndDeletePacks(t *testing.T) {
	td := newDrives(t, 6, 3, true)
	r := newRepo(t, td, smallOpts)
	ctx := context.Background()
	p1 := writePack(t, r, packID(13), randBytes(12, 100), []byte("a"))
	enc, _ := r.Encode(randBytes(13, 5000))
	p2, err := r.WritePack(ctx, "ffff0000ffff0000ffff0000ffff0000", packID(14), enc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PutRecord(ctx, "t/"+testContainer+"/s/01", []byte("snapshot")); err != nil {
		t.Fatal(err)
	}
	type key struct {
		d repo.DriveID
		c string
		p repo.PackID
		i int
	}
	got := map[key]int64{}
	err = r.ListShards(ctx, func(d repo.DriveID, c string, id repo.PackID, i int, size int64) error {
		got[key{d, c, id, i}] = size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 12 {
		t.Errorf("ListShards found %d shards, want 12", len(got))
	}
	for _, p := range []repo.PackInfo{p1, p2} {
		for i, d := range p.Drives {
			fi, err := os.Stat(td.shardPath(p, i))
			if err != nil || got[key{d, p.Container, p.ID, i}] != fi.Size() {
				t.Errorf("pack %s shard %d: listed size %d", p.ID, i, got[key{d, p.Container, p.ID, i}])
			}
		}
	}
	stop := errors.New("stop")
	if err := r.ListShards(ctx, func(repo.DriveID, string, repo.PackID, int, int64) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("ListShards with failing fn = %v", err)
	}
	td.faulty[td.members[0].ID].Vanish()
	n := 0
	err = r.ListShards(ctx, func(repo.DriveID, string, repo.PackID, int, int64) error { n++; return nil })
	if err == nil || !strings.Contains(err.Error(), td.members[0].ID.String()) || n != 10 {
		t.Errorf("ListShards with a vanished drive: %d shards, %v", n, err)
	}
	td.faulty[td.members[0].ID].Revive()
	if err := r.DeletePack(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if err := r.DeletePack(ctx, p1); err != nil {
		t.Errorf("second DeletePack: %v", err)
	}
	n = 0
	r.ListShards(ctx, func(repo.DriveID, string, repo.PackID, int, int64) error { n++; return nil })
	if n != 6 {
		t.Errorf("%d shards after deleting one of two packs, want 6", n)
	}
	if _, err := r.ReadRange(ctx, p1, 0, 1, nil); !errors.Is(err, repo.ErrTooFewShards) {
		t.Errorf("ReadRange of a deleted pack = %v", err)
	}
}

func TestShardNames(t *testing.T) {
	id, _ := repo.ParsePackID("00112233445566778899aabbccddeeff")
	name := repo.ShardName("c0ffee", id, 12)
	if name != "t/c0ffee/p/00/00112233445566778899aabbccddeeff.12" {
		t.Errorf("ShardName = %s", name)
	}
	c, gotID, i, ok := repo.ParseShardName(name)
	if !ok || c != "c0ffee" || gotID != id || i != 12 {
		t.Errorf("ParseShardName = %s %s %d %v", c, gotID, i, ok)
	}
	for _, bad := range []string{
		"t/c/p/01/00112233445566778899aabbccddeeff.1", // wrong fan-out folder
		"t/c/p/00/00112233445566778899aabbccddeeff",
		"t/c/p/00/00112233445566778899aabbccddeeff.01",
		"t/c/p/00/00112233445566778899aabbccddeeff.255",
		"t/c/p/00/00112233445566778899aabbccddeeff.-1",
		"t/c/p/00/00112233445566778899AABBCCDDEEFF.1",
		"t/c/s/00/00112233445566778899aabbccddeeff.1",
		"t/c/p/00/x/00112233445566778899aabbccddeeff.1",
		"r/c/p/00/00112233445566778899aabbccddeeff.1",
	} {
		if _, _, _, ok := repo.ParseShardName(bad); ok {
			t.Errorf("ParseShardName(%s) accepted", bad)
		}
	}
}

func TestReadRangeConcurrent(t *testing.T) {
	td := newDrives(t, 6, 3, false)
	r := newRepo(t, td, smallOpts)
	data := randBytes(14, 24*bs+11)
	p := writePack(t, r, packID(15), data, nil)
	td.faulty[p.Drives[1]].Add(drivetest.Rule{Op: drivetest.OpRead, Skip: 3, Action: drivetest.Corrupt})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for j := range 20 {
				off := int64((g*7919 + j*104729) % (len(data) - 5000))
				got, err := r.ReadRange(context.Background(), p, off, 5000, nil)
				if err != nil || !bytes.Equal(got, data[off:off+5000]) {
					errs <- fmt.Errorf("goroutine %d read %d at %d: %v", g, j, off, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestReadRangeCancelled(t *testing.T) {
	td := newDrives(t, 6, 3, false)
	r := newRepo(t, td, smallOpts)
	p := writePack(t, r, packID(16), randBytes(15, 4*bs), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.ReadRange(ctx, p, 0, 100, nil); !errors.Is(err, context.Canceled) || errors.Is(err, repo.ErrTooFewShards) {
		t.Errorf("ReadRange with a cancelled context = %v, want context.Canceled only", err)
	}
	enc, _ := r.Encode([]byte("x"))
	if _, err := r.WritePack(ctx, testContainer, packID(17), enc, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("WritePack with a cancelled context = %v", err)
	}
}
