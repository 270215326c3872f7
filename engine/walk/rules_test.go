package walk

import (
	"reflect"
	"testing"

	"coffer/engine/tree"
)

func TestDropNested(t *testing.T) {
	for _, c := range []struct{ in, want []string }{
		{[]string{"/a/b", "/a"}, []string{"/a"}},
		{[]string{"/a", "/ab"}, []string{"/a", "/ab"}},
		{[]string{"/srv/www", "/srv/www", "/etc"}, []string{"/etc", "/srv/www"}},
		{[]string{"/", "/etc"}, []string{"/"}},
		{nil, nil},
	} {
		if got := dropNested(append([]string(nil), c.in...)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("dropNested(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestRoots(t *testing.T) {
	r := roots([]string{"/srv/www", "/srv/db", "/etc"})
	if r.target || !reflect.DeepEqual(r.names(), []string{"etc", "srv"}) {
		t.Fatalf("root: %+v %q", r, r.names())
	}
	srv := r.children["srv"]
	if srv.target || !reflect.DeepEqual(srv.names(), []string{"db", "www"}) || !srv.children["www"].target || !r.children["etc"].target {
		t.Fatalf("srv: %+v", srv)
	}
	if !roots([]string{"/"}).target {
		t.Fatal("backing up / makes the root a target")
	}
}

func TestExcluded(t *testing.T) {
	pats := []string{"*.tmp", "/srv/cache/*", "node_modules"}
	for abs, want := range map[string]bool{
		"/srv/www/a.tmp":           true,
		"/srv/www/a.txt":           false,
		"/srv/cache/x":             true,
		"/srv/cache/x/y":           false, // a pattern with "/" matches whole paths only
		"/home/u/app/node_modules": true,
		"/srv/cache":               false,
	} {
		if got := excluded(pats, abs); got != want {
			t.Errorf("excluded(%q) = %v, want %v", abs, got, want)
		}
	}
}

func TestClipHoles(t *testing.T) {
	h := []tree.Extent{{Off: 0, Len: 10}, {Off: 20, Len: 10}, {Off: 40, Len: 10}}
	for _, c := range []struct {
		size uint64
		want []tree.Extent
	}{
		{100, h},
		{25, []tree.Extent{{Off: 0, Len: 10}, {Off: 20, Len: 5}}},
		{20, []tree.Extent{{Off: 0, Len: 10}}},
		{0, nil},
	} {
		if got := clipHoles(h, c.size); !reflect.DeepEqual(got, c.want) {
			t.Errorf("clipHoles(size %d) = %v, want %v", c.size, got, c.want)
		}
	}
}

func TestUnchanged(t *testing.T) {
	prev := tree.Node{Type: tree.File, Size: 5, MTime: 100, CTime: 100, Inode: 7}
	for _, c := range []struct {
		name  string
		n     tree.Node
		start int64
		want  bool
	}{
		{"same", prev, 200, true},
		{"no parent", prev, 0, false},
		{"written during the parent's backup", prev, 100, false},
		{"size", tree.Node{Type: tree.File, Size: 6, MTime: 100, CTime: 100, Inode: 7}, 200, false},
		{"mtime", tree.Node{Type: tree.File, Size: 5, MTime: 101, CTime: 100, Inode: 7}, 200, false},
		{"ctime", tree.Node{Type: tree.File, Size: 5, MTime: 100, CTime: 101, Inode: 7}, 200, false},
		{"inode", tree.Node{Type: tree.File, Size: 5, MTime: 100, CTime: 100, Inode: 8}, 200, false},
	} {
		if got := unchanged(&c.n, &prev, c.start); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	dir := prev
	dir.Type = tree.Dir
	if unchanged(&prev, &dir, 200) || unchanged(&prev, nil, 200) {
		t.Error("a folder or a missing node in the parent is not an unchanged file")
	}
}
