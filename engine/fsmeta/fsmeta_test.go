//go:build linux

package fsmeta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"coffer/engine/tree"

	"golang.org/x/sys/unix"
)

func mustStat(t *testing.T, path string) (tree.Node, Info) {
	t.Helper()
	n, info, err := Stat(path)
	if err != nil {
		t.Fatalf("Stat(%q): %v", path, err)
	}
	if err := n.Validate(); err != nil {
		t.Fatalf("Stat(%q) gave an invalid node: %v", path, err)
	}
	return n, info
}

func lstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func writeFile(t *testing.T, path string, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // not subject to umask
		t.Fatal(err)
	}
}

// setUserXattr sets a user.* attribute, or skips the test when the file
// system refuses user xattrs.
func setUserXattr(t *testing.T, path, name string, value []byte) {
	t.Helper()
	err := unix.Lsetxattr(path, name, value, 0)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("file system of %s refuses user xattrs: %v", path, err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func userXattrs(xs []tree.Xattr) []tree.Xattr {
	var out []tree.Xattr
	for _, x := range xs {
		if len(x.Name) > 5 && x.Name[:5] == "user." {
			out = append(out, x)
		}
	}
	return out
}

func TestStatTypes(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, file, "hello", 0o640)
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o750); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	target := "../x/\xff\xfe not utf8/ü"
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		path   string
		typ    tree.Type
		mode   uint32
		size   uint64
		target string
	}{
		{file, tree.File, 0o640, 5, ""},
		{sub, tree.Dir, 0o750, 0, ""},
		{link, tree.Symlink, 0o777, 0, target},
		{fifo, tree.FIFO, 0o600, 0, ""},
	}
	for _, tc := range tests {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			n, info := mustStat(t, tc.path)
			st := lstat(t, tc.path)
			if n.Name != filepath.Base(tc.path) || n.Type != tc.typ || n.Mode != tc.mode ||
				n.Size != tc.size || n.LinkTarget != tc.target {
				t.Fatalf("got name %q type %v mode %#o size %d target %q", n.Name, n.Type, n.Mode, n.Size, n.LinkTarget)
			}
			if n.UID != st.Uid || n.GID != st.Gid || n.Inode != st.Ino || n.Links != uint64(st.Nlink) ||
				info.Dev != uint64(st.Dev) {
				t.Fatalf("ids: got %+v %+v, stat %+v", n, info, st)
			}
			if n.MTime != st.Mtim.Nano() || n.CTime != st.Ctim.Nano() || n.MTime == 0 {
				t.Fatalf("times: got %d %d, stat %d %d", n.MTime, n.CTime, st.Mtim.Nano(), st.Ctim.Nano())
			}
			if u, err := user.LookupId(strconv.Itoa(int(st.Uid))); err == nil && n.User != u.Username {
				t.Fatalf("user %q, want %q", n.User, u.Username)
			}
			if g, err := user.LookupGroupId(strconv.Itoa(int(st.Gid))); err == nil && n.Group != g.Name {
				t.Fatalf("group %q, want %q", n.Group, g.Name)
			}
			if n.Holes != nil || n.Content != nil || n.Rdev != 0 {
				t.Fatalf("unexpected fields: %+v", n)
			}
		})
	}
}

func TestStatNames(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"with space", "ünïcødé 日本", "bad\xff\xfeutf8", " lead", "-dash"} {
		p := filepath.Join(dir, name)
		writeFile(t, p, "x", 0o600)
		n, _ := mustStat(t, p)
		if n.Name != name {
			t.Errorf("name %q, want %q", n.Name, name)
		}
	}
}

func TestStatMissing(t *testing.T) {
	_, _, err := Stat(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want not-exist", err)
	}
}

func TestStatSparse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	const size = 4 << 20
	const dataOff, dataLen = 1 << 20, 4096
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{7}, dataLen), dataOff); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	n, _ := mustStat(t, p)
	if n.Size != size {
		t.Fatalf("size %d", n.Size)
	}
	st := lstat(t, p)
	if st.Blocks*512 >= st.Size {
		if len(n.Holes) != 0 {
			t.Fatalf("file system does not show sparseness, yet holes %v", n.Holes)
		}
		t.Skip("file system allocated the whole file; nothing more to check")
	}
	if len(n.Holes) == 0 {
		// Sparse by st_blocks, but the file system may not report holes.
		t.Logf("st_blocks shows a sparse file but no holes were reported")
		return
	}
	var holeBytes uint64
	for _, h := range n.Holes {
		if h.Off < dataOff+dataLen && dataOff < h.Off+h.Len {
			t.Fatalf("hole %v covers the written data", h)
		}
		holeBytes += h.Len
	}
	if n.Holes[0].Off != 0 {
		t.Errorf("first hole %v does not start at 0", n.Holes[0])
	}
	if want := uint64(st.Size) - uint64(st.Blocks*512); holeBytes < want {
		t.Errorf("holes cover %d bytes, unallocated are %d", holeBytes, want)
	}
}

