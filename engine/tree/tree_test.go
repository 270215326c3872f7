package tree

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func id(b byte) ID {
	var x ID
	for i := range x {
		x[i] = b
	}
	return x
}

// exampleTree is the tree printed in docs/design.md ("hex example=tree").
func exampleTree() *Tree {
	return &Tree{Nodes: []Node{
		{
			Name: "docs", Type: Dir, Mode: 0o755, UID: 1000, GID: 1000,
			User: "alice", Group: "staff",
			MTime: 1700000000000000000, CTime: 1700000000000000001,
			Inode: 2, Links: 2, Subtree: id(0xdd),
		},
		{
			Name: "link", Type: Symlink, Mode: 0o777, UID: 1000, GID: 1000,
			User: "alice", Group: "staff",
			MTime: -1, CTime: 1,
			LinkTarget: "notes.txt", Inode: 3, Links: 1,
		},
		{
			Name: "notes.txt", Type: File, Mode: 0o4644, UID: 0, GID: 0,
			User: "root", Group: "",
			MTime: 1700000000000000000, CTime: 1700000000000000000,
			Size: 300, Inode: 4, Links: 1,
			Xattrs:  []Xattr{{Name: "user.k", Value: []byte("v")}},
			Holes:   []Extent{{Off: 0, Len: 100}},
			Content: []ID{id(0xaa), id(0xbb)},
		},
	}}
}

func fullFile() Node {
	return Node{
		Name: "f", Type: File, Mode: 0o7777, UID: 1<<32 - 1, GID: 7,
		User: "u", Group: "g", MTime: -1 << 63, CTime: 1<<63 - 1,
		Size: 1 << 40, Inode: 1<<64 - 1, Links: 3,
		Xattrs: []Xattr{
			{Name: "system.posix_acl_access", Value: []byte{2, 0, 0, 0}},
			{Name: "user.empty"},
		},
		Holes:   []Extent{{Off: 0, Len: 4096}, {Off: 8192, Len: 1<<40 - 8192}},
		Content: []ID{id(1), id(2), id(1)},
	}
}

func mustEncode(t testing.TB, tr *Tree) []byte {
	t.Helper()
	b, err := tr.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	names := []string{"a b", "\xff\xfe", "ünïcødé", "z"}
	var b Builder
	for i, name := range names {
		b.Add(Node{Name: name, Type: FIFO, Mode: uint32(i), MTime: int64(i)})
	}
	built, err := b.Tree()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tree *Tree
	}{
		{"empty", &Tree{}},
		{"example", exampleTree()},
		{"full file", &Tree{Nodes: []Node{fullFile()}}},
		{"every type", &Tree{Nodes: []Node{
			{Name: "1", Type: File},
			{Name: "2", Type: Dir},
			{Name: "3", Type: Symlink, LinkTarget: "/abs/\xff"},
			{Name: "4", Type: Hardlink, LinkTarget: "a/b/1", Size: 9},
			{Name: "5", Type: FIFO},
			{Name: "6", Type: Socket},
			{Name: "7", Type: CharDev, Rdev: 259},
			{Name: "8", Type: BlockDev, Rdev: 1 << 40},
		}}},
		{"builder", built},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc := mustEncode(t, tc.tree)
			again := mustEncode(t, tc.tree)
			if !bytes.Equal(enc, again) {
				t.Fatal("two encodings differ")
			}
			dec, err := Decode(enc)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			want := tc.tree.Nodes
			if len(want) == 0 {
				want = []Node{}
			}
			if !reflect.DeepEqual(dec.Nodes, want) {
				t.Fatalf("round trip differs:\n got %+v\nwant %+v", dec.Nodes, want)
			}
			if re := mustEncode(t, dec); !bytes.Equal(re, enc) {
				t.Fatal("re-encoding differs")
			}
		})
	}
}

func TestDecodeDoesNotAlias(t *testing.T) {
	enc := mustEncode(t, exampleTree())
	dec, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		enc[i] = 0
	}
	if !reflect.DeepEqual(dec, exampleTree()) {
		t.Fatal("decoded tree changed when the input buffer was overwritten")
	}
}

