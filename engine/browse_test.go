package engine

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"coffer/engine/tree"
	"coffer/index"
)

// countingReader counts the trees read through a SnapshotReader.
type countingReader struct {
	SnapshotReader
	mu    sync.Mutex
	trees map[tree.ID]int
}

func (c *countingReader) Tree(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	c.mu.Lock()
	if c.trees == nil {
		c.trees = map[tree.ID]int{}
	}
	c.trees[id]++
	c.mu.Unlock()
	return c.SnapshotReader.Tree(ctx, id)
}

// browseFixture: a repository with two snapshots of src, before and after
// changes: "gone.txt" deleted, "new.txt" added, "docs/two.bin" changed,
// "small/b.txt" touched (metadata only).
type browseFixture struct {
	tn     *Tenant
	src    string
	a, b   *Snapshot
	srcRel string // src as a snapshot path, without the leading "/"
}

func newBrowseFixture(t *testing.T) *browseFixture {
	t.Helper()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	f := &browseFixture{tn: itTenant(t, e, "acme"), src: filepath.Join(t.TempDir(), "src")}
	f.srcRel = strings.TrimPrefix(f.src, "/")
	itBuildTree(t, f.src, []itEntry{
		{path: "one.bin", kind: 'f', size: 200 << 10},
		{path: "docs/two.bin", kind: 'f', size: 100 << 10},
		{path: "docs/deeper/three.log", kind: 'f', size: 7000},
		{path: "small/a.txt", kind: 'f', data: "alpha\n"},
		{path: "small/b.txt", kind: 'f', data: "beta\n"},
		{path: "gone.txt", kind: 'f', data: "going\n"},
		{path: "link", kind: 'l', target: "small/a.txt"},
		{path: "hard", kind: 'h', target: "small/a.txt"},
	})
	f.a = itBackup(t, f.tn, f.src)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(filepath.Join(f.src, "gone.txt")))
	must(os.WriteFile(filepath.Join(f.src, "new.txt"), []byte("new\n"), 0o644))
	must(os.WriteFile(filepath.Join(f.src, "docs/two.bin"), itRandBytes(99, 100<<10), 0o644))
	ts := unix.NsecToTimespec(time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano())
	must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(f.src, "small/b.txt"), []unix.Timespec{ts, ts}, 0))
	f.b = itBackup(t, f.tn, f.src)
	return f
}

// rel strips the source folder from a snapshot path.
func (f *browseFixture) rel(p string) string {
	return strings.TrimPrefix(strings.TrimPrefix(p, "/"+f.srcRel), "/")
}

