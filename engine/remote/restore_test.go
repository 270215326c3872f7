package remote

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"coffer/chunk"
	"coffer/engine"
	"coffer/engine/fsmeta"
	"coffer/engine/tree"
)

// fsEntry is everything a restore must bring back of one entry.
type fsEntry struct {
	Mode     fs.FileMode
	UID, GID uint32
	MTime    int64 // nanoseconds
	Size     int64
	Rdev     uint64
	Target   string            // symlink
	Sum      string            // file content
	Data     [][2]int64        // file: data extents by SEEK_DATA/SEEK_HOLE
	Xattrs   map[string]string // names and values, ACLs included
	Group    string            // hard links: the first path of the inode's names
}

// scanTree records root's entries by path below root; sockets are left
// out (a restore skips them with a warning), and so are the paths skip
// says.
func scanTree(t *testing.T, root string, skip func(rel string) bool) map[string]fsEntry {
	t.Helper()
	out := map[string]fsEntry{}
	inodes := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		e := fsEntry{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid, MTime: st.Mtim.Nano(), Rdev: st.Rdev, Xattrs: xattrsOf(t, p)}
		switch {
		case fi.Mode().IsRegular():
			e.Size = fi.Size()
			e.Sum, e.Data = fileSumAndData(t, p, fi.Size())
			if st.Nlink > 1 {
				inodes[st.Ino] = append(inodes[st.Ino], rel)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, names := range inodes {
		sort.Strings(names)
		for _, n := range names {
			e := out[n]
			e.Group = names[0]
			out[n] = e
		}
	}
	return out
}

func xattrsOf(t *testing.T, p string) map[string]string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		t.Fatalf("list xattrs of %s: %v", p, err)
	}
	var out map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		k, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("xattr %s of %s: %v", name, p, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(v[:k])
	}
	return out
}

// fileSumAndData hashes a file and lists its data extents.
func fileSumAndData(t *testing.T, p string, size int64) (string, [][2]int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var data [][2]int64
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			break
		}
		if err != nil {
			t.Fatalf("SEEK_DATA %s: %v", p, err)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE %s: %v", p, err)
		}
		data = append(data, [2]int64{start, end})
		off = end
	}
	return fmt.Sprintf("%x", h.Sum(nil)), data
}

// compareTrees reports every difference between two scans.
func compareTrees(t *testing.T, what string, want, got map[string]fsEntry) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s: %s is missing", what, p)
			continue
		}
		if !reflect.DeepEqual(w, g) {
			t.Errorf("%s: %s differs:\nsource   %+v\nrestored %+v", what, p, w, g)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %s was not in the source", what, p)
		}
	}
}

