package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// itRichTree has every kind of entry the engine must restore byte for byte.
func itRichTree() []itEntry {
	return []itEntry{
		{path: "empty.txt", kind: 'f'},
		{path: "emptydir", kind: 'd'},
		{path: "small.txt", kind: 'f', data: "hello, coffer\n"},
		{path: "a/b/c/d/deep.txt", kind: 'f', data: "deep\n"},
		{path: "a/b/sibling.bin", kind: 'f', size: 70000},
		{path: "with space.txt", kind: 'f', data: "spaces in the name\n"},
		{path: "ünïcødé ✓ 文件.txt", kind: 'f', data: "unicode name\n"},
		{path: "bad\xff\xfename", kind: 'f', data: "a name that is not UTF-8\n"},
		{path: "dir \xc3\x28 bad", kind: 'd'},
		{path: "dir \xc3\x28 bad/inner", kind: 'f', data: "inside a folder with an invalid UTF-8 name\n"},
		// Larger than the largest chunk (8 MiB): at least two chunks, several packs.
		{path: "big.bin", kind: 'f', size: 9<<20 + 12345},
		{path: "medium.bin", kind: 'f', size: 600 << 10},
		{path: "sparse.img", kind: 's', size: 20 << 20, data: "a few bytes in a sea of holes"},
		{path: "links/rel", kind: 'l', target: "../small.txt"},
		{path: "links/abs", kind: 'l', target: "/etc/hostname"},
		{path: "links/dangling", kind: 'l', target: "does/not/exist"},
		{path: "links/nonutf8", kind: 'l', target: "\xff\xfe target \x80"},
		{path: "links/owned", kind: 'l', target: "small.txt", uid: 1234, gid: 4321},
		{path: "hl/first", kind: 'f', data: "one inode, three names\n"},
		{path: "hl/second", kind: 'h', target: "hl/first"},
		{path: "hl/sub/third", kind: 'h', target: "hl/first"},
		{path: "hl/other", kind: 'f', data: "a separate inode\n"},
		{path: "fifo", kind: 'p', mode: 0o640},
		{path: "xattr.txt", kind: 'f', data: "with attributes\n",
			xattrs: map[string]string{"user.comment": "hello", "user.binary": "\x00\x01\xff"}},
		{path: "xattrdir", kind: 'd', xattrs: map[string]string{"user.dir": "folder attribute"}},
		{path: "perms/run.sh", kind: 'f', data: "#!/bin/sh\necho hi\n", mode: 0o755},
		{path: "perms/secret", kind: 'f', data: "top secret\n", mode: 0o600},
		{path: "perms/setuid", kind: 'f', data: "setuid\n", mode: 0o4755},
		{path: "perms/setgid-dir", kind: 'd', mode: 0o2775},
		{path: "perms/setgid-dir/file", kind: 'f', data: "in a setgid folder\n", mode: 0o640},
		{path: "perms/sticky", kind: 'd', mode: 0o1777},
		{path: "perms/private", kind: 'd', mode: 0o700},
		{path: "owned.txt", kind: 'f', data: "owned by 1234\n", uid: 1234, gid: 5678, mode: 0o640},
	}
}