func TestEncodeRejects(t *testing.T) {
	f := func(mod func(n *Node)) *Tree {
		n := fullFile()
		mod(&n)
		return &Tree{Nodes: []Node{n}}
	}
	tests := []struct {
		name string
		tree *Tree
	}{
		{"empty name", f(func(n *Node) { n.Name = "" })},
		{"dot", f(func(n *Node) { n.Name = "." })},
		{"dotdot", f(func(n *Node) { n.Name = ".." })},
		{"slash", f(func(n *Node) { n.Name = "a/b" })},
		{"nul", f(func(n *Node) { n.Name = "a\x00" })},
		{"type 0", f(func(n *Node) { n.Type = 0 })},
		{"type 9", f(func(n *Node) { n.Type = 9 })},
		{"mode type bits", f(func(n *Node) { n.Mode = 0o100644 })},
		{"user nul", f(func(n *Node) { n.User = "a\x00" })},
		{"group nul", f(func(n *Node) { n.Group = "\x00" })},
		{"file link target", f(func(n *Node) { n.LinkTarget = "x" })},
		{"file rdev", f(func(n *Node) { n.Rdev = 1 })},
		{"file subtree", f(func(n *Node) { n.Subtree = id(1) })},
		{"xattr unsorted", f(func(n *Node) { n.Xattrs[0], n.Xattrs[1] = n.Xattrs[1], n.Xattrs[0] })},
		{"xattr dup", f(func(n *Node) { n.Xattrs[1].Name = n.Xattrs[0].Name })},
		{"xattr empty name", f(func(n *Node) { n.Xattrs[0].Name = "" })},
		{"xattr nul", f(func(n *Node) { n.Xattrs[0].Name = "a\x00" })},
		{"hole empty", f(func(n *Node) { n.Holes[0].Len = 0 })},
		{"holes touch", f(func(n *Node) { n.Holes[1].Off = 4096 })},
		{"holes overlap", f(func(n *Node) { n.Holes[1].Off = 100 })},
		{"holes unsorted", f(func(n *Node) { n.Holes[0], n.Holes[1] = n.Holes[1], n.Holes[0] })},
		{"hole past size", f(func(n *Node) { n.Holes[1].Len++ })},
		{"hole overflow", f(func(n *Node) { n.Holes[1].Len = 1<<64 - 1 })},
		{"dir size", &Tree{Nodes: []Node{{Name: "d", Type: Dir, Size: 1}}}},
		{"dir content", &Tree{Nodes: []Node{{Name: "d", Type: Dir, Content: []ID{{}}}}}},
		{"dir holes", &Tree{Nodes: []Node{{Name: "d", Type: Dir, Holes: []Extent{{0, 1}}}}}},
		{"symlink empty", &Tree{Nodes: []Node{{Name: "s", Type: Symlink}}}},
		{"symlink nul", &Tree{Nodes: []Node{{Name: "s", Type: Symlink, LinkTarget: "a\x00"}}}},
		{"symlink size", &Tree{Nodes: []Node{{Name: "s", Type: Symlink, LinkTarget: "a", Size: 1}}}},
		{"hardlink empty", &Tree{Nodes: []Node{{Name: "h", Type: Hardlink}}}},
		{"hardlink abs", &Tree{Nodes: []Node{{Name: "h", Type: Hardlink, LinkTarget: "/a"}}}},
		{"hardlink dotdot", &Tree{Nodes: []Node{{Name: "h", Type: Hardlink, LinkTarget: "a/../b"}}}},
		{"hardlink double slash", &Tree{Nodes: []Node{{Name: "h", Type: Hardlink, LinkTarget: "a//b"}}}},
		{"hardlink trailing slash", &Tree{Nodes: []Node{{Name: "h", Type: Hardlink, LinkTarget: "a/"}}}},
		{"hardlink content", &Tree{Nodes: []Node{{Name: "h", Type: Hardlink, LinkTarget: "a", Content: []ID{{}}}}}},
		{"fifo rdev", &Tree{Nodes: []Node{{Name: "p", Type: FIFO, Rdev: 1}}}},
		{"socket size", &Tree{Nodes: []Node{{Name: "p", Type: Socket, Size: 1}}}},
		{"chardev subtree", &Tree{Nodes: []Node{{Name: "c", Type: CharDev, Subtree: id(1)}}}},
		{"unsorted", &Tree{Nodes: []Node{{Name: "b", Type: FIFO}, {Name: "a", Type: FIFO}}}},
		{"duplicate", &Tree{Nodes: []Node{{Name: "a", Type: FIFO}, {Name: "a", Type: Socket}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.tree.Encode()
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Encode error = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestBuilder(t *testing.T) {
	var b Builder
	for _, n := range []string{"c", "a", "B", "b"} {
		b.Add(Node{Name: n, Type: FIFO})
	}
	if b.Len() != 4 {
		t.Fatalf("Len = %d", b.Len())
	}
	tr, err := b.Tree()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range tr.Nodes {
		got = append(got, n.Name)
	}
	if want := []string{"B", "a", "b", "c"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("order %q, want %q", got, want)
	}
	if b.Len() != 0 {
		t.Fatal("builder not reset")
	}
	b.Add(Node{Name: "x", Type: FIFO})
	b.Add(Node{Name: "x", Type: FIFO})
	if _, err := b.Tree(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("duplicate names: err = %v, want ErrInvalid", err)
	}
}

func TestFind(t *testing.T) {
	tr := exampleTree()
	for _, n := range tr.Nodes {
		got := tr.Find(n.Name)
		if got == nil || got.Name != n.Name {
			t.Fatalf("Find(%q) = %v", n.Name, got)
		}
	}
	for _, name := range []string{"", "a", "docs0", "zzz", "lin"} {
		if got := tr.Find(name); got != nil {
			t.Fatalf("Find(%q) = %q, want nil", name, got.Name)
		}
	}
	if (&Tree{}).Find("a") != nil {
		t.Fatal("Find on an empty tree")
	}
}

func TestMakeHardlink(t *testing.T) {
	n := fullFile()
	n.MakeHardlink("dir/first")
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
	if n.Type != Hardlink || n.Size != 1<<40 || n.Holes != nil || n.Content != nil || n.Xattrs == nil {
		t.Fatalf("unexpected node %+v", n)
	}
	dev := Node{Name: "d", Type: CharDev, Rdev: 5}
	dev.MakeHardlink("x")
	if err := dev.Validate(); err != nil || dev.Rdev != 0 {
		t.Fatalf("device hardlink: %v %+v", err, dev)
	}
}

func TestTypeString(t *testing.T) {
	for ty := File; ty <= BlockDev; ty++ {
		if s := ty.String(); strings.HasPrefix(s, "type(") {
			t.Errorf("Type %d has no name", ty)
		}
	}
	if s := Type(0).String(); s != "type(0)" {
		t.Errorf("Type(0) = %q", s)
	}
}

// TestDecodeRejects mutates a valid encoding in ways that must be refused.
func TestDecodeRejects(t *testing.T) {
	good := mustEncode(t, exampleTree())
	one := mustEncode(t, &Tree{Nodes: []Node{{Name: "a", Type: FIFO}}})
	// one = magic(4) version(1) count(1) name-len(1) 'a' type ...
	tests := []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"short header", good[:4]},
		{"bad magic", append([]byte("XFTR"), good[4:]...)},
		{"version 0", append(append([]byte{}, good[:4]...), append([]byte{0}, good[5:]...)...)},
		{"version 2", append(append([]byte{}, good[:4]...), append([]byte{2}, good[5:]...)...)},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(append([]byte{}, good...), 0)},
		{"no count", good[:5]},
		{"huge count", append(append([]byte{}, good[:5]...), binary.AppendUvarint(nil, 1<<62)...)},
		{"count too big", append(append([]byte{}, one[:5]...), append([]byte{2}, one[6:]...)...)},
		{"non-minimal count", append(append([]byte{}, one[:5]...), append([]byte{0x81, 0x00}, one[6:]...)...)},
		{"type 0", func() []byte { b := bytes.Clone(one); b[8] = 0; return b }()},
		{"type 9", func() []byte { b := bytes.Clone(one); b[8] = 9; return b }()},
		{"name slash", func() []byte { b := bytes.Clone(one); b[7] = '/'; return b }()},
		{"mode too big", append(append(bytes.Clone(one[:9]), 0x80, 0x40), one[10:]...)},
		{"uid too big", append(append(bytes.Clone(one[:10]), 0x80, 0x80, 0x80, 0x80, 0x10), one[11:]...)},
		{"varint overflow", append(bytes.Clone(good[:5]), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := Decode(tc.b)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Decode = %v, %v; want ErrCorrupt", tr, err)
			}
		})
	}
	// Every strict prefix of a valid tree is corrupt.
	for i := range good {
		if _, err := Decode(good[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix of %d bytes: err = %v", i, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(mustEncode(f, exampleTree()))
	f.Add(mustEncode(f, &Tree{}))
	f.Add(mustEncode(f, &Tree{Nodes: []Node{fullFile()}}))
	f.Add(mustEncode(f, &Tree{Nodes: []Node{
		{Name: "c", Type: CharDev, Rdev: 5},
		{Name: "h", Type: Hardlink, LinkTarget: "a/b"},
	}}))
	f.Add([]byte("CFTR\x01\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		re, err := tr.Encode()
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, re)
		}
	})
}

func benchTree() *Tree {
	var b Builder
	for i := range 1000 {
		n := Node{
			Name: fmt.Sprintf("file-%05d.dat", i), Type: File, Mode: 0o644,
			UID: 1000, GID: 1000, User: "www-data", Group: "www-data",
			MTime: 1700000000000000000 + int64(i), CTime: 1700000000000000000 + int64(i),
			Size: 1 << 20, Inode: uint64(1000 + i), Links: 1,
			Content: []ID{id(byte(i)), id(byte(i + 1))},
		}
		if i%10 == 0 {
			n = Node{Name: fmt.Sprintf("dir-%05d", i), Type: Dir, Mode: 0o755, Subtree: id(byte(i)),
				MTime: 1700000000000000000, CTime: 1700000000000000000, Inode: uint64(i), Links: 2}
		}
		b.Add(n)
	}
	t, err := b.Tree()
	if err != nil {
		panic(err) // test fixture; cannot happen
	}
	return t
}

func BenchmarkEncode1000(b *testing.B) {
	t := benchTree()
	enc := mustEncode(b, t)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := t.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode1000(b *testing.B) {
	enc := mustEncode(b, benchTree())
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// docExample returns the bytes of the fenced block "```hex example=NAME" found
// in a Markdown file under ../../docs. In the block, whitespace is ignored and
// '#' starts a comment that runs to the end of the line.
func docExample(t *testing.T, name string) []byte {
	t.Helper()
	re := regexp.MustCompile("(?ms)^```hex[ \t]+example=" + regexp.QuoteMeta(name) + "[ \t]*\n(.*?)^```")
	var found [][]byte
	err := filepath.WalkDir(filepath.Join("..", "..", "docs"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".md") {
			return err
		}
		text, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllSubmatch(text, -1) {
			found = append(found, m[1])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading docs: %v", err)
	}
	if len(found) != 1 {
		t.Fatalf("found %d blocks 'hex example=%s' under docs, want 1", len(found), name)
	}
	var digits strings.Builder
	for line := range strings.SplitSeq(string(found[0]), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("example %s: %v", name, err)
	}
	return b
}

func TestDocExample(t *testing.T) {
	b := docExample(t, "tree")
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode of the documented example: %v", err)
	}
	// Spelled out field by field, so a change of the example or of the
	// format shows up here, not only as "not equal".
	if len(got.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(got.Nodes))
	}
	d, l, f := got.Nodes[0], got.Nodes[1], got.Nodes[2]
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	check("dir name", d.Name, "docs")
	check("dir type", d.Type, Dir)
	check("dir mode", d.Mode, uint32(0o755))
	check("dir uid/gid", [2]uint32{d.UID, d.GID}, [2]uint32{1000, 1000})
	check("dir user/group", [2]string{d.User, d.Group}, [2]string{"alice", "staff"})
	check("dir mtime", d.MTime, int64(1700000000000000000))
	check("dir ctime", d.CTime, int64(1700000000000000001))
	check("dir inode/links", [2]uint64{d.Inode, d.Links}, [2]uint64{2, 2})
	check("dir subtree", d.Subtree, id(0xdd))
	check("link name", l.Name, "link")
	check("link type", l.Type, Symlink)
	check("link mode", l.Mode, uint32(0o777))
	check("link times", [2]int64{l.MTime, l.CTime}, [2]int64{-1, 1})
	check("link target", l.LinkTarget, "notes.txt")
	check("link inode", l.Inode, uint64(3))
	check("file name", f.Name, "notes.txt")
	check("file type", f.Type, File)
	check("file mode", f.Mode, uint32(0o4644))
	check("file user", f.User, "root")
	check("file group", f.Group, "")
	check("file size", f.Size, uint64(300))
	check("file xattrs", f.Xattrs, []Xattr{{Name: "user.k", Value: []byte("v")}})
	check("file holes", f.Holes, []Extent{{Off: 0, Len: 100}})
	check("file content", f.Content, []ID{id(0xaa), id(0xbb)})
	check("whole tree", got, exampleTree())
	if re := mustEncode(t, got); !bytes.Equal(re, b) {
		t.Error("the documented bytes are not what Encode writes")
	}
}