func TestFindPatterns(t *testing.T) {
	ctx := context.Background()
	f := newBrowseFixture(t)
	both := []*Snapshot{f.a, f.b}
	for _, tc := range []struct {
		name  string
		globs []string
		full  bool
		snaps []*Snapshot
		want  []string // "a:path" or "b:path", path below src
	}{
		{"name glob", []string{"*.txt"}, false, both, []string{"a:gone.txt", "a:small/a.txt", "a:small/b.txt", "b:new.txt", "b:small/a.txt", "b:small/b.txt"}},
		{"exact name", []string{"three.log"}, false, both, []string{"a:docs/deeper/three.log", "b:docs/deeper/three.log"}},
		{"two patterns", []string{"gone.txt", "new.txt"}, false, both, []string{"a:gone.txt", "b:new.txt"}},
		{"folder name", []string{"deep*"}, false, []*Snapshot{f.b}, []string{"b:docs/deeper"}},
		{"character class", []string{"[ab].txt"}, false, []*Snapshot{f.a}, []string{"a:small/a.txt", "a:small/b.txt"}},
		{"full path", []string{"/*/*/src/docs/*"}, true, []*Snapshot{f.a}, []string{"a:docs/deeper", "a:docs/two.bin"}},
		{"full path, leading slash implies it", []string{"/*/*/src/small/b.txt"}, false, both, []string{"a:small/b.txt", "b:small/b.txt"}},
		{"no match", []string{"*.exe"}, false, both, nil},
		{"links", []string{"link", "hard"}, false, []*Snapshot{f.a}, []string{"a:hard", "a:link"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pats []Pattern
			for _, g := range tc.globs {
				// The fixture's source is /tmp/X/src: "*" stands for the
				// temporary folders.
				if tc.full || strings.HasPrefix(g, "/") {
					g = "/" + strings.TrimPrefix(filepath.Dir(f.srcRel), "/") + strings.TrimPrefix(g, "/*/*")
				}
				p, err := ParsePattern(g, tc.full)
				if err != nil {
					t.Fatal(err)
				}
				pats = append(pats, p)
			}
			var got []string
			err := Find(ctx, f.tn.Reader(), tc.snaps, FindOptions{Patterns: pats}, func(m FindMatch) error {
				tag := "a"
				if m.Snapshot == f.b.ID {
					tag = "b"
				}
				got = append(got, tag+":"+f.rel(m.Path))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"[", "", "small/*"} {
		if _, err := ParsePattern(bad, false); !errors.Is(err, ErrInvalid) {
			t.Fatalf("bad pattern %q: %v", bad, err)
		}
	}
	// Time bounds on the entries' modification times.
	p, _ := ParsePattern("*.txt", false)
	var got []string
	err := Find(ctx, f.tn.Reader(), []*Snapshot{f.b}, FindOptions{Patterns: []Pattern{p}, Oldest: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Newest: time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)},
		func(m FindMatch) error { got = append(got, f.rel(m.Path)); return nil })
	if err != nil || !slices.Equal(got, []string{"small/b.txt"}) {
		t.Fatalf("time bounds: %q %v", got, err)
	}
}

// TestFindReadsEachTreeOnce: a search over many snapshots of one tree
// reads each distinct tree once, not once per snapshot.
func TestFindReadsEachTreeOnce(t *testing.T) {
	ctx := context.Background()
	f := newBrowseFixture(t)
	var snaps []*Snapshot
	for range 6 {
		snaps = append(snaps, itBackup(t, f.tn, f.src))
	}
	snaps = append(snaps, f.a, f.b)
	for _, full := range []bool{false, true} {
		cr := &countingReader{SnapshotReader: f.tn.Reader()}
		p, _ := ParsePattern("*.txt", full)
		n := 0
		if err := Find(ctx, cr, snaps, FindOptions{Patterns: []Pattern{p}}, func(FindMatch) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		for id, k := range cr.trees {
			if k != 1 {
				t.Errorf("full=%v: tree %x read %d times", full, id[:4], k)
			}
		}
		if !full && n != 6*3+2*3 {
			t.Errorf("matches: %d", n)
		}
	}
}

func TestDiffClasses(t *testing.T) {
	ctx := context.Background()
	f := newBrowseFixture(t)
	for _, tc := range []struct {
		metadata bool
		want     []string
	}{
		{false, []string{"+ new.txt", "- gone.txt", "M docs/two.bin"}},
		{true, []string{"+ new.txt", "- gone.txt", "M docs/two.bin", "U ", "U small/b.txt"}},
	} {
		var got []string
		st, err := Diff(ctx, f.tn.Reader(), f.a, f.b, DiffOptions{Metadata: tc.metadata}, func(c DiffChange) error {
			got = append(got, c.Kind+" "+f.rel(c.Path))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Folders above the source (tmp/…) changed times too: keep the
		// lines inside it.
		got = slices.DeleteFunc(got, func(l string) bool { return strings.HasPrefix(l[2:], "/") || strings.HasPrefix(l[2:], "tmp") })
		slices.Sort(got)
		slices.Sort(tc.want)
		if !slices.Equal(got, tc.want) {
			t.Errorf("metadata=%v: got %q, want %q", tc.metadata, got, tc.want)
		}
		if st.Added != 1 || st.Removed != 1 || st.Modified != 1 || st.AddedBytes != 4 || st.RemovedBytes != 6 {
			t.Errorf("stats %+v", st)
		}
	}
	// A snapshot against itself: nothing, and no tree read (same root).
	cr := &countingReader{SnapshotReader: f.tn.Reader()}
	st, err := Diff(ctx, cr, f.a, f.a, DiffOptions{Metadata: true}, func(c DiffChange) error { return errors.New("a change") })
	if err != nil || *st != (DiffStats{}) || len(cr.trees) != 0 {
		t.Fatalf("self diff: %+v %v, %d trees read", st, err, len(cr.trees))
	}
	// A removed folder lists what is below it; a type change is - and +.
	if err := os.RemoveAll(filepath.Join(f.src, "docs")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.src, "docs"), []byte("now a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := itBackup(t, f.tn, f.src)
	var got []string
	if _, err := Diff(ctx, f.tn.Reader(), f.b, c, DiffOptions{}, func(c DiffChange) error {
		got = append(got, c.Kind+" "+f.rel(c.Path))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"- docs/", "- docs/deeper/", "- docs/deeper/three.log", "- docs/two.bin", "+ docs"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestStatsNumbers(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	src := filepath.Join(t.TempDir(), "src")
	itBuildTree(t, src, []itEntry{
		{path: "a.bin", kind: 'f', size: 100000},
		{path: "d/b.bin", kind: 'f', size: 50000},
		{path: "d/copy.bin", kind: 'f', size: 0, data: ""},
		{path: "d/l", kind: 'l', target: "a.bin"},
		{path: "h", kind: 'h', target: "a.bin"},
	})
	// The same content twice under other names: one set of blobs.
	data, _ := os.ReadFile(filepath.Join(src, "d/b.bin"))
	if err := os.WriteFile(filepath.Join(src, "d/copy.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s1 := itBackup(t, tn, src)
	s2 := itBackup(t, tn, src)
	folders := uint64(strings.Count(src, "/")) // tmp/…/src above the entries
	st, err := Stats(ctx, tn.Reader(), []*Snapshot{s1, s2}, "")
	if err != nil {
		t.Fatal(err)
	}
	wantBytes := uint64(2 * (100000 + 50000 + 50000))
	if st.Snapshots != 2 || st.Files != 2*4 || st.Dirs != 2*(folders+1) || st.Other != 2 || st.RestoreBytes != wantBytes {
		t.Fatalf("restore-size: %+v (folders %d)", st, folders)
	}
	if st.UniqueBytes != 150000 || st.Blobs == 0 || st.StoredBytes == 0 || st.StoredBytes > 160000 {
		t.Fatalf("raw-data: %+v", st)
	}
	if r := float64(wantBytes) / 150000; st.DedupRatio != r {
		t.Fatalf("ratio %v, want %v", st.DedupRatio, r)
	}
	rs, err := Stats(ctx, tn.Reader(), []*Snapshot{s1}, StatsRestoreSize)
	if err != nil || rs.RestoreBytes != wantBytes/2 || rs.Blobs != 0 {
		t.Fatalf("restore-size only: %+v %v", rs, err)
	}
	if _, err := Stats(ctx, tn.Reader(), nil, "bogus"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad mode: %v", err)
	}
}

func TestArchiveTarZip(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	src := filepath.Join(t.TempDir(), "src")
	itBuildTree(t, src, []itEntry{
		{path: "big.bin", kind: 'f', size: 3 << 20, uid: 1234, gid: 567, mode: 0o640},
		{path: "d/small.txt", kind: 'f', data: "hello\n", xattrs: map[string]string{"user.k": "v"}},
		{path: "d/empty", kind: 'f'},
		{path: "d/link", kind: 'l', target: "../big.bin"},
		{path: "d/hard", kind: 'h', target: "d/small.txt"},
		{path: "d/fifo", kind: 'p'},
		{path: "sub", kind: 'd', mode: 0o1750},
	})
	s := itBackup(t, tn, src)

	var buf bytes.Buffer
	st, err := tn.DumpArchive(ctx, s, src, ArchiveTar, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 3 || st.Bytes != 3<<20+6 {
		t.Fatalf("stats %+v", st)
	}
	tr := tar.NewReader(&buf)
	seen := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = h
		p := filepath.Join(filepath.Dir(src), h.Name)
		var fi unix.Stat_t
		if err := unix.Lstat(p, &fi); err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if h.ModTime.UnixNano() != fi.Mtim.Nano() || uint32(h.Mode) != fi.Mode&0o7777 || h.Uid != int(fi.Uid) || h.Gid != int(fi.Gid) {
			t.Errorf("%s: header %v %o %d:%d, source %v %o %d:%d", h.Name, h.ModTime, h.Mode, h.Uid, h.Gid, time.Unix(0, fi.Mtim.Nano()), fi.Mode&0o7777, fi.Uid, fi.Gid)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			got, _ := io.ReadAll(tr)
			want, _ := os.ReadFile(p)
			if !bytes.Equal(got, want) {
				t.Errorf("%s: content differs", h.Name)
			}
		case tar.TypeSymlink:
			if target, _ := os.Readlink(p); h.Linkname != target {
				t.Errorf("%s: link to %q", h.Name, h.Linkname)
			}
		}
	}
	if h := seen["src/d/hard"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "src/d/small.txt" {
		// The walk is in name order: "hard" comes before "small.txt",
		// so "hard" carries the content and "small.txt" links to it.
		if h2 := seen["src/d/small.txt"]; h == nil || h2 == nil || h.Typeflag != tar.TypeReg || h2.Typeflag != tar.TypeLink || h2.Linkname != "src/d/hard" {
			t.Errorf("hard link: %+v / %+v", h, h2)
		}
	}
	for _, name := range []string{"src/", "src/d/", "src/sub/", "src/big.bin", "src/d/fifo", "src/d/empty", "src/d/link"} {
		if seen[name] == nil {
			t.Errorf("%s missing from the tar (have %v)", name, slices.Sorted(mapsKeys(seen)))
		}
	}
	if h := seen["src/d/fifo"]; h != nil && h.Typeflag != tar.TypeFifo {
		t.Errorf("fifo type %c", h.Typeflag)
	}
	if itXattrsSupported(src) {
		for _, n := range []string{"src/d/small.txt", "src/d/hard"} {
			if h := seen[n]; h != nil && h.Typeflag == tar.TypeReg && h.PAXRecords["SCHILY.xattr.user.k"] != "v" {
				t.Errorf("%s xattrs: %v", n, h.PAXRecords)
			}
		}
	}

	// zip: contents, modes, times; the fifo is skipped.
	buf.Reset()
	st, err = WriteArchive(ctx, tn.Reader(), s, src+"/d", ArchiveZip, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != 1 {
		t.Errorf("zip stats %+v", st)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, zf := range zr.File {
		names[zf.Name] = true
		p := filepath.Join(src, zf.Name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if zf.Mode() != fi.Mode() || !zf.Modified.Equal(fi.ModTime().Truncate(time.Second)) && zf.Modified.Unix() != fi.ModTime().Unix() {
			t.Errorf("%s: %v %v, source %v %v", zf.Name, zf.Mode(), zf.Modified, fi.Mode(), fi.ModTime())
		}
		rc, _ := zf.Open()
		got, _ := io.ReadAll(rc)
		rc.Close()
		var want []byte
		if fi.Mode()&os.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			want = []byte(l)
		} else if fi.Mode().IsRegular() {
			want, _ = os.ReadFile(p)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: zip content differs", zf.Name)
		}
	}
	for _, n := range []string{"d/", "d/small.txt", "d/hard", "d/empty", "d/link"} {
		if !names[n] {
			t.Errorf("%s missing from the zip (have %v)", n, names)
		}
	}
	// A file: an archive of that file.
	buf.Reset()
	if _, err := WriteArchive(ctx, tn.Reader(), s, src+"/big.bin", ArchiveTar, &buf); err != nil {
		t.Fatal(err)
	}
	if h, err := tar.NewReader(&buf).Next(); err != nil || h.Name != "big.bin" || h.Size != 3<<20 {
		t.Fatalf("one file: %+v %v", h, err)
	}
	// The dump is audited.
	found := false
	e.AuditLog(ctx, func(a AuditEntry) error {
		found = found || a.Action == "dump" && strings.Contains(a.Detail, "archive=1")
		return nil
	})
	if !found {
		t.Fatal("no dump entry with archive=1")
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestContentGroups: a file's content is read in groups of nearby blobs,
// not blob by blob.
func TestContentGroups(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{PackSize: 8 << 20})
	e := itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	src := filepath.Join(t.TempDir(), "src")
	itBuildTree(t, src, []itEntry{{path: "big.bin", kind: 'f', size: 12 << 20}})
	s := itBackup(t, tn, src)
	gr := &groupCounter{SnapshotReader: tn.Reader()}
	var buf bytes.Buffer
	if _, err := WriteArchive(ctx, gr, s, src+"/big.bin", ArchiveTar, &buf); err != nil {
		t.Fatal(err)
	}
	// The chunk sizes depend on the repository's random polynomial: a
	// group of several blobs is all that can be asked of them.
	if gr.groups >= gr.blobs || gr.largest < 2 {
		t.Fatalf("%d blobs in %d groups, the largest of %d", gr.blobs, gr.groups, gr.largest)
	}
}

// TestReadWindowOrder: blobs of one pack sealed out of file order are read
// in one group, and come back in file order.
func TestReadWindowOrder(t *testing.T) {
	var pack index.PackID
	pack[0] = 7
	var other index.PackID
	other[0] = 8
	places := []BlobPlace{
		{Pack: pack, Offset: 3000, Length: 1000, Size: 1},
		{Pack: pack, Offset: 0, Length: 1000, Size: 1},
		{Pack: other, Offset: 0, Length: 10, Size: 1},
		{Pack: pack, Offset: 1000, Length: 2000, Size: 1},
		{Pack: pack, Offset: 50 << 20, Length: 10, Size: 1}, // far: a group of its own
	}
	for i := range places {
		places[i].ID[0] = byte(i)
	}
	fr := &fakeGroups{}
	out, err := readWindow(context.Background(), fr, places)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range out {
		if len(b) != 1 || b[0] != byte(i) {
			t.Fatalf("blob %d came back as %v", i, b)
		}
	}
	want := [][]int{{1, 3, 0}, {4}, {2}}
	if len(fr.calls) != len(want) {
		t.Fatalf("groups %v, want %v", fr.calls, want)
	}
	for i := range want {
		if !slices.Equal(fr.calls[i], want[i]) {
			t.Fatalf("groups %v, want %v", fr.calls, want)
		}
	}
}

// fakeGroups answers ReadGroup with each blob's ID byte and records the
// groups asked for (by ID byte).
type fakeGroups struct {
	memReader
	calls [][]int
}

func (f *fakeGroups) ReadGroup(_ context.Context, grp []BlobPlace, fn func(int, []byte) error) error {
	var ids []int
	for i, p := range grp {
		ids = append(ids, int(p.ID[0]))
		if err := fn(i, []byte{p.ID[0]}); err != nil {
			return err
		}
	}
	f.calls = append(f.calls, ids)
	return nil
}

type groupCounter struct {
	SnapshotReader
	mu                     sync.Mutex
	groups, blobs, largest int
}

func (g *groupCounter) ReadGroup(ctx context.Context, grp []BlobPlace, fn func(int, []byte) error) error {
	g.mu.Lock()
	g.groups++
	g.blobs += len(grp)
	g.largest = max(g.largest, len(grp))
	g.mu.Unlock()
	return g.SnapshotReader.ReadGroup(ctx, grp, fn)
}

func TestTagAudited(t *testing.T) {
	ctx := context.Background()
	f := newBrowseFixture(t)
	tn := f.tn
	const marker = "tagmarker-b7e1"
	rep, err := tn.Tag(ctx, []string{f.a.ID, f.b.ID[:8]}, TagOptions{Add: []string{marker, "keep"}})
	if err != nil || rep.Changed != 2 {
		t.Fatalf("add: %+v %v", rep, err)
	}
	rep, err = tn.Tag(ctx, []string{f.a.ID}, TagOptions{Remove: []string{"keep"}})
	if err != nil || rep.Changed != 1 || !slices.Equal(rep.Snapshots[0].Tags, []string{marker}) {
		t.Fatalf("remove: %+v %v", rep, err)
	}
	rep, err = tn.Tag(ctx, []string{f.b.ID}, TagOptions{Replace: true, Set: []string{"only"}})
	if err != nil || !slices.Equal(rep.Snapshots[0].Tags, []string{"only"}) {
		t.Fatalf("set: %+v %v", rep, err)
	}
	rep, err = tn.Tag(ctx, []string{f.b.ID}, TagOptions{Add: []string{"only"}})
	if err != nil || rep.Changed != 0 {
		t.Fatalf("no change: %+v %v", rep, err)
	}
	for _, bad := range []TagOptions{{}, {Add: []string{""}}, {Add: []string{"a,b"}}, {Add: []string{"x\ny"}}} {
		if _, err := tn.Tag(ctx, []string{f.b.ID}, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	ss, err := tn.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string][]string{}
	for _, s := range ss {
		tags[s.ID] = s.Tags
	}
	if !slices.Equal(tags[f.a.ID], []string{marker}) || !slices.Equal(tags[f.b.ID], []string{"only"}) {
		t.Fatalf("tags after: %v", tags)
	}
	// The drives hold the new version: what a rebuild would take.
	var sid [16]byte
	decodeHexInto(sid[:], f.a.ID)
	best, err := tn.e.newestOnDrives(ctx, snapshotRecordName(tn.id, sid), recSnapshot, []*[KeySize]byte{&tn.keys.meta}, tn.id)
	if err != nil || best == nil || best.Version != 3 {
		t.Fatalf("record on the drives: %+v %v", best, err)
	}
	rec, err := tn.e.db.Snapshot(index.TenantID(tn.id), sid)
	if err != nil || rec.Version != 3 {
		t.Fatalf("index: %+v %v", rec, err)
	}
	// Audited, with counts and IDs, never the tags.
	var entries []AuditEntry
	tn.e.AuditLog(ctx, func(a AuditEntry) error {
		if a.Action == "tag" {
			entries = append(entries, a)
		}
		if strings.Contains(a.Detail, marker) {
			t.Errorf("the audit entry %d holds a tag: %s", a.Seq, a.Detail)
		}
		return nil
	})
	if len(entries) != 4 || entries[0].Outcome != "ok" || !strings.Contains(entries[0].Detail, "changed=2 unchanged=0 snapshots="+f.a.ID+":"+f.b.ID) {
		t.Fatalf("tag entries: %+v", entries)
	}
	if rep, err := tn.e.VerifyAudit(ctx); err != nil {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	// Nothing of the tag in plaintext on the drives.
	itNoPlaintext(t, tn.e.dir, marker)
}

// itNoPlaintext fails when marker appears in any file below dir.
func itNoPlaintext(t *testing.T, dir, marker string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s holds %q in plaintext", p, marker)
		}
		return nil
	})
}

func TestRewritePruneRemovesData(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	src := filepath.Join(t.TempDir(), "src")
	itBuildTree(t, src, []itEntry{
		{path: "keep/a.bin", kind: 'f', size: 300 << 10},
		{path: "keep/b.txt", kind: 'f', data: "bee\n"},
		{path: "keep/first", kind: 'f', data: "linked content\n"},
		{path: "keep/second", kind: 'h', target: "keep/first"},
	})
	s1 := itBackup(t, tn, src)
	// The personal file arrives in the second backup: its blobs are in
	// packs of their own.
	personal := itRandBytes(4242, 400<<10)
	if err := os.MkdirAll(filepath.Join(src, "alice"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "alice", "cv.pdf"), personal, 0o644); err != nil {
		t.Fatal(err)
	}
	s2 := itBackup(t, tn, src)
	// Its blobs and their packs.
	n, _, err := tn.lookup(ctx, s2, src+"/alice/cv.pdf")
	if err != nil {
		t.Fatal(err)
	}
	packs := map[index.PackID]bool{}
	for _, id := range n.Content {
		loc, ok, err := tn.e.db.Blob(tn.id, index.BlobID(id))
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		packs[loc.Pack] = true
	}

	exc, _ := ParsePattern("alice", false)
	dry, err := tn.Rewrite(ctx, nil, RewriteOptions{Exclude: []Pattern{exc}, DryRun: true})
	if err != nil || dry.Rewritten != 1 || dry.Unchanged != 1 || dry.Snapshots[1].New != "" {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	rep, err := tn.Rewrite(ctx, nil, RewriteOptions{Exclude: []Pattern{exc}, Forget: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rewritten != 1 || rep.Unchanged != 1 || rep.Forgotten != 1 || rep.Removed != 1 || rep.Snapshots[1].ID != s2.ID || rep.Snapshots[1].New == "" {
		t.Fatalf("report %+v", rep)
	}
	ss, _ := tn.Snapshots(ctx)
	if len(ss) != 2 || ss[0].ID != s1.ID {
		t.Fatalf("snapshots after: %+v", ss)
	}
	ns := ss[1]
	if ns.Original != s2.ID || !ns.Time.Equal(s2.Time) || ns.Host != s2.Host || !slices.Equal(ns.Paths, s2.Paths) || ns.Stats.Files != 4 {
		t.Fatalf("new snapshot %+v", ns)
	}
	if _, _, err := tn.lookup(ctx, ns, src+"/alice"); !errors.Is(err, ErrPathNotFound) {
		t.Fatalf("alice in the new snapshot: %v", err)
	}
	// The rest restores as it was.
	got := itRestore(t, tn, ns, src)
	if b, _ := os.ReadFile(filepath.Join(got, "keep/second")); string(b) != "linked content\n" {
		t.Fatalf("restored hard link: %q", b)
	}

	if _, err := tn.Prune(ctx, PruneOptions{MaxUnusedPercent: 1}); err != nil {
		t.Fatal(err)
	}
	for _, id := range n.Content {
		if _, ok, _ := tn.e.db.Blob(tn.id, index.BlobID(id)); ok {
			t.Errorf("blob %x still indexed", id[:4])
		}
	}
	for _, sh := range itShards(t, dir) {
		if packs[index.PackID(sh.pack)] {
			t.Errorf("a shard of pack %x, which held the personal file, is still on %s", sh.pack[:4], sh.drive)
		}
	}
	if cr, err := tn.e.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check: %+v %v", cr, err)
	}
	// Audited with counts only; the new snapshot has its backup entry.
	var details []string
	tn.e.AuditLog(ctx, func(a AuditEntry) error {
		if a.Action == "rewrite" || a.Action == "forget" || strings.Contains(a.Detail, "rewrite=1") {
			details = append(details, a.Action+" "+a.Detail)
		}
		return nil
	})
	want := []string{"backup snapshot=" + ns.ID + " rewrite=1", "forget forgotten=1", "rewrite rewritten=1 unchanged=1 removed=1 forgotten=1"}
	if len(details) != 3 {
		t.Fatalf("audit: %q", details)
	}
	for i, w := range want {
		if !strings.HasPrefix(details[i], w) {
			t.Errorf("audit %d: %q, want %q…", i, details[i], w)
		}
	}
	if rep, err := tn.e.VerifyAudit(ctx); err != nil {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// TestRewriteHardLinkFirstNameExcluded: when the first name of an inode is
// excluded, the next name takes the content and later names link to it.
func TestRewriteHardLinkFirstNameExcluded(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	tn := itTenant(t, e, "acme")
	src := filepath.Join(t.TempDir(), "src")
	itBuildTree(t, src, []itEntry{
		{path: "a/secret", kind: 'f', data: "shared\n"},
		{path: "b/one", kind: 'h', target: "a/secret"},
		{path: "b/two", kind: 'h', target: "a/secret"},
	})
	s := itBackup(t, tn, src)
	exc, _ := ParsePattern("secret", false)
	rep, err := tn.Rewrite(ctx, []string{s.ID}, RewriteOptions{Exclude: []Pattern{exc}})
	if err != nil || rep.Rewritten != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	ns, err := tn.FindSnapshot(ctx, rep.Snapshots[0].New)
	if err != nil {
		t.Fatal(err)
	}
	got := itRestore(t, tn, ns, src)
	var st1, st2 unix.Stat_t
	if err := unix.Stat(filepath.Join(got, "b/one"), &st1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(filepath.Join(got, "b/two"), &st2); err != nil {
		t.Fatal(err)
	}
	if st1.Ino != st2.Ino {
		t.Errorf("b/one and b/two are not one inode")
	}
	if b, _ := os.ReadFile(filepath.Join(got, "b/two")); string(b) != "shared\n" {
		t.Errorf("content %q", b)
	}
	if _, err := os.Stat(filepath.Join(got, "a/secret")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a/secret restored: %v", err)
	}
	// The old snapshot stays without --forget.
	if _, err := tn.FindSnapshot(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
}

// FuzzBrowseTree: find, diff, stats and a tar dump of any tree that
// decodes (as a hostile server may send it) end with a result or an error,
// never a panic or an endless walk.
func FuzzBrowseTree(f *testing.F) {
	good, _ := (&tree.Tree{Nodes: []tree.Node{
		{Name: "a", Type: tree.File, Size: 0, Mode: 0o644},
		{Name: "d", Type: tree.Dir, Mode: 0o755},
		{Name: "h", Type: tree.Hardlink, LinkTarget: "a"},
		{Name: "l", Type: tree.Symlink, LinkTarget: "/x"},
	}}).Encode()
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := tree.Decode(b)
		if err != nil {
			return
		}
		ctx := context.Background()
		var root tree.ID
		root[0] = 1
		m := memReader{trees: map[tree.ID]*tree.Tree{root: tr, {}: {}}}
		s := &Snapshot{ID: strings.Repeat("ab", 16), Tree: hex.EncodeToString(root[:])}
		empty := &Snapshot{ID: strings.Repeat("cd", 16), Tree: hex.EncodeToString(make([]byte, 32))}
		p, _ := ParsePattern("*", false)
		_ = Find(ctx, m, []*Snapshot{s}, FindOptions{Patterns: []Pattern{p}}, func(FindMatch) error { return nil })
		_, _ = Diff(ctx, m, empty, s, DiffOptions{Metadata: true}, func(DiffChange) error { return nil })
		_, _ = Stats(ctx, m, []*Snapshot{s}, StatsRestoreSize)
		_, _ = WriteArchive(ctx, m, s, "/", ArchiveTar, io.Discard)
		_, _ = WriteArchive(ctx, m, s, "/", ArchiveZip, io.Discard)
	})
}

// TestTagAfterCrash: a tag whose index batch was lost (a crash after the
// record reached the drives) leaves the drives a version ahead; the next
// tag writes the version after the drives' newest, so no two different
// records share a version.
func TestTagAfterCrash(t *testing.T) {
	ctx := context.Background()
	f := newBrowseFixture(t)
	tn := f.tn
	var sid [16]byte
	decodeHexInto(sid[:], f.a.ID)
	name := snapshotRecordName(tn.id, sid)
	c := *f.a
	c.ID, c.Tags = "", []string{"lost"}
	body, _ := json.Marshal(&c)
	if err := tn.e.rp().PutRecord(ctx, name, sealRecord(&tn.keys.meta, recSnapshot, 0, 2, tn.id, name, body)); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.Tag(ctx, []string{f.a.ID}, TagOptions{Add: []string{"after"}}); err != nil {
		t.Fatal(err)
	}
	best, err := tn.e.newestOnDrives(ctx, name, recSnapshot, []*[KeySize]byte{&tn.keys.meta}, tn.id)
	if err != nil || best == nil || best.Version != 3 {
		t.Fatalf("drives: %+v %v", best, err)
	}
	if rec, err := tn.e.db.Snapshot(index.TenantID(tn.id), sid); err != nil || rec.Version != 3 {
		t.Fatalf("index: %+v %v", rec, err)
	}
	s, _ := tn.FindSnapshot(ctx, f.a.ID)
	if !slices.Equal(s.Tags, []string{"after"}) {
		t.Fatalf("tags %q", s.Tags)
	}
}