// TestRestoreLocalAndRemoteSame: a local restore and a remote one run the
// same pipeline (engine.RestoreFrom) over the same trees, so the rich tree
// (hard links, xattrs and an ACL, another owner and a device as root, a
// 64 MiB sparse file, a fifo, a socket, a symlink, nanosecond times) comes
// back from both identical to the source in every field, with the same
// stats and warnings (the socket). On the code before, the remote restore
// dropped the fifo, the xattrs and the link groups, and wrote holes as
// zeros.
func TestRestoreLocalAndRemoteSame(t *testing.T) {
	f := newIngestFixture(t)
	ctx := context.Background()
	src := t.TempDir()
	rt := writeRichTree(t, src)
	real := filepath.Join(src, "real", "data")
	// A 64 MiB sparse file: data at the start, in the middle and near the
	// end, holes between and after.
	sp, err := os.Create(filepath.Join(real, "sparse64"))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 30 << 20, 60 << 20} {
		if _, err := sp.WriteAt([]byte(strings.Repeat(fmt.Sprintf("data at %d ", off), 20000)), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	// Times last: the folders' mtimes changed with each entry.
	if err := os.Chtimes(real, time.Unix(1500000000, 0), time.Unix(1500000000, 987654321)); err != nil {
		t.Fatal(err)
	}

	tn, err := f.e.OpenTenant(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	s, err := tn.Backup(ctx, []string{rt.data}, engine.BackupOptions{Host: "h", Excludes: rt.excludes})
	if err != nil {
		t.Fatal(err)
	}
	skip := func(rel string) bool { return rel == "skip.tmp" || rel == "cache" }
	want := scanTree(t, real, skip)
	if n := want["sparse64"]; len(n.Data) < 2 {
		t.Logf("the file system keeps no holes: %v", n.Data)
	}

	local := filepath.Join(t.TempDir(), "local")
	lst, err := tn.Restore(ctx, s, local, engine.RestoreOptions{})
	if err != nil {
		t.Fatalf("local restore: %v", err)
	}
	cl := f.dial(t, f.key(t, "alice", "restore"))
	remote := filepath.Join(t.TempDir(), "remote")
	rst, err := cl.Restore(ctx, s.ID[:8], remote, engine.RestoreOptions{})
	if err != nil {
		t.Fatalf("remote restore: %v", err)
	}
	compareTrees(t, "local restore", want, scanTree(t, filepath.Join(local, rt.data), skip))
	compareTrees(t, "remote restore", want, scanTree(t, filepath.Join(remote, rt.data), skip))

	strip := func(st *engine.RestoreStats, target string) engine.RestoreStats {
		c := *st
		c.Warnings = nil
		for _, w := range st.Warnings {
			c.Warnings = append(c.Warnings, strings.ReplaceAll(w, target, "TARGET"))
		}
		sort.Strings(c.Warnings)
		return c
	}
	if l, r := strip(lst, local), strip(rst, remote); !reflect.DeepEqual(l, r) {
		t.Errorf("stats differ:\nlocal  %+v\nremote %+v", l, r)
	}
	if len(rst.Warnings) != 1 || !strings.Contains(rst.Warnings[0], "sock") {
		t.Errorf("warnings %q, want one, of the socket", rst.Warnings)
	}
	if rst.Snapshot != s.ID {
		t.Errorf("remote stats name snapshot %q, want %q", rst.Snapshot, s.ID)
	}
	if fsmeta.IsRoot() {
		if e := want["owned"]; e.UID != 4321 {
			t.Errorf("the source's owner %d: the test did not set it", e.UID)
		}
	}
	if want["fifo"].Mode&fs.ModeNamedPipe == 0 || want["a/linked"].Group == "" || (rt.xattrs && len(want["attrs"].Xattrs) == 0) {
		t.Error("the source lacks what the test compares")
	}
}

// TestRemoteRestoreBlobRequests: locate and blobs give a key only its own
// tenant's data blobs: another tenant's blob, a tree of its own and an ID
// that exists nowhere get the same answer; requests are bounded; a backup
// key may not read data.
func TestRemoteRestoreBlobRequests(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cl, _ := f.client(t, "alice", "restore")
	at, err := f.e.OpenTenant(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	bt, err := f.e.OpenTenant(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	aliceTrees, aliceData := tenantBlobs(t, at, []string{f.snapA.ID})
	_, bobData := tenantBlobs(t, bt, []string{f.snapB.ID})
	var random [32]byte
	copy(random[:], strings.Repeat("\x5a", 32))
	for _, op := range []string{opLocate, opBlobs} {
		var answers []string
		for _, id := range [][32]byte{bobData[0], aliceTrees[0], random} {
			ans, _ := probeRoundTrip(t, cl, request{Op: op}, id[:], nil)
			answers = append(answers, ans)
		}
		if answers[0] != answers[1] || answers[0] != answers[2] || !strings.Contains(answers[0], codeNoBlob) {
			t.Errorf("%s: bob's blob, alice's tree and a random ID: %q", op, answers)
		}
		// One unknown ID among known ones refuses the whole request.
		body := append(append([]byte{}, aliceData[0][:]...), bobData[0][:]...)
		if ans, _ := probeRoundTrip(t, cl, request{Op: op}, body, nil); ans != answers[0] {
			t.Errorf("%s: alice's blob and bob's: %q", op, ans)
		}
		for name, body := range map[string][]byte{
			"empty":    nil,
			"31 bytes": make([]byte, 31),
			"too many": make([]byte, 32*(engine.MaxReadGroup+1)),
		} {
			if ans, _ := probeRoundTrip(t, cl, request{Op: op}, body, nil); !strings.HasPrefix(ans, "error/"+codeInvalid+"/") {
				t.Errorf("%s with %s: %q", op, name, ans)
			}
		}
	}
	// Alice's own blobs come back as located, checked here as a restore
	// checks them.
	r := &remoteReader{cl: cl, hasher: chunk.NewHasher(at.IngestParams().IDKey)}
	ids := []tree.ID{aliceData[0], aliceData[len(aliceData)-1], aliceData[0]}
	places, err := r.Locate(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	err = r.ReadGroup(ctx, places, func(i int, b []byte) error {
		if i != got || len(b) != int(places[i].Size) {
			return fmt.Errorf("blob %d (want %d) of %d bytes, place says %d", i, got, len(b), places[i].Size)
		}
		got++
		return nil
	})
	if err != nil || got != len(ids) {
		t.Fatalf("read %d of %d: %v", got, len(ids), err)
	}
	// A reader with another key (a server sending other content) refuses
	// every blob and tree.
	bad := &remoteReader{cl: cl, hasher: chunk.NewHasher([32]byte{1})}
	if err := bad.ReadGroup(ctx, places[:1], func(int, []byte) error { return nil }); !errors.Is(err, engine.ErrAuth) {
		t.Errorf("blob under another ID key: %v", err)
	}
	root, _ := parseID(f.snapA.Tree)
	if _, err := bad.Tree(ctx, root); !errors.Is(err, engine.ErrAuth) {
		t.Errorf("tree under another ID key: %v", err)
	}

	for _, op := range []string{opLocate, opBlobs, opRestore} {
		bc, _ := f.client(t, "alice", "backup") // a refusal ends the session
		if ans, _ := probeRoundTrip(t, bc, request{Op: op, Snapshot: "latest"}, aliceData[0][:], nil); !strings.HasPrefix(ans, "error/"+codeRefused+"/") {
			t.Errorf("backup key, %s: %q", op, ans)
		}
	}
}

// TestRemoteOldClient: a client of protocol version 1 offers no ALPN
// protocol; once its key is admitted it gets one error frame, which such
// a client prints, instead of a hello it would call "unexpected".
func TestRemoteOldClient(t *testing.T) {
	f := newFixture(t)
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.AddClientKey(context.Background(), "alice", priv.Public().(ed25519.PublicKey), "", []string{engine.RoleRestore}); err != nil {
		t.Fatal(err)
	}
	cert, err := selfSigned(priv)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var hello response
	if _, err := readFrame(c, &hello); err != nil {
		t.Fatal(err)
	}
	// What a version 1 client does with it (its Dial).
	err = codeError(hello.Code, hello.Message)
	if hello.Kind != kindError || !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "protocol version 2") || strings.Count(err.Error(), ". ") > 0 {
		t.Fatalf("old client got %+v: %v", hello, err)
	}
	if _, err := readFrame(c, &hello); err == nil {
		t.Fatal("the connection stayed open")
	}
}