// TestITRoundTripRichTree backs up a tree with every kind of entry and
// restores it: names, types, content, modes, owners, times, symlink
// targets, xattrs, hard links and holes must all come back.
func TestITRoundTripRichTree(t *testing.T) {
	if !isRootForTest() {
		t.Skip("ownership checks need root")
	}
	src := filepath.Join(t.TempDir(), "src")
	if !itBuildTree(t, src, itRichTree()) {
		t.Log("file system refuses user.* xattrs: xattrs are not checked")
	}
	// The setup must really have made what the test claims to check.
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(src, "sparse.img"), &st); err != nil {
		t.Fatal(err)
	}
	srcSparse := st.Blocks*512 < st.Size/4
	if !srcSparse {
		t.Log("file system did not keep sparse.img sparse: hole preservation is not checked")
	}
	if err := unix.Lstat(filepath.Join(src, "owned.txt"), &st); err != nil || st.Uid != 1234 {
		t.Fatalf("chown in setup did not take: uid %d, %v", st.Uid, err)
	}

	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	snap := itBackup(t, tn, src)
	if snap.Stats.FilesFailed != 0 {
		t.Errorf("FilesFailed = %d, want 0", snap.Stats.FilesFailed)
	}
	restored := itRestore(t, tn, snap, src)
	itCompareTrees(t, src, restored)

	t.Run("sparse file stays sparse", func(t *testing.T) {
		p := filepath.Join(restored, "sparse.img")
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != 20<<20 {
			t.Fatalf("size %d, want %d", st.Size, 20<<20)
		}
		if srcSparse && st.Blocks*512 > 1<<20 {
			t.Errorf("restored sparse file has %d bytes allocated for %d bytes: holes were written", st.Blocks*512, st.Size)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		want := "a few bytes in a sea of holes"
		if got := string(b[sparseAt : sparseAt+len(want)]); got != want {
			t.Errorf("bytes at %d: %q, want %q", sparseAt, got, want)
		}
	})
	t.Run("hard links share one inode", func(t *testing.T) {
		var a, b, c, o unix.Stat_t
		for p, s := range map[string]*unix.Stat_t{"hl/first": &a, "hl/second": &b, "hl/sub/third": &c, "hl/other": &o} {
			if err := unix.Lstat(filepath.Join(restored, p), s); err != nil {
				t.Fatal(err)
			}
		}
		if a.Ino != b.Ino || a.Ino != c.Ino || a.Nlink != 3 {
			t.Errorf("inodes %d %d %d with %d links, want one inode with 3 links", a.Ino, b.Ino, c.Ino, a.Nlink)
		}
		if o.Ino == a.Ino {
			t.Error("a separate file was restored as a hard link")
		}
	})
	t.Run("owner 1234 restored", func(t *testing.T) {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(restored, "owned.txt"), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("owner %d:%d, want 1234:5678", st.Uid, st.Gid)
		}
	})
}

func isRootForTest() bool { return os.Geteuid() == 0 }

