package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"coffer/repo"
)

// itAncestorTimes returns the mtime and ctime of every folder above p: they
// are recorded in the snapshot's upper trees, so when another process
// changes one of them (a new entry in /tmp), a backup of unchanged data
// legitimately stores a few new tree blobs.
func itAncestorTimes(t *testing.T, p string) []int64 {
	t.Helper()
	var out []int64
	for d := filepath.Dir(p); ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil {
			t.Fatal(err)
		}
		out = append(out, st.Mtim.Nano(), st.Ctim.Nano())
		if d == "/" {
			return out
		}
	}
}

// TestITDedup checks deduplication within a tenant and its absence across
// tenants.
func TestITDedup(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	a := itTenant(t, e, "tenant-a")
	base := t.TempDir()
	src := filepath.Join(base, "src")
	entries := itModestTree()
	itBuildTree(t, src, entries)
	var srcBytes int64
	for _, en := range entries {
		if en.kind == 'f' {
			srcBytes += int64(max(en.size, len(en.data)))
		}
	}

	ancestors := itAncestorTimes(t, src)
	s1 := itBackup(t, a, src)
	idx1 := itIndex(t, a)
	if idx1.dataRaw != srcBytes {
		t.Fatalf("first backup stored %d bytes of data blobs, want the %d source bytes", idx1.dataRaw, srcBytes)
	}
	files1 := itDriveFiles(t, dir)

	t.Run("same tree again", func(t *testing.T) {
		s2 := itBackup(t, a, src)
		idx2 := itIndex(t, a)
		if idx2.dataBlobs != idx1.dataBlobs || idx2.dataRaw != idx1.dataRaw {
			t.Errorf("data blobs %d (%d bytes) after the second backup, %d (%d bytes) before",
				idx2.dataBlobs, idx2.dataRaw, idx1.dataBlobs, idx1.dataRaw)
		}
		if slices.Equal(ancestors, itAncestorTimes(t, src)) {
			if s2.Stats.BlobsAdded != 0 || s2.Stats.BytesAdded != 0 {
				t.Errorf("second backup of an unchanged tree: BlobsAdded %d, BytesAdded %d; want 0, 0", s2.Stats.BlobsAdded, s2.Stats.BytesAdded)
			}
			if s2.Tree != s1.Tree {
				t.Errorf("unchanged tree got a new root tree %s, was %s", s2.Tree, s1.Tree)
			}
		} else {
			// Another process touched a folder above src: only the trees of
			// those folders may be new.
			depth := strings.Count(src, "/")
			t.Logf("a folder above %s changed during the test; allowing up to %d new tree blobs", src, depth)
			if s2.Stats.BlobsAdded > int64(depth) || idx2.treeBlobs-idx1.treeBlobs > depth {
				t.Errorf("second backup added %d blobs (%d trees) for an unchanged tree", s2.Stats.BlobsAdded, idx2.treeBlobs-idx1.treeBlobs)
			}
		}
		// On the drives: only the snapshot record and tree packs are new.
		files2 := itDriveFiles(t, dir)
		var grown int64
		for p, size := range files2 {
			old, existed := files1[p]
			if existed {
				if old != size {
					t.Errorf("%s changed size from %d to %d", p, old, size)
				}
				continue
			}
			grown += size
			if strings.Contains(filepath.ToSlash(p), "/r/audit") {
				continue // the backup's audit entry
			}
			if !itIsSnapshotRecordOrTreeShard(t, a, p, idx2) {
				t.Errorf("second backup wrote %s, which is neither a snapshot record nor a shard of a tree pack", p)
			}
		}
		if grown == 0 || grown > 256<<10 {
			t.Errorf("drives grew by %d bytes for a backup of an unchanged tree of %d bytes", grown, srcBytes)
		}
	})

	t.Run("copy at another path", func(t *testing.T) {
		cp := filepath.Join(base, "copy")
		itBuildTree(t, cp, entries) // same content, new inodes, names and path
		before := itIndex(t, a)
		s3 := itBackup(t, a, cp)
		after := itIndex(t, a)
		if after.dataBlobs != before.dataBlobs || after.dataRaw != before.dataRaw {
			t.Errorf("backing up a copy added %d data blobs (%d bytes); want none",
				after.dataBlobs-before.dataBlobs, after.dataRaw-before.dataRaw)
		}
		if s3.Stats.Bytes != srcBytes {
			t.Errorf("copy: %d bytes processed, want %d (every file read)", s3.Stats.Bytes, srcBytes)
		}
		if s3.Stats.BytesAdded > 64<<10 {
			t.Errorf("copy: %d new plaintext bytes; only a few trees are new", s3.Stats.BytesAdded)
		}
		itCompareTrees(t, cp, itRestore(t, a, s3, cp))
	})

	t.Run("no dedup across tenants", func(t *testing.T) {
		b := itTenant(t, e, "tenant-b")
		sb := itBackup(t, b, src)
		ib := itIndex(t, b)
		ia := itIndex(t, a)
		if ib.dataRaw != ia.dataRaw || ib.dataRaw != srcBytes {
			t.Errorf("tenant B stored %d bytes of data blobs, tenant A %d; both must store all %d source bytes", ib.dataRaw, ia.dataRaw, srcBytes)
		}
		if sb.Stats.BytesAdded < srcBytes {
			t.Errorf("tenant B's snapshot added %d bytes, less than the %d source bytes", sb.Stats.BytesAdded, srcBytes)
		}
		for id := range ib.packType {
			if _, ok := ia.packType[id]; ok {
				t.Errorf("pack %s is indexed for both tenants", id)
			}
		}
		itCompareTrees(t, src, itRestore(t, b, sb, src))
	})
	_ = ctx
}

