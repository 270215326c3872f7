package walk

import (
	"reflect"
	"strings"
	"testing"
	"time"

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
		"/srv/cache/x/y":           false, // an anchored pattern matches whole paths only
		"/home/u/app/node_modules": true,
		"/srv/cache":               false,
	} {
		if got := excluded(pats, abs, false); got != want {
			t.Errorf("excluded(%q) = %v, want %v", abs, got, want)
		}
	}
}

// TestMatch: exclude patterns as restic's: a pattern with "/" inside and
// no leading "/" matches the last names of a path anywhere below the root,
// a leading "/" anchors it, "**" spans any number of names, and --iexclude
// ignores case.
func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pat, abs string
		fold     bool
		want     bool
	}{
		{"adduser/examples", "/usr/share/doc/adduser/examples", false, true},
		{"adduser/examples", "/usr/share/doc/adduser/examples/x", false, false}, // the folder is left out, so x is never asked
		{"adduser/examples", "/usr/share/doc/adduser", false, false},
		{"adduser/examples", "/usr/share/doc/xadduser/examples", false, false},
		{"doc/*/examples", "/usr/share/doc/adduser/examples", false, true},
		{"/usr/share/doc/adduser/examples", "/usr/share/doc/adduser/examples", false, true},
		{"/share/doc", "/usr/share/doc", false, false}, // anchored at the root
		{"/usr/share/", "/usr/share", false, true},     // a trailing slash is ignored
		{"*.tmp", "/a/b/c.tmp", false, true},
		{"*.tmp", "/a/b/c.tmp.x", false, false},
		{"/home/*/.cache", "/home/u/.cache", false, true},
		{"/home/*/.cache", "/srv/home/u/.cache", false, false},
		{"/srv/**/*.log", "/srv/a/b/c/x.log", false, true},
		{"/srv/**/*.log", "/srv/x.log", false, true},
		{"/srv/**/*.log", "/var/x.log", false, false},
		{"a/**/b", "/x/a/b", false, true},
		{"a/**/b", "/x/a/m/n/b", false, true},
		{"a/**/b", "/x/a/m/n/c", false, false},
		{"**", "/anything/at/all", false, true},
		{"*.JPG", "/p/x.jpg", false, false},
		{"*.JPG", "/p/x.jpg", true, true},
		{"Photos/Raw", "/home/u/photos/raw", true, true},
		{"", "/a", false, false},
		{"/", "/a", false, false},
	} {
		if got := Match(c.pat, c.abs, c.fold); got != c.want {
			t.Errorf("Match(%q, %q, fold=%v) = %v, want %v", c.pat, c.abs, c.fold, got, c.want)
		}
	}
	if err := CheckPatterns([]string{"a/[b"}); err == nil {
		t.Error("a malformed part was accepted")
	}
}

// TestMatchCost: many "**" parts against a deep path stay cheap (the
// match is a table, not a backtracking search).
func TestMatchCost(t *testing.T) {
	deep := "/" + strings.Repeat("a/", 1000) + "b"
	pat := strings.Repeat("**/a/", 20) + "c"
	done := make(chan bool)
	go func() { done <- Match(pat, deep, false) }()
	select {
	case got := <-done:
		if got {
			t.Fatal("matched a path without c")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a pattern with 20 ** parts did not finish against a 1000-deep path")
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