func TestHolesKeepsOffset(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(123, 0); err != nil {
		t.Fatal(err)
	}
	holes, err := Holes(f, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(holes) > 1 || (len(holes) == 1 && holes[0] != (tree.Extent{Off: 0, Len: 1 << 20})) {
		t.Fatalf("holes of an empty sparse file: %v", holes)
	}
	if off, _ := f.Seek(0, 1); off != 123 {
		t.Fatalf("offset %d after Holes, want 123", off)
	}
	if h, err := Holes(f, 0); h != nil || err != nil {
		t.Fatalf("Holes(size 0) = %v, %v", h, err)
	}
}

func TestStatXattrs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	writeFile(t, p, "", 0o600)
	setUserXattr(t, p, "user.zeta", []byte("last"))
	setUserXattr(t, p, "user.alpha", []byte{0, 1, 2, 0xff})
	setUserXattr(t, p, "user.empty", nil)
	big := bytes.Repeat([]byte("v"), 3000)
	setUserXattr(t, p, "user.big", big)
	n, _ := mustStat(t, p)
	got := userXattrs(n.Xattrs)
	want := []tree.Xattr{
		{Name: "user.alpha", Value: []byte{0, 1, 2, 0xff}},
		{Name: "user.big", Value: big},
		{Name: "user.empty"},
		{Name: "user.zeta", Value: []byte("last")},
	}
	if len(got) != len(want) {
		t.Fatalf("xattrs %v, want %v", got, want)
	}
	for i := range want {
		if got[i].Name != want[i].Name || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Errorf("xattr %d = %q=%q, want %q=%q", i, got[i].Name, got[i].Value, want[i].Name, want[i].Value)
		}
	}
}

