package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"coffer/engine"
	"coffer/engine/fsmeta"
	"coffer/engine/tree"
)

// richTree is what writeRichTree made, for the test to look for.
type richTree struct {
	data     string // the path to back up: src/via/data, via a symlink to src/real
	excludes []string
	xattrs   bool // the file system took a user xattr
	files    int64
}

// writeRichTree writes a source with every kind of entry the walker
// records: hard links, xattrs (and an ACL where the file system has them),
// another owner and a device node (as root), a sparse file, a fifo, a
// socket, a symlink, a nanosecond mtime, entries to exclude, and a folder
// on the way to the backed-up path reached through a symlink.
func writeRichTree(t *testing.T, src string) richTree {
	t.Helper()
	real := filepath.Join(src, "real", "data")
	rt := richTree{data: filepath.Join(src, "via", "data"), excludes: []string{"*.tmp", filepath.Join(src, "via", "data", "cache")}}
	write := func(rel, content string) string {
		t.Helper()
		p := filepath.Join(real, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("a/plain", "plain file")
	rt.files++
	first := write("a/linked", "one inode, three names")
	for _, name := range []string{"b/second", "third"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(real, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(first, filepath.Join(real, name)); err != nil {
			t.Fatal(err)
		}
	}
	rt.files += 3
	write("skip.tmp", "excluded by name")
	write("cache/big", "excluded by path")

	attr := write("attrs", "with xattrs")
	rt.files++
	if err := unix.Setxattr(attr, "user.coffer", []byte("value\x00with a zero"), 0); err == nil {
		rt.xattrs = true
		// An ACL too, where the file system has them: owner rw-, user 4242
		// r--, group r--, mask r--, other ---.
		acl := []byte{2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 2, 0, 4, 0, 0x92, 0x10, 0, 0,
			4, 0, 4, 0, 255, 255, 255, 255, 16, 0, 4, 0, 255, 255, 255, 255, 32, 0, 0, 0, 255, 255, 255, 255}
		if err := unix.Setxattr(attr, "system.posix_acl_access", acl, 0); err != nil {
			t.Logf("no ACL: %v", err)
		}
	} else if !errors.Is(err, unix.ENOTSUP) {
		t.Fatal(err)
	}

	sparse := filepath.Join(real, "sparse")
	fh, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(16 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt(bytes.Repeat([]byte("data in a hole "), 1000), 5<<20); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	rt.files++

	if err := unix.Mkfifo(filepath.Join(real, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(real, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := os.Symlink("a/plain", filepath.Join(real, "link")); err != nil {
		t.Fatal(err)
	}
	ns := write("ns", "nanosecond mtime")
	rt.files++
	if err := os.Chtimes(ns, time.Unix(1600000000, 1), time.Unix(1600000000, 123456789)); err != nil {
		t.Fatal(err)
	}
	if fsmeta.IsRoot() {
		owned := write("owned", "owned by someone else")
		rt.files++
		if err := os.Lchown(owned, 4321, 8765); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mknod(filepath.Join(real, "null"), syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("real", filepath.Join(src, "via")); err != nil {
		t.Fatal(err)
	}
	// The snapshot's start must come after every mtime, as in real use.
	time.Sleep(10 * time.Millisecond)
	return rt
}

// nodeAt returns the node at the absolute path p in a snapshot of tn.
func nodeAt(t *testing.T, tn *engine.Tenant, s *engine.Snapshot, p string) *tree.Node {
	t.Helper()
	id, err := parseID(s.Tree)
	if err != nil {
		t.Fatal(err)
	}
	n := &tree.Node{Type: tree.Dir, Subtree: id}
	for _, name := range strings.Split(strings.Trim(p, "/"), "/") {
		if n.Type != tree.Dir {
			t.Fatalf("%s: %q is below a %v", p, name, n.Type)
		}
		tr := loadTree(t, tn, n.Subtree)
		if n = tr.Find(name); n == nil {
			t.Fatalf("%s: no %q in snapshot %s", p, name, s.ID[:8])
		}
	}
	return n
}

func loadTree(t *testing.T, tn *engine.Tenant, id tree.ID) *tree.Tree {
	t.Helper()
	b, err := tn.TreeBlob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tree.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// firstDifference names the first entry below two nodes that differs.
func firstDifference(t *testing.T, tn *engine.Tenant, path string, a, b *tree.Node) string {
	t.Helper()
	if a.Type == tree.Dir && b.Type == tree.Dir && a.Subtree != b.Subtree {
		ta, tb := loadTree(t, tn, a.Subtree), loadTree(t, tn, b.Subtree)
		for i := range ta.Nodes {
			if i >= len(tb.Nodes) || ta.Nodes[i].Name != tb.Nodes[i].Name {
				return path + "/" + ta.Nodes[i].Name + ": only in one"
			}
			if d := firstDifference(t, tn, path+"/"+ta.Nodes[i].Name, &ta.Nodes[i], &tb.Nodes[i]); d != "" {
				return d
			}
		}
		if len(tb.Nodes) > len(ta.Nodes) {
			return path + "/" + tb.Nodes[len(ta.Nodes)].Name + ": only in one"
		}
	}
	x, y := *a, *b
	x.Subtree, y.Subtree = tree.ID{}, tree.ID{}
	if !reflect.DeepEqual(x, y) {
		return path + ":\n" + nodeString(&x) + "\n" + nodeString(&y)
	}
	return ""
}

func nodeString(n *tree.Node) string {
	c := *n
	c.Content = nil // long, and equal when the rest is
	return fmt.Sprintf("%+v", c)
}

// TestLocalAndRemoteSameTrees: the local backup and the remote client walk
// with one walker, so backing up the same rich source into the same tenant,
// locally and then remotely, records the same trees blob for blob, with
// the same counts; and so do their incremental backups, which both read
// nothing.
func TestLocalAndRemoteSameTrees(t *testing.T) {
	f := newIngestFixture(t)
	ctx := context.Background()
	src := t.TempDir()
	rt := writeRichTree(t, src)
	tn, err := f.e.OpenTenant(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	cl := f.dial(t, f.key(t, "alice", "backup"))
	same := func(what string, ls, rs *engine.Snapshot) {
		t.Helper()
		// Compared from the test's folder down: the folders above it (/tmp,
		// the test's parent) change when other processes write there.
		ln, rn := nodeAt(t, tn, ls, src), nodeAt(t, tn, rs, src)
		if !reflect.DeepEqual(ln, rn) {
			t.Errorf("%s: local and remote trees differ at %s", what, firstDifference(t, tn, src, ln, rn))
		}
		lst, rst := ls.Stats, rs.Stats
		if lst.Files != rst.Files || lst.Dirs != rst.Dirs || lst.Bytes != rst.Bytes || lst.FilesUnchanged != rst.FilesUnchanged || lst.FilesFailed != rst.FilesFailed {
			t.Errorf("%s: local stats %+v, remote %+v", what, lst, rst)
		}
		if ls.Tree != rs.Tree {
			t.Logf("%s: root trees differ (something wrote to a folder above the test's meanwhile)", what)
		}
	}
	for _, parent := range []bool{false, true} {
		what := "first backups"
		if parent {
			what = "incremental backups"
		}
		o := engine.BackupOptions{Host: "h", Excludes: rt.excludes, NoParent: !parent}
		ls, err := tn.Backup(ctx, []string{rt.data}, o)
		if err != nil {
			t.Fatalf("local backup: %v", err)
		}
		rs, err := cl.Backup(ctx, []string{rt.data}, o)
		if err != nil {
			t.Fatalf("remote backup: %v", err)
		}
		same(what, ls, rs)
		want := int64(0)
		if parent {
			want = rt.files - 2 // hard links are not files to read
		}
		if rs.Stats.Files != rt.files || rs.Stats.FilesUnchanged != want || rs.Stats.FilesFailed != 0 {
			t.Errorf("%s: remote stats %+v; want %d files, %d unchanged", what, rs.Stats, rt.files, want)
		}
	}

	// The trees hold what the source has, so the comparison above covers it.
	ss, err := tn.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := ss[0]
	if via := nodeAt(t, tn, s, filepath.Join(src, "via")); via.Type != tree.Dir {
		t.Errorf("folder on the way through a symlink: %v", via.Type)
	}
	at := func(rel string) *tree.Node { t.Helper(); return nodeAt(t, tn, s, filepath.Join(rt.data, rel)) }
	data := loadTree(t, tn, at(".").Subtree)
	if data.Find("skip.tmp") != nil || data.Find("cache") != nil {
		t.Error("excluded entries were backed up")
	}
	linkTarget := strings.TrimPrefix(filepath.Join(rt.data, "a", "linked"), "/")
	for _, name := range []string{"b/second", "third"} {
		if n := at(name); n.Type != tree.Hardlink || n.LinkTarget != linkTarget {
			t.Errorf("%s: %v → %q, want a hard link to %q", name, n.Type, n.LinkTarget, linkTarget)
		}
	}
	if n := at("sparse"); n.Size != 16<<20 || len(n.Holes) == 0 {
		t.Logf("sparse file without holes (the file system does not report them): %d bytes, %v", n.Size, n.Holes)
	}
	for name, typ := range map[string]tree.Type{"fifo": tree.FIFO, "sock": tree.Socket, "link": tree.Symlink} {
		if n := at(name); n.Type != typ {
			t.Errorf("%s: %v, want %v", name, n.Type, typ)
		}
	}
	if n := at("ns"); n.MTime != 1600000000123456789 {
		t.Errorf("nanosecond mtime recorded as %d", n.MTime)
	}
	if n := at("attrs"); rt.xattrs && len(n.Xattrs) == 0 {
		t.Error("xattrs were not recorded")
	}
	if fsmeta.IsRoot() {
		if n := at("owned"); n.UID != 4321 || n.GID != 8765 {
			t.Errorf("owner %d:%d", n.UID, n.GID)
		}
		if n := at("null"); n.Type != tree.CharDev || n.Rdev != unix.Mkdev(1, 3) {
			t.Errorf("device: %v %d", n.Type, n.Rdev)
		}
	}
	checkRepo(t, f.e)
}
