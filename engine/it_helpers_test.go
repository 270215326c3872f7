package engine

// Helpers of the engine's integration tests (it_*_test.go): repositories in
// temporary folders, source trees described by tables, a tree comparator, and
// access to the shard files on the drives for fault injection.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"coffer/index"
	"coffer/repo"
)

// itPackSize is the smallest pack size Init accepts: small test data then
// spreads over several packs.
const itPackSize = 1 << 20

// itInit creates a repository in a new temporary folder and returns its path.
// A zero PackSize means itPackSize; drives given without a path get
// DIR/drives/dN, like the default ones.
func itInit(t *testing.T, o InitOptions) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	if o.PackSize == 0 {
		o.PackSize = itPackSize
	}
	o.Drives = slices.Clone(o.Drives)
	for i := range o.Drives {
		if o.Drives[i].Path == "" {
			o.Drives[i].Path = filepath.Join(dir, "drives", fmt.Sprintf("d%d", i+1))
		}
	}
	if _, err := Init(context.Background(), dir, o); err != nil {
		t.Fatalf("Init %s: %v", dir, err)
	}
	return dir
}

// itOpen opens the repository in dir and closes it when the test ends.
// Closing twice is harmless, so a test may close it earlier.
func itOpen(t *testing.T, dir string) *Engine {
	t.Helper()
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open %s: %v", dir, err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// itTenant creates the tenant name if it does not exist yet and opens it.
func itTenant(t *testing.T, e *Engine, name string) *Tenant {
	t.Helper()
	ctx := context.Background()
	if _, err := e.CreateTenant(ctx, name, TenantOptions{}); err != nil && !errors.Is(err, ErrTenantExists) {
		t.Fatalf("CreateTenant %q: %v", name, err)
	}
	tn, err := e.OpenTenant(ctx, name)
	if err != nil {
		t.Fatalf("OpenTenant %q: %v", name, err)
	}
	return tn
}

// itBackup backs up paths and fails the test on any error.
func itBackup(t *testing.T, tn *Tenant, paths ...string) *Snapshot {
	t.Helper()
	s, err := tn.Backup(context.Background(), paths, BackupOptions{Host: "it-host"})
	if err != nil {
		t.Fatalf("Backup %v: %v", paths, err)
	}
	return s
}

// itRestore restores s into a new temporary folder and returns the path at
// which the source folder src reappears (snapshots keep absolute paths).
func itRestore(t *testing.T, tn *Tenant, s *Snapshot, src string) string {
	t.Helper()
	target := t.TempDir()
	st, err := tn.Restore(context.Background(), s, target, RestoreOptions{})
	if err != nil {
		t.Fatalf("Restore %s: %v", s.ID[:8], err)
	}
	if len(st.Warnings) > 0 {
		t.Errorf("Restore %s: warnings: %q", s.ID[:8], st.Warnings)
	}
	return filepath.Join(target, src)
}

// itRandBytes returns n pseudo-random bytes, the same for the same seed.
func itRandBytes(seed uint64, n int) []byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// itEntry describes one entry of a source tree. Entries are created in table
// order, so a parent folder comes before its children (missing parents are
// created with mode 0755).
type itEntry struct {
	path   string // relative, "/"-separated; may hold any bytes except NUL
	kind   byte   // 'f' file, 'd' folder, 'l' symlink, 'h' hard link, 'p' FIFO, 's' sparse file
	size   int    // 'f': that many pseudo-random bytes (seeded by the entry index); 's': apparent size
	data   string // 'f' with size 0: literal content; 's': bytes written at sparseAt
	target string // 'l': link target (raw bytes); 'h': relative path of the first name
	mode   uint32 // permission bits with setuid/setgid/sticky; 0 = leave as created
	uid    int    // owner to set when non-zero (tests run as root)
	gid    int
	xattrs map[string]string // user.* attributes
}

// sparseAt is where a sparse entry's data bytes are written.
const sparseAt = 1 << 20

// itBuildTree creates entries below root (which it creates), then sets every
// entry's mtime (and the root's) to distinct nanosecond values, deepest first
// so folder times stick. It reports whether xattrs were set: if the file
// system refuses user.* xattrs, they are left out.
func itBuildTree(t *testing.T, root string, entries []itEntry) (xattrs bool) {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	xattrs = itXattrsSupported(root)
	for i, en := range entries {
		p := filepath.Join(root, filepath.FromSlash(en.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch en.kind {
		case 'f':
			data := []byte(en.data)
			if en.size > 0 {
				data = itRandBytes(uint64(i+1)*7919, en.size)
			}
			err = os.WriteFile(p, data, 0o644)
		case 'd':
			err = os.Mkdir(p, 0o755)
		case 'l':
			err = os.Symlink(en.target, p)
		case 'h':
			err = os.Link(filepath.Join(root, filepath.FromSlash(en.target)), p)
		case 'p':
			err = unix.Mkfifo(p, 0o644)
		case 's':
			err = itMakeSparse(p, int64(en.size), []byte(en.data))
		default:
			t.Fatalf("entry %q: unknown kind %q", en.path, en.kind)
		}
		if err != nil {
			t.Fatalf("create %q: %v", en.path, err)
		}
		if en.uid != 0 || en.gid != 0 {
			if err := os.Lchown(p, en.uid, en.gid); err != nil {
				t.Fatalf("chown %q: %v", en.path, err)
			}
		}
		if xattrs {
			for _, name := range itSortedKeys(en.xattrs) {
				if err := unix.Lsetxattr(p, name, []byte(en.xattrs[name]), 0); err != nil {
					t.Fatalf("setxattr %q %s: %v", en.path, name, err)
				}
			}
		}
		if en.mode != 0 { // after chown, which clears setuid/setgid
			if err := unix.Chmod(p, en.mode); err != nil {
				t.Fatalf("chmod %q: %v", en.path, err)
			}
		}
	}
	itSetTimes(t, root)
	return xattrs
}

func itMakeSparse(p string, size int64, data []byte) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteAt(data, sparseAt); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func itXattrsSupported(dir string) bool {
	p := filepath.Join(dir, ".xattr-probe")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		return false
	}
	defer os.Remove(p)
	return unix.Setxattr(p, "user.probe", []byte("x"), 0) == nil
}

// itSetTimes gives every entry below root, and root, its own mtime with
// nanoseconds, deepest entries first.
func itSetTimes(t *testing.T, root string) {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.SliceStable(paths, func(i, j int) bool {
		return strings.Count(paths[i], "/") > strings.Count(paths[j], "/")
	})
	base := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC).UnixNano()
	for i, p := range paths {
		ts := unix.NsecToTimespec(base + int64(i)*1_000_000_007)
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("set times of %s: %v", p, err)
		}
	}
}

func itSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// itFileInfo is what itCompareTrees compares of one entry.
type itFileInfo struct {
	st     unix.Stat_t
	target string
	xattrs map[string]string
}

func itScan(t *testing.T, root string) map[string]itFileInfo {
	t.Helper()
	out := map[string]itFileInfo{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var fi itFileInfo
		if err := unix.Lstat(p, &fi.st); err != nil {
			return err
		}
		if fi.st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if fi.target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		fi.xattrs = itXattrs(p)
		out[rel] = fi
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	return out
}

func itXattrs(p string) map[string]string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	out := map[string]string{}
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		out[name] = string(v[:m])
	}
	return out
}

// itCompareTrees reports every difference between the trees at src and dst:
// the set of names, type, permission bits (with setuid, setgid, sticky),
// owner, mtime in nanoseconds, size and content of files, symlink targets,
// xattrs, and the grouping of names into hard-linked inodes.
func itCompareTrees(t *testing.T, src, dst string) {
	t.Helper()
	a, b := itScan(t, src), itScan(t, dst)
	errs := 0
	report := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 30 {
			t.Errorf(format, args...)
		}
	}
	for _, rel := range itSortedKeys(a) {
		if _, ok := b[rel]; !ok {
			report("%q: missing after restore", rel)
		}
	}
	for _, rel := range itSortedKeys(b) {
		if _, ok := a[rel]; !ok {
			report("%q: restored but not in the source", rel)
		}
	}
	// Hard-link groups: source inode → names, restored inode → names.
	srcGroups, dstGroups := map[uint64][]string{}, map[uint64][]string{}
	for _, rel := range itSortedKeys(a) {
		x, ok := b[rel]
		if !ok {
			continue
		}
		s, d := a[rel].st, x.st
		if s.Mode&unix.S_IFMT != d.Mode&unix.S_IFMT {
			report("%q: type %o, restored %o", rel, s.Mode&unix.S_IFMT, d.Mode&unix.S_IFMT)
			continue
		}
		typ := s.Mode & unix.S_IFMT
		if typ != unix.S_IFLNK && s.Mode&0o7777 != d.Mode&0o7777 {
			report("%q: mode %04o, restored %04o", rel, s.Mode&0o7777, d.Mode&0o7777)
		}
		if s.Uid != d.Uid || s.Gid != d.Gid {
			report("%q: owner %d:%d, restored %d:%d", rel, s.Uid, s.Gid, d.Uid, d.Gid)
		}
		if s.Mtim.Nano() != d.Mtim.Nano() {
			report("%q: mtime %s, restored %s", rel, time.Unix(0, s.Mtim.Nano()).UTC().Format(time.RFC3339Nano),
				time.Unix(0, d.Mtim.Nano()).UTC().Format(time.RFC3339Nano))
		}
		if a[rel].target != x.target {
			report("%q: symlink target %q, restored %q", rel, a[rel].target, x.target)
		}
		if !itMapsEqual(a[rel].xattrs, x.xattrs) {
			report("%q: xattrs %q, restored %q", rel, a[rel].xattrs, x.xattrs)
		}
		if typ == unix.S_IFREG {
			if s.Size != d.Size {
				report("%q: size %d, restored %d", rel, s.Size, d.Size)
			} else if err := itSameContent(filepath.Join(src, rel), filepath.Join(dst, rel)); err != nil {
				report("%q: %v", rel, err)
			}
			srcGroups[s.Ino] = append(srcGroups[s.Ino], rel)
			dstGroups[d.Ino] = append(dstGroups[d.Ino], rel)
		}
	}
	canon := func(g map[uint64][]string) []string {
		var out []string
		for _, names := range g {
			sort.Strings(names)
			out = append(out, strings.Join(names, " = "))
		}
		sort.Strings(out)
		return out
	}
	if sg, dg := canon(srcGroups), canon(dstGroups); !slices.Equal(sg, dg) {
		report("hard-link grouping differs:\nsource:   %q\nrestored: %q", sg, dg)
	}
	if errs > 30 {
		t.Errorf("... and %d more differences", errs-30)
	}
}

func itMapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// itSameContent compares two files' bytes in steps, without holding either.
func itSameContent(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("content differs in the MiB at offset %d", off)
		}
		if ea != nil || eb != nil {
			if (ea == nil) != (eb == nil) {
				return fmt.Errorf("lengths differ after offset %d", off)
			}
			return nil
		}
		off += int64(na)
	}
}

// itModestTree is a source tree of about 3.5 MiB in several files and
// folders: with 1 MiB packs it fills a few data packs and a tree pack.
func itModestTree() []itEntry {
	return []itEntry{
		{path: "one.bin", kind: 'f', size: 1500 << 10},
		{path: "docs/two.bin", kind: 'f', size: 900 << 10},
		{path: "docs/deeper/three.bin", kind: 'f', size: 700 << 10},
		{path: "docs/four.bin", kind: 'f', size: 300 << 10},
		{path: "small/a.txt", kind: 'f', data: "alpha\n"},
		{path: "small/b.txt", kind: 'f', data: "beta\n"},
		{path: "small/c.txt", kind: 'f', size: 5000},
		{path: "small/empty", kind: 'f'},
		{path: "emptydir", kind: 'd'},
		{path: "link", kind: 'l', target: "small/a.txt"},
	}
}

// itFixture is a repository with one tenant and one snapshot of a source tree.
type itFixture struct {
	dir  string // repository
	src  string // source tree
	snap *Snapshot
	name string // tenant name
}

