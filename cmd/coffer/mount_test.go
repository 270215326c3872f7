package main

import (
	"bufio"
	"bytes"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needFUSE skips a test where FUSE cannot be used.
func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine: the mount tests need FUSE (Debian: apt-get install fuse3)")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("no fusermount3 on this machine: the mount tests need it (Debian: apt-get install fuse3)")
	}
}

// isMounted reports whether dir is a mount point (/proc/self/mountinfo).
func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// mountProc is a coffer mount subprocess.
type mountProc struct {
	cmd  *exec.Cmd
	dir  string
	out  *bytes.Buffer
	done chan error
}

// startMount runs bin with args ending in "mount DIR" and waits until the
// mount shows its top folders.
func startMount(t *testing.T, bin, dir string, args ...string) *mountProc {
	t.Helper()
	cmd := exec.Command(bin, append(args, "mount", dir)...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &mountProc{cmd: cmd, dir: dir, out: out, done: make(chan error, 1)}
	go func() { m.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-m.done
		}
		if isMounted(t, dir) {
			exec.Command("fusermount3", "-u", "-z", dir).Run()
		}
	})
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(filepath.Join(dir, "ids")); err == nil {
			return m
		}
		select {
		case err := <-m.done:
			t.Fatalf("coffer mount ended: %v\n%s", err, out)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("the mount did not come up:\n%s", out)
	return nil
}