// itIsSnapshotRecordOrTreeShard reports whether the drive file p is a
// snapshot record of tn or a shard of one of tn's tree packs.
func itIsSnapshotRecordOrTreeShard(t *testing.T, tn *Tenant, p string, idx itIndexStats) bool {
	t.Helper()
	i := strings.Index(p, "/t/")
	if i < 0 {
		return false
	}
	rel := p[i+1:]
	if strings.HasPrefix(rel, "t/"+tn.ID()+"/s/") {
		return true
	}
	c, id, _, ok := repo.ParseShardName(rel)
	return ok && c == tn.ID() && idx.packType[id] == TreeBlob
}

// TestITTenantIsolation checks that a tenant sees nothing of another one:
// not its snapshots by ID or prefix, not in listings, and that each tenant's
// files on the drives live only in its own container. Names and contents
// never reach the drives or the index in plaintext.
func TestITTenantIsolation(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	alice := itTenant(t, e, "alice-corp")
	bob := itTenant(t, e, "bob-corp")

	marker := "PLAINTEXT-MARKER-7f3a9c"
	srcA := filepath.Join(t.TempDir(), "secret-project-name-e41d")
	itBuildTree(t, srcA, []itEntry{
		{path: "confidential-file-name-b52c.txt", kind: 'f', data: strings.Repeat(marker+" ", 10)},
		{path: "data.bin", kind: 'f', size: 1500 << 10},
	})
	srcB := filepath.Join(t.TempDir(), "src-b")
	itBuildTree(t, srcB, []itEntry{{path: "b.bin", kind: 'f', size: 800 << 10}})
	sa := itBackup(t, alice, srcA)
	sb := itBackup(t, bob, srcB)

	t.Run("snapshots", func(t *testing.T) {
		for _, ref := range []string{sa.ID, sa.ID[:8], sa.ID[:12]} {
			if _, err := bob.FindSnapshot(ctx, ref); !errors.Is(err, ErrSnapshotNotFound) {
				t.Errorf("bob.FindSnapshot(alice's %q) = %v, want ErrSnapshotNotFound", ref, err)
			}
		}
		if s, err := bob.FindSnapshot(ctx, "latest"); err != nil || s.ID != sb.ID {
			t.Errorf("bob's latest = %v, %v; want his own %s", s, err, sb.ID)
		}
		for _, tc := range []struct {
			tn   *Tenant
			want string
		}{{alice, sa.ID}, {bob, sb.ID}} {
			all, err := tc.tn.Snapshots(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 1 || all[0].ID != tc.want {
				var ids []string
				for _, s := range all {
					ids = append(ids, s.ID)
				}
				t.Errorf("%s lists snapshots %q, want only %s", tc.tn.Name(), ids, tc.want)
			}
		}
		// Bob cannot read Alice's snapshot even when handed its record.
		if _, err := bob.Restore(ctx, sa, t.TempDir(), RestoreOptions{}); err == nil {
			t.Error("bob restored alice's snapshot")
		}
	})

	t.Run("containers on the drives", func(t *testing.T) {
		ia, ib := itIndex(t, alice), itIndex(t, bob)
		owners := map[string]itIndexStats{alice.ID(): ia, bob.ID(): ib}
		shards := itShards(t, dir)
		if len(shards) == 0 {
			t.Fatal("no shards on the drives")
		}
		for _, s := range shards {
			idx, ok := owners[s.container]
			if !ok {
				t.Errorf("%s: container %s is no tenant's", s.path, s.container)
				continue
			}
			if _, ok := idx.packType[s.pack]; !ok {
				t.Errorf("%s: pack %s is not indexed for the tenant whose container holds it", s.path, s.pack)
			}
			hdr := itReadShard(t, s.path).h
			if hdr.Pack != s.pack {
				t.Errorf("%s: header names pack %s", s.path, hdr.Pack)
			}
		}
		for p := range itDriveFiles(t, dir) {
			for _, name := range []string{"alice", "bob"} {
				if strings.Contains(p, name) {
					t.Errorf("drive path %s contains a tenant name", p)
				}
			}
			if i := strings.Index(p, "/t/"); i >= 0 {
				c, _, _ := strings.Cut(p[i+3:], "/")
				if c != alice.ID() && c != bob.ID() {
					t.Errorf("drive file %s is in container %s, which is no tenant's", p, c)
				}
			}
		}
	})

	t.Run("no plaintext at rest", func(t *testing.T) {
		secrets := [][]byte{
			[]byte(marker), []byte("confidential-file-name-b52c"), []byte("secret-project-name-e41d"),
			[]byte("alice-corp"), []byte("bob-corp"), []byte("it-host"),
		}
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, s := range secrets {
				if bytes.Contains(b, s) {
					t.Errorf("%s holds %q in plaintext", p, s)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