// TestITIncremental checks that an unchanged file is not read again, that a
// changed one is, and that every snapshot restores its own version.
func TestITIncremental(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	entries := []itEntry{
		{path: "a.txt", kind: 'f', data: "version 1 of a\n"},
		{path: "b.bin", kind: 'f', size: 700 << 10},
		{path: "sub/c.bin", kind: 'f', size: 1200 << 10},
		{path: "sub/d.txt", kind: 'f', data: "d\n"},
		{path: "sub/deeper/e.txt", kind: 'f'},
	}
	itBuildTree(t, src, entries)
	const files = 5
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "acme")

	s1 := itBackup(t, tn, src)
	if s1.Stats.Files != files || s1.Stats.FilesUnchanged != 0 {
		t.Fatalf("first backup: Files %d, FilesUnchanged %d; want %d, 0", s1.Stats.Files, s1.Stats.FilesUnchanged, files)
	}
	s2 := itBackup(t, tn, src)
	if s2.Parent != s1.ID {
		t.Errorf("second backup's parent %q, want %q", s2.Parent, s1.ID)
	}
	if s2.Stats.Files != files || s2.Stats.FilesUnchanged != files {
		t.Errorf("unchanged tree: Files %d, FilesUnchanged %d; want %d, %d", s2.Stats.Files, s2.Stats.FilesUnchanged, files, files)
	}

	// Change one file's content and mtime.
	a := filepath.Join(src, "a.txt")
	if err := os.WriteFile(a, []byte("version 2 of a, longer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	newTime := time.Date(2022, 1, 2, 3, 4, 5, 987654321, time.UTC)
	if err := os.Chtimes(a, newTime, newTime); err != nil {
		t.Fatal(err)
	}
	s3 := itBackup(t, tn, src)
	if s3.Stats.Files != files || s3.Stats.FilesUnchanged != files-1 {
		t.Errorf("one file changed: Files %d, FilesUnchanged %d; want %d, %d", s3.Stats.Files, s3.Stats.FilesUnchanged, files, files-1)
	}
	if s3.Stats.BlobsAdded < 1 {
		t.Errorf("changed file added %d blobs, want at least its new content", s3.Stats.BlobsAdded)
	}

	for _, tc := range []struct {
		snap *Snapshot
		want string
	}{
		{s1, "version 1 of a\n"},
		{s2, "version 1 of a\n"},
		{s3, "version 2 of a, longer\n"},
	} {
		var buf bytes.Buffer
		if err := tn.Dump(ctx, tc.snap, filepath.Join(src, "a.txt"), &buf); err != nil {
			t.Fatalf("Dump from %s: %v", tc.snap.ID[:8], err)
		}
		if buf.String() != tc.want {
			t.Errorf("snapshot %s: a.txt = %q, want %q", tc.snap.ID[:8], buf.String(), tc.want)
		}
	}
	// The new snapshot restores the tree as it is now, in full.
	itCompareTrees(t, src, itRestore(t, tn, s3, src))
	// The old one still restores the old content.
	old := itRestore(t, tn, s1, src)
	if b, err := os.ReadFile(filepath.Join(old, "a.txt")); err != nil || string(b) != "version 1 of a\n" {
		t.Errorf("old snapshot restores a.txt as %q (%v), want the old content", b, err)
	}
	if err := itSameContent(filepath.Join(src, "sub/c.bin"), filepath.Join(old, "sub/c.bin")); err != nil {
		t.Errorf("old snapshot, sub/c.bin: %v", err)
	}
}

// TestITStreamDumpListFind covers BackupStream, Dump, List and FindSnapshot.
func TestITStreamDumpListFind(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "acme")

	stdin := itRandBytes(42, 2<<20+333)
	s1, err := tn.BackupStream(ctx, bytes.NewReader(stdin), "db-dump.sql", BackupOptions{Host: "it-host"})
	if err != nil {
		t.Fatalf("BackupStream: %v", err)
	}
	src := filepath.Join(t.TempDir(), "src")
	itBuildTree(t, src, []itEntry{
		{path: "top.txt", kind: 'f', data: "top\n"},
		{path: "dir/inner.txt", kind: 'f', data: "inner\n"},
		{path: "dir/sub/leaf.bin", kind: 'f', size: 1000},
		{path: "dir/link", kind: 'l', target: "inner.txt"},
		{path: "dir/hard", kind: 'h', target: "dir/inner.txt"},
		{path: "empty", kind: 'd'},
	})
	time.Sleep(2 * time.Millisecond) // distinct snapshot times
	s2 := itBackup(t, tn, src)

	t.Run("stream round trip via Dump", func(t *testing.T) {
		for _, p := range []string{"/db-dump.sql", "db-dump.sql"} {
			var buf bytes.Buffer
			if err := tn.Dump(ctx, s1, p, &buf); err != nil {
				t.Fatalf("Dump %q: %v", p, err)
			}
			if !bytes.Equal(buf.Bytes(), stdin) {
				t.Errorf("Dump %q: %d bytes that differ from the %d bytes backed up", p, buf.Len(), len(stdin))
			}
		}
	})
	t.Run("Dump", func(t *testing.T) {
		for _, tc := range []struct {
			name, path string
			want       string
			err        error
		}{
			{"file", src + "/dir/inner.txt", "inner\n", nil},
			{"hard link", src + "/dir/hard", "inner\n", nil},
			{"folder", src + "/dir", "", ErrInvalid},
			{"root", "/", "", ErrInvalid},
			{"missing", src + "/nope", "", ErrPathNotFound},
			{"below a file", src + "/top.txt/x", "", ErrPathNotFound},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var buf bytes.Buffer
				err := tn.Dump(ctx, s2, tc.path, &buf)
				if tc.err != nil {
					if !errors.Is(err, tc.err) {
						t.Fatalf("Dump %q: %v, want %v", tc.path, err, tc.err)
					}
					return
				}
				if err != nil || buf.String() != tc.want {
					t.Fatalf("Dump %q = %q, %v; want %q", tc.path, buf.String(), err, tc.want)
				}
			})
		}
	})
	t.Run("List", func(t *testing.T) {
		want := map[string]string{}
		for p := filepath.Dir(src); p != "/"; p = filepath.Dir(p) {
			want[p] = "dir"
		}
		for rel, typ := range map[string]string{
			"": "dir", "top.txt": "file", "dir": "dir", "dir/sub": "dir", "dir/sub/leaf.bin": "file", "dir/link": "symlink", "empty": "dir",
			// The first name in walk order (bytewise) holds the content.
			"dir/hard": "file", "dir/inner.txt": "hardlink",
		} {
			want[filepath.Join(src, rel)] = typ
		}
		got := map[string]string{}
		var order []string
		err := tn.List(ctx, s2, "/", func(en Entry) error {
			got[en.Path] = en.Type
			order = append(order, en.Path)
			if en.Path == src+"/dir/link" && en.Target != "inner.txt" {
				t.Errorf("link target %q, want inner.txt", en.Target)
			}
			if en.Path == src+"/dir/sub/leaf.bin" && en.Size != 1000 {
				t.Errorf("leaf.bin size %d, want 1000", en.Size)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !itMapsEqual(got, want) {
			t.Errorf("List /:\n got %v\nwant %v", got, want)
		}
		// Folders come before their entries.
		pos := map[string]int{}
		for i, p := range order {
			pos[p] = i
		}
		for p := range got {
			if d := filepath.Dir(p); d != "/" && pos[d] > pos[p] {
				t.Errorf("%s listed before its folder %s", p, d)
			}
		}
		// A sub-folder lists itself and what is below it.
		var sub []string
		if err := tn.List(ctx, s2, src+"/dir", func(en Entry) error { sub = append(sub, en.Path); return nil }); err != nil {
			t.Fatal(err)
		}
		sort.Strings(sub)
		wantSub := []string{src + "/dir", src + "/dir/hard", src + "/dir/inner.txt", src + "/dir/link", src + "/dir/sub", src + "/dir/sub/leaf.bin"}
		if !slices.Equal(sub, wantSub) {
			t.Errorf("List %s/dir = %q, want %q", src, sub, wantSub)
		}
		if err := tn.List(ctx, s2, src+"/missing", func(Entry) error { return nil }); !errors.Is(err, ErrPathNotFound) {
			t.Errorf("List of a missing path: %v, want ErrPathNotFound", err)
		}
		// The stream snapshot holds just the one file.
		var names []string
		if err := tn.List(ctx, s1, "/", func(en Entry) error { names = append(names, en.Path); return nil }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(names, []string{"/db-dump.sql"}) {
			t.Errorf("stream snapshot lists %q, want [/db-dump.sql]", names)
		}
	})
	t.Run("FindSnapshot", func(t *testing.T) {
		// An ID neither snapshot has: a first digit that differs from both.
		var first byte
		for _, c := range []byte("0123456789abcdef") {
			if c != s1.ID[0] && c != s2.ID[0] {
				first = c
				break
			}
		}
		unknown := string(first) + s2.ID[1:]
		for _, tc := range []struct {
			ref  string
			want *Snapshot
			err  error
		}{
			{"latest", s2, nil},
			{s1.ID, s1, nil},
			{s2.ID, s2, nil},
			{s1.ID[:8], s1, nil},
			{strings.ToUpper(s2.ID[:10]), s2, nil},
			{s1.ID[:7], s1, nil},
			{s1.ID[:3], nil, ErrInvalid},
			{"zzzz1", nil, ErrInvalid},
			{"", nil, ErrInvalid},
			{unknown[:8], nil, ErrSnapshotNotFound},
			{unknown, nil, ErrSnapshotNotFound},
		} {
			got, err := tn.FindSnapshot(ctx, tc.ref)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("FindSnapshot(%q) = %v, want %v", tc.ref, err, tc.err)
				}
				continue
			}
			if err != nil || got.ID != tc.want.ID {
				t.Errorf("FindSnapshot(%q) = %v, %v; want %s", tc.ref, got, err, tc.want.ID)
			}
		}
		// A 4-digit prefix is enough when unique.
		if s1.ID[:4] != s2.ID[:4] {
			if got, err := tn.FindSnapshot(ctx, s1.ID[:4]); err != nil || got.ID != s1.ID {
				t.Errorf("FindSnapshot(%q) = %v, %v; want %s", s1.ID[:4], got, err, s1.ID)
			}
		}
		// latest is by time, so an empty tenant has none.
		empty := itTenant(t, e, "empty")
		if _, err := empty.FindSnapshot(ctx, "latest"); !errors.Is(err, ErrSnapshotNotFound) {
			t.Errorf("latest of a tenant without snapshots: %v, want ErrSnapshotNotFound", err)
		}
	})
	t.Run("BackupStream refuses bad names", func(t *testing.T) {
		for _, name := range []string{"", "a/b", ".", "..", "nul\x00"} {
			if _, err := tn.BackupStream(ctx, strings.NewReader("x"), name, BackupOptions{}); !errors.Is(err, ErrInvalid) {
				t.Errorf("BackupStream name %q: %v, want ErrInvalid", name, err)
			}
		}
	})
}

// TestITRestoreIncludes restores parts of a snapshot. A hard link whose
// first name lies outside the included paths must still come back with its
// content: the user asked for that name, not for the other one.
func TestITRestoreIncludes(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	itBuildTree(t, src, []itEntry{
		{path: "a/first", kind: 'f', data: "shared content\n"},
		{path: "a/only-a.txt", kind: 'f', data: "a\n"},
		{path: "b/second", kind: 'h', target: "a/first"},
		{path: "b/third", kind: 'h', target: "a/first"},
		{path: "b/only-b.bin", kind: 'f', size: 3000},
		{path: "c/deep/x.txt", kind: 'f', data: "x\n"},
	})
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "acme")
	s := itBackup(t, tn, src)

	for _, tc := range []struct {
		name     string
		includes []string
		want     []string // files restored below src
		links    [][]string
	}{
		{"one folder", []string{src + "/a"}, []string{"a/first", "a/only-a.txt"}, nil},
		{"one file, no leading slash", []string{src[1:] + "/c/deep/x.txt"}, []string{"c/deep/x.txt"}, nil},
		{"two folders", []string{src + "/a", src + "/b"},
			[]string{"a/first", "a/only-a.txt", "b/only-b.bin", "b/second", "b/third"}, [][]string{{"a/first", "b/second", "b/third"}}},
		{"hard links without their first name", []string{src + "/b"},
			[]string{"b/only-b.bin", "b/second", "b/third"}, [][]string{{"b/second", "b/third"}}},
		{"one hard link alone", []string{src + "/b/third"}, []string{"b/third"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := t.TempDir()
			_, err := tn.Restore(ctx, s, target, RestoreOptions{Includes: tc.includes})
			if err != nil {
				t.Fatalf("Restore --include %q: %v", tc.includes, err)
			}
			root := filepath.Join(target, src)
			var got []string
			err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					rel, _ := filepath.Rel(root, p)
					got = append(got, rel)
					if err := itSameContent(filepath.Join(src, rel), p); err != nil {
						t.Errorf("%s: %v", rel, err)
					}
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			sort.Strings(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("restored files %q, want %q", got, tc.want)
			}
			for _, group := range tc.links {
				var first unix.Stat_t
				for i, rel := range group {
					var st unix.Stat_t
					if err := unix.Lstat(filepath.Join(root, rel), &st); err != nil {
						t.Fatal(err)
					}
					if i == 0 {
						first = st
					} else if st.Ino != first.Ino {
						t.Errorf("%s and %s are not one inode after restore", group[0], rel)
					}
				}
			}
		})
	}
}