// stop sends sig and checks that the mount ends with exit 0 and leaves no
// mount behind.
func (m *mountProc) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	m.cmd.Process.Signal(sig)
	select {
	case err := <-m.done:
		if err != nil {
			t.Fatalf("coffer mount after %v: %v\n%s", sig, err, m.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("coffer mount did not end on %v", sig)
	}
	if isMounted(t, m.dir) {
		t.Fatalf("%s is still mounted after %v", m.dir, sig)
	}
}

// mountTestTree makes a tree with a multi-chunk file, small files, a
// symlink, an xattr, a sparse file and modes and times of its own.
func mountTestTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	rng := rand.New(rand.NewPCG(5, 5))
	big := make([]byte, 5<<20+777)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	writeFile(t, filepath.Join(src, "big.bin"), big)
	writeFile(t, filepath.Join(src, "docs", "a.txt"), []byte("alpha\n"))
	writeFile(t, filepath.Join(src, "docs", "secret"), []byte("s3cret\n"))
	os.Chmod(filepath.Join(src, "docs", "secret"), 0o600)
	os.Chown(filepath.Join(src, "docs", "secret"), 1234, 5678)
	if err := os.Symlink("docs/a.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	_ = unix.Setxattr(filepath.Join(src, "docs", "a.txt"), "user.color", []byte("blue"), 0)
	sp, _ := os.Create(filepath.Join(src, "sparse"))
	sp.WriteAt([]byte("end"), 8<<20)
	sp.Close()
	when := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	for _, p := range []string{"big.bin", "docs/a.txt", "docs/secret", "sparse"} {
		os.Chtimes(filepath.Join(src, p), when, when)
	}
	return src
}

// compareMounted checks every entry of src against its copy at got: type,
// mode, owner, size, mtime, content, link target and xattrs.
func compareMounted(t *testing.T, src, got string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		gp := filepath.Join(got, rel)
		var ws, gs unix.Stat_t
		if err := unix.Lstat(p, &ws); err != nil {
			return err
		}
		if err := unix.Lstat(gp, &gs); err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if ws.Mode != gs.Mode || ws.Uid != gs.Uid || ws.Gid != gs.Gid {
			t.Errorf("%s: mode %o uid %d gid %d, mounted %o %d %d", rel, ws.Mode, ws.Uid, ws.Gid, gs.Mode, gs.Uid, gs.Gid)
		}
		if !d.IsDir() && (ws.Size != gs.Size || ws.Mtim != gs.Mtim) {
			t.Errorf("%s: size %d mtime %v, mounted %d %v", rel, ws.Size, ws.Mtim, gs.Size, gs.Mtim)
		}
		switch {
		case d.Type().IsRegular():
			a, _ := os.ReadFile(p)
			b, err := os.ReadFile(gp)
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s: content differs (%d bytes, mounted %d, %v)", rel, len(a), len(b), err)
			}
		case d.Type()&fs.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(gp)
			if a != b {
				t.Errorf("%s: link to %q, mounted %q", rel, a, b)
			}
		}
		if d.Type()&fs.ModeSymlink == 0 {
			wx, gx := make([]byte, 256), make([]byte, 256)
			n, werr := unix.Getxattr(p, "user.color", wx)
			m, gerr := unix.Getxattr(gp, "user.color", gx)
			if (werr == nil) != (gerr == nil) || werr == nil && !bytes.Equal(wx[:n], gx[:m]) {
				t.Errorf("%s: xattr %q (%v), mounted %q (%v)", rel, wx[:max(n, 0)], werr, gx[:max(m, 0)], gerr)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMount mounts a repository with the binary: locally (files, stats,
// symlink, xattrs, layout, SIGTERM), then through coffer serve with a
// restore key (a new snapshot appears while mounted; once the tenant is
// locked reads fail; SIGINT unmounts); a locked tenant cannot mount.
func TestMount(t *testing.T) {
	needFUSE(t)
	bin := filepath.Join(t.TempDir(), "coffer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	r := newTestRepo(t, "acme")
	src := mountTestTree(t)
	var snap struct{ ID string }
	decodeJSON(t, r.must(t, nil, "--json", "backup", "--host", "web1", "--tag", "daily", src), &snap)

	mp := filepath.Join(t.TempDir(), "mp")
	os.Mkdir(mp, 0o755)
	m := startMount(t, bin, mp, r.args()...)
	short := snap.ID[:8]
	compareMounted(t, src, filepath.Join(mp, "ids", short, src))
	latest, err := os.Readlink(filepath.Join(mp, "snapshots", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"snapshots/" + latest, "hosts/web1/" + latest, "tags/daily/" + latest, "hosts/web1/latest", "tags/daily/latest"} {
		if _, err := os.Stat(filepath.Join(mp, p, src, "docs", "a.txt")); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(mp, "ids", short, src, "sparse"), &st); err != nil || st.Blocks*512 >= 8<<20 {
		t.Errorf("sparse file: %d blocks, %v", st.Blocks, err)
	}
	if err := os.WriteFile(filepath.Join(mp, "ids", short, src, "docs", "a.txt"), []byte("x"), 0o644); err == nil {
		t.Errorf("a write into the mount succeeded")
	}
	m.stop(t, syscall.SIGTERM)

	// Through coffer serve: the mount and a backup are both clients.
	keys := t.TempDir()
	restoreID, backupID := filepath.Join(keys, "r"), filepath.Join(keys, "b")
	mustCoffer(t, nil, "keygen", "--out", restoreID)
	mustCoffer(t, nil, "keygen", "--out", backupID)
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "add", "acme", restoreID+".pub", "--role", "restore")
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "key", "add", "acme", backupID+".pub", "--role", "backup")
	srv := exec.Command(bin, "--repo", r.dir, "serve", "--listen", "127.0.0.1:0")
	stdout, _ := srv.StdoutPipe()
	srv.Stderr = io.Discard
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	var addr, fp string
	sc := bufio.NewScanner(stdout)
	fpRe, addrRe := regexp.MustCompile(`server fingerprint: (SHA256:\S+)`), regexp.MustCompile(`listening on (\S+)`)
	for addr == "" && sc.Scan() {
		if x := fpRe.FindStringSubmatch(sc.Text()); x != nil {
			fp = x[1]
		}
		if x := addrRe.FindStringSubmatch(sc.Text()); x != nil {
			addr = x[1]
		}
	}
	go io.Copy(io.Discard, stdout)
	if addr == "" {
		t.Fatal("coffer serve did not start")
	}
	remote := func(id string) []string {
		return []string{"--remote", addr, "--identity", id, "--server-fingerprint", fp}
	}
	m = startMount(t, bin, mp, remote(restoreID)...)
	compareMounted(t, src, filepath.Join(mp, "ids", short, src))

	writeFile(t, filepath.Join(src, "new.txt"), []byte("made while mounted\n"))
	var snap2 struct{ ID string }
	decodeJSON(t, mustCoffer(t, nil, append(remote(backupID), "--json", "backup", src)...), &snap2)
	newPath := filepath.Join(mp, "ids", snap2.ID[:8], src, "new.txt")
	var got []byte
	for i := 0; i < 100 && got == nil; i++ {
		got, _ = os.ReadFile(newPath)
		time.Sleep(50 * time.Millisecond)
	}
	if string(got) != "made while mounted\n" {
		t.Fatalf("the new snapshot did not appear in the mount: %q", got)
	}

	// Lock the tenant (through serve's admin socket): reads fail from the
	// next check on, also of a file not read before.
	mustCoffer(t, nil, "--repo", r.dir, "tenant", "lock", "acme")
	var rerr error
	for i := 0; i < 100 && rerr == nil; i++ {
		_, rerr = os.ReadFile(filepath.Join(mp, "ids", snap2.ID[:8], src, "big.bin"))
		time.Sleep(50 * time.Millisecond)
	}
	if rerr == nil {
		t.Fatal("reads still succeed 5 s after the tenant was locked")
	}
	m.stop(t, syscall.SIGINT)
	srv.Process.Signal(syscall.SIGTERM)
	srv.Wait()

	res := r.run(t, nil, "mount", mp)
	if res.code != exitTenantLocked {
		t.Fatalf("mount of a locked tenant:\n%s", res)
	}
	checkErrorLine(t, res)
}