// aclValue builds a system.posix_acl_access value: owner rw-, user 4242 r--,
// group r--, mask r--, other ---.
func aclValue() []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2) // version
	entry := func(tag, perm uint16, id uint32) {
		b = binary.LittleEndian.AppendUint16(b, tag)
		b = binary.LittleEndian.AppendUint16(b, perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	const undefined = 1<<32 - 1
	entry(0x01, 6, undefined) // ACL_USER_OBJ
	entry(0x02, 4, 4242)      // ACL_USER
	entry(0x04, 4, undefined) // ACL_GROUP_OBJ
	entry(0x10, 4, undefined) // ACL_MASK
	entry(0x20, 0, undefined) // ACL_OTHER
	return b
}

func TestCreateApplyRoundTrip(t *testing.T) {
	dir := t.TempDir()
	const mtime = 1600000000123456789
	tests := []struct {
		name string
		node tree.Node
	}{
		// Linux allows user.* xattrs on regular files and folders only.
		{"fifo", tree.Node{Type: tree.FIFO, Mode: 0o640, MTime: mtime}},
		{"symlink", tree.Node{Type: tree.Symlink, Mode: 0o777, MTime: mtime + 1, LinkTarget: "/no/such/\xff"}},
		{"file", tree.Node{Type: tree.File, Mode: 0o2751, MTime: -mtime,
			Xattrs: []tree.Xattr{{Name: "user.a", Value: []byte("1")}, {Name: "user.b", Value: []byte{0}}}}},
		{"folder", tree.Node{Type: tree.Dir, Mode: 0o1777, MTime: mtime + 3,
			Xattrs: []tree.Xattr{{Name: "user.dir", Value: []byte("d")}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			n := tc.node
			n.Name = tc.name
			switch n.Type {
			case tree.File:
				writeFile(t, p, "content", 0o600)
			case tree.Dir:
				if err := os.Mkdir(p, 0o700); err != nil {
					t.Fatal(err)
				}
			default:
				if err := Create(p, &n); err != nil {
					t.Fatalf("Create: %v", err)
				}
			}
			if len(n.Xattrs) > 0 {
				// Probe: skip if this file system refuses user xattrs.
				probe := filepath.Join(dir, "probe-"+tc.name)
				writeFile(t, probe, "", 0o600)
				setUserXattr(t, probe, "user.probe", nil)
			}
			if err := Apply(p, &n, ApplyOptions{Owner: IsRoot(), Xattrs: true}); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			// Before Stat: reading a symlink's target updates its atime.
			if st := lstat(t, p); st.Atim.Nano() != n.MTime {
				t.Errorf("atime %d, want mtime %d", st.Atim.Nano(), n.MTime)
			}
			got, _ := mustStat(t, p)
			if got.Type != n.Type || got.Mode != n.Mode || got.MTime != n.MTime || got.LinkTarget != n.LinkTarget {
				t.Fatalf("got type %v mode %#o mtime %d target %q; want %v %#o %d %q",
					got.Type, got.Mode, got.MTime, got.LinkTarget, n.Type, n.Mode, n.MTime, n.LinkTarget)
			}
			if x := userXattrs(got.Xattrs); len(x) != len(n.Xattrs) {
				t.Fatalf("xattrs %v, want %v", x, n.Xattrs)
			} else {
				for i := range x {
					if x[i].Name != n.Xattrs[i].Name || !bytes.Equal(x[i].Value, n.Xattrs[i].Value) {
						t.Fatalf("xattr %d: %q, want %q", i, x[i], n.Xattrs[i])
					}
				}
			}
		})
	}
}

func TestCreateRefuses(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		typ  tree.Type
		want error
	}{
		{tree.Socket, ErrSkipped},
		{tree.File, ErrNotSpecial},
		{tree.Dir, ErrNotSpecial},
		{tree.Hardlink, ErrNotSpecial},
	}
	for _, tc := range tests {
		p := filepath.Join(dir, tc.typ.String())
		if err := Create(p, &tree.Node{Type: tc.typ}); !errors.Is(err, tc.want) {
			t.Errorf("Create %v: err = %v, want %v", tc.typ, err, tc.want)
		}
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Create %v left something at %s", tc.typ, p)
		}
	}
	// An existing path is not replaced.
	p := filepath.Join(dir, "exists")
	writeFile(t, p, "", 0o600)
	if err := Create(p, &tree.Node{Type: tree.FIFO}); !errors.Is(err, os.ErrExist) {
		t.Errorf("Create over an existing file: err = %v", err)
	}
}

func TestDeviceNeedsRoot(t *testing.T) {
	if IsRoot() {
		t.Skip("running as root")
	}
	err := Create(filepath.Join(t.TempDir(), "null"), &tree.Node{Type: tree.CharDev, Rdev: unix.Mkdev(1, 3)})
	if !errors.Is(err, ErrNeedRoot) {
		t.Fatalf("err = %v, want ErrNeedRoot", err)
	}
}

func TestDeviceRoundTrip(t *testing.T) {
	if !IsRoot() {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "null")
	n := tree.Node{Name: "null", Type: tree.CharDev, Mode: 0o666, Rdev: unix.Mkdev(1, 3), MTime: 42}
	if err := Create(p, &n); err != nil {
		if errors.Is(err, ErrNeedRoot) {
			t.Skipf("no CAP_MKNOD: %v", err)
		}
		t.Fatal(err)
	}
	if err := Apply(p, &n, ApplyOptions{Owner: true}); err != nil {
		t.Fatal(err)
	}
	got, _ := mustStat(t, p)
	if got.Type != tree.CharDev || got.Rdev != n.Rdev || got.Mode != 0o666 || got.MTime != 42 {
		t.Fatalf("got %+v", got)
	}
	if unix.Major(got.Rdev) != 1 || unix.Minor(got.Rdev) != 3 {
		t.Fatalf("rdev %d:%d", unix.Major(got.Rdev), unix.Minor(got.Rdev))
	}
}