// itNewFixture inits a repository with o, backs up entries as tenant "acme",
// and closes the engine.
func itNewFixture(t *testing.T, o InitOptions, entries []itEntry) *itFixture {
	t.Helper()
	f := &itFixture{dir: itInit(t, o), src: filepath.Join(t.TempDir(), "src"), name: "acme"}
	itBuildTree(t, f.src, entries)
	e := itOpen(t, f.dir)
	f.snap = itBackup(t, itTenant(t, e, f.name), f.src)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// itShard is one shard file found on a drive folder.
type itShard struct {
	drive     string // drive folder
	path      string // the file
	container string
	pack      repo.PackID
	index     int
	size      int64
}

// itDriveDirs returns the drive folders of a repository made by itInit (all
// of them under DIR/drives), sorted.
func itDriveDirs(t *testing.T, dir string) []string {
	t.Helper()
	ds, err := filepath.Glob(filepath.Join(dir, "drives", "*"))
	if err != nil || len(ds) == 0 {
		t.Fatalf("no drive folders in %s (%v)", dir, err)
	}
	sort.Strings(ds)
	return ds
}

// itDriveFiles returns every object on every drive folder of the repository,
// keyed by file path, with its size (temporary files excluded).
func itDriveFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, d := range itDriveDirs(t, dir) {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if e.IsDir() && p == filepath.Join(d, "tmp") {
				return filepath.SkipDir
			}
			if e.Type().IsRegular() {
				fi, err := e.Info()
				if err != nil {
					return err
				}
				out[p] = fi.Size()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// itShards lists the shard files on the repository's drive folders.
func itShards(t *testing.T, dir string) []itShard {
	t.Helper()
	var out []itShard
	files := itDriveFiles(t, dir)
	for _, p := range itSortedKeys(files) {
		for _, d := range itDriveDirs(t, dir) {
			rel, err := filepath.Rel(d, p)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue
			}
			if c, id, i, ok := repo.ParseShardName(filepath.ToSlash(rel)); ok {
				out = append(out, itShard{drive: d, path: p, container: c, pack: id, index: i, size: files[p]})
			}
		}
	}
	return out
}

// itPackShards groups shards by pack and shard index.
func itPackShards(shards []itShard) map[repo.PackID]map[int]itShard {
	out := map[repo.PackID]map[int]itShard{}
	for _, s := range shards {
		if out[s.pack] == nil {
			out[s.pack] = map[int]itShard{}
		}
		out[s.pack][s.index] = s
	}
	return out
}

// itIndexStats is what the index holds for one tenant.
type itIndexStats struct {
	packType  map[repo.PackID]BlobType // type of the blobs in each pack
	dataBlobs int
	dataRaw   int64 // plaintext bytes of the data blobs
	treeBlobs int
}

func itIndex(t *testing.T, tn *Tenant) itIndexStats {
	t.Helper()
	st := itIndexStats{packType: map[repo.PackID]BlobType{}}
	err := tn.e.db.Blobs(tn.id, func(_ index.BlobID, loc index.BlobLoc) error {
		typ := BlobType(loc.Type)
		if prev, ok := st.packType[repo.PackID(loc.Pack)]; ok && prev != typ {
			return fmt.Errorf("pack %s holds %s and %s blobs", loc.Pack, prev, typ)
		}
		st.packType[repo.PackID(loc.Pack)] = typ
		switch typ {
		case DataBlob:
			st.dataBlobs++
			st.dataRaw += int64(loc.RawLength)
		case TreeBlob:
			st.treeBlobs++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read index: %v", err)
	}
	return st
}

// itPacksOf returns the packs of the given type, sorted.
func (s itIndexStats) packsOf(typ BlobType) []repo.PackID {
	var out []repo.PackID
	for id, ty := range s.packType {
		if ty == typ {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b repo.PackID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// itShardFile is a decoded shard file.
type itShardFile struct {
	h       repo.ShardHeader
	data    []byte
	trailer []byte
}

func itReadShard(t *testing.T, p string) itShardFile {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := repo.DecodeShardHeader(b)
	if err != nil {
		t.Fatalf("decode %s: %v", p, err)
	}
	if int64(len(b)) != h.FileSize() {
		t.Fatalf("%s: %d bytes, header says %d", p, len(b), h.FileSize())
	}
	return itShardFile{h: h, data: b[h.DataOffset():h.TrailerOffset()], trailer: b[h.TrailerOffset():]}
}

// itFlipEveryBlock changes one byte in every checksummed block of data.
func itFlipEveryBlock(data []byte, blockSize int) {
	for off := 0; off < len(data); off += blockSize {
		data[off+min(17, len(data)-off-1)] ^= 0xa5
	}
}

// itCorruptShard flips a byte in every block of a shard file's data, leaving
// the header and block table alone: every block now fails its CRC (bitrot).
func itCorruptShard(t *testing.T, p string) {
	t.Helper()
	sf := itReadShard(t, p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	itFlipEveryBlock(b[sf.h.DataOffset():sf.h.TrailerOffset()], sf.h.BlockSize)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// itTamperShard changes a byte in every block of a shard's data and writes
// the file again with a recomputed block table (repo.EncodeShardFile): every
// CRC passes, only the blobs' authentication and the shard hash can tell.
func itTamperShard(t *testing.T, p string) {
	t.Helper()
	sf := itReadShard(t, p)
	data := slices.Clone(sf.data)
	itFlipEveryBlock(data, sf.h.BlockSize)
	file, err := repo.EncodeShardFile(sf.h, data, sf.trailer)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, file, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := repo.DecodeShardHeader(file); err != nil {
		t.Fatalf("tampered shard does not decode: %v", err)
	}
}

// itCopyDir copies the regular files and folders below src to dst.
func itCopyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(to, fi.Mode().Perm())
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

// itErrNamesOneOf reports whether err's text names one of the packs.
func itErrNamesOneOf(err error, packs []repo.PackID) bool {
	for _, p := range packs {
		if strings.Contains(err.Error(), p.String()) {
			return true
		}
	}
	return false
}