func TestApplyOwner(t *testing.T) {
	if !IsRoot() {
		t.Skip("needs root")
	}
	root, err := user.LookupId("0")
	if err != nil {
		t.Skipf("no name for uid 0: %v", err)
	}
	rootGroup, err := user.LookupGroupId("0")
	if err != nil {
		t.Skipf("no name for gid 0: %v", err)
	}
	dir := t.TempDir()
	tests := []struct {
		name     string
		node     tree.Node
		uid, gid uint32
		wantMode uint32
		opts     ApplyOptions
	}{
		{"numeric", tree.Node{UID: 12345, GID: 23456, Mode: 0o6755}, 12345, 23456, 0o6755, ApplyOptions{Owner: true}},
		{"unknown names", tree.Node{UID: 12346, GID: 23457, User: "coffer-no-such-user", Group: "coffer-no-such-group", Mode: 0o4700},
			12346, 23457, 0o4700, ApplyOptions{Owner: true}},
		{"names win", tree.Node{UID: 999, GID: 998, User: root.Username, Group: rootGroup.Name, Mode: 0o644}, 0, 0, 0o644, ApplyOptions{Owner: true}},
		{"no owner drops setid", tree.Node{UID: 12345, GID: 23456, Mode: 0o6755}, 0, 0, 0o0755, ApplyOptions{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			writeFile(t, p, "#!/bin/sh\n", 0o600)
			n := tc.node
			n.Name, n.Type = tc.name, tree.File
			if err := Apply(p, &n, tc.opts); err != nil {
				t.Fatal(err)
			}
			got, _ := mustStat(t, p)
			if got.UID != tc.uid || got.GID != tc.gid || got.Mode != tc.wantMode {
				t.Fatalf("owner %d:%d mode %#o, want %d:%d %#o", got.UID, got.GID, got.Mode, tc.uid, tc.gid, tc.wantMode)
			}
		})
	}
	// A symlink gets its own owner; its target is untouched.
	target := filepath.Join(dir, "target")
	writeFile(t, target, "", 0o600)
	link := filepath.Join(dir, "link")
	n := tree.Node{Name: "link", Type: tree.Symlink, LinkTarget: "target", UID: 777, GID: 778, MTime: 5}
	if err := Create(link, &n); err != nil {
		t.Fatal(err)
	}
	if err := Apply(link, &n, ApplyOptions{Owner: true}); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, link); st.Uid != 777 || st.Gid != 778 || st.Mtim.Nano() != 5 {
		t.Fatalf("symlink owner %d:%d mtime %d", st.Uid, st.Gid, st.Mtim.Nano())
	}
	if st := lstat(t, target); st.Uid != 0 || st.Mtim.Nano() == 5 {
		t.Fatalf("symlink target was changed: owner %d mtime %d", st.Uid, st.Mtim.Nano())
	}
}

func TestACLRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, src, "", 0o600)
	acl := aclValue()
	if err := unix.Lsetxattr(src, "system.posix_acl_access", acl, 0); err != nil {
		t.Skipf("file system refuses POSIX ACLs: %v", err)
	}
	n, _ := mustStat(t, src)
	if n.Mode != 0o640 {
		t.Fatalf("mode after ACL %#o, want 0640 (mask r--)", n.Mode)
	}
	var found bool
	for _, x := range n.Xattrs {
		if x.Name == "system.posix_acl_access" {
			found = bytes.Equal(x.Value, acl)
		}
	}
	if !found {
		t.Fatalf("ACL not read back exactly: %v", n.Xattrs)
	}
	dst := filepath.Join(dir, "dst")
	writeFile(t, dst, "", 0o777)
	if err := Apply(dst, &n, ApplyOptions{Owner: IsRoot(), Xattrs: true}); err != nil {
		t.Fatal(err)
	}
	got, _ := mustStat(t, dst)
	if got.Mode != n.Mode {
		t.Fatalf("restored mode %#o, want %#o", got.Mode, n.Mode)
	}
	val, err := getSized(func(b []byte) (int, error) { return unix.Lgetxattr(dst, "system.posix_acl_access", b) })
	if err != nil || !bytes.Equal(val, acl) {
		t.Fatalf("restored ACL %x (%v), want %x", val, err, acl)
	}
}

func TestNameCacheConcurrent(t *testing.T) {
	c := nameCache{userName: map[uint32]string{}, groupName: map[uint32]string{},
		userID: map[string]idResult{}, groupID: map[string]idResult{}}
	want := ""
	if u, err := user.LookupId("0"); err == nil {
		want = u.Username
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if got := c.userOf(0); got != want {
					t.Errorf("userOf(0) = %q, want %q", got, want)
				}
				c.groupOf(0)
				c.userOf(4000000000) // a miss, cached too
				if _, ok := c.uidOf("coffer-no-such-user"); ok {
					t.Error("unknown user resolved")
				}
				c.gidOf("coffer-no-such-group")
			}
		})
	}
	wg.Wait()
	if _, ok := c.userName[4000000000]; !ok {
		t.Error("miss not cached")
	}
	if r, ok := c.userID["coffer-no-such-user"]; !ok || r.ok {
		t.Errorf("unknown name cached as %+v, %v", r, ok)
	}
}
