package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/engine"
	"coffer/engine/remote"
)

// The tests of "one client" (holder.go): coffer processes started while
// another holds the repository run through it instead of exiting 11.

var (
	holderBinOnce sync.Once
	holderBin     string
	holderBinErr  error
)

// buildCoffer builds the coffer binary once for the tests that run it as
// separate processes.
func buildCoffer(t *testing.T) string {
	t.Helper()
	holderBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "coffer-bin-")
		if err != nil {
			holderBinErr = err
			return
		}
		holderBin = filepath.Join(dir, "coffer")
		if out, err := exec.Command("go", "build", "-o", holderBin, ".").CombinedOutput(); err != nil {
			holderBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if holderBinErr != nil {
		t.Fatal(holderBinErr)
	}
	return holderBin
}

// proc is a coffer process of a test.
type proc struct {
	cmd         *exec.Cmd
	stdin       io.WriteCloser // for a --stdin backup
	out, errb   bytes.Buffer
	done        chan struct{}
	code        int
	killedByUs  bool
	description string
}

func startProc(t *testing.T, bin, repo string, stdin bool, a ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, append([]string{"--repo", repo}, a...)...), done: make(chan struct{}), description: strings.Join(a, " ")}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.errb
	if stdin {
		w, err := p.cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.stdin = w
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s did not end", p.description)
	}
	return p.code
}

func (p *proc) String() string {
	return fmt.Sprintf("coffer %s\n  exit %d\n  stdout: %s\n  stderr: %s", p.description, p.code, clip(p.out.String()), clip(p.errb.String()))
}

// holderPID reads the process ID of the repository's holder from its lock
// file (0 while none holds it).
func holderPID(dir string) int {
	b, _ := os.ReadFile(filepath.Join(dir, "lock"))
	m := regexp.MustCompile(`^pid (\d+) `).FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// hasSocket reports whether the process pid has a socket open (a coffer
// client process opens none but its connection to the holder).
func hasSocket(pid int) bool {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			return true
		}
	}
	return false
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// holderRepo makes a repository with three tenants and a small source tree
// for each.
func holderRepo(t *testing.T) (dir string, tenants []string, srcs map[string]string) {
	t.Helper()
	r := newTestRepo(t, "", "--pack-size", "1MiB")
	tenants = []string{"t-one", "t-two", "t-three"}
	srcs = map[string]string{}
	for i, tn := range tenants {
		mustCoffer(t, nil, "--repo", r.dir, "tenant", "create", tn)
		src := filepath.Join(t.TempDir(), "src")
		for j := 0; j < 12; j++ {
			writeFile(t, filepath.Join(src, fmt.Sprintf("d%d/f%02d.bin", j%3, j)), crashRandom(uint64(100*i+j), 20<<10+j*997))
		}
		srcs[tn] = src
	}
	return r.dir, tenants, srcs
}

// TestHolderServesConcurrentBackups: three tenants' backups started at once
// as separate processes all complete, with a fourth, from standard input,
// kept open meanwhile so that the repository stays held; snapshots and
// check run during them and succeed (through the holder); afterwards check
// --read-data and scrub are clean and every backup restores.
func TestHolderServesConcurrentBackups(t *testing.T) {
	bin := buildCoffer(t)
	dir, tenants, srcs := holderRepo(t)
	start := time.Now()
	slow := startProc(t, bin, dir, true, "--tenant", tenants[0], "backup", "--stdin", "--stdin-filename", "slow.bin")
	var ps []*proc
	for _, tn := range tenants {
		ps = append(ps, startProc(t, bin, dir, false, "--tenant", tn, "backup", srcs[tn]))
	}
	waitFor(t, "a process holds the repository", func() bool { return holderPID(dir) != 0 })
	io.WriteString(slow.stdin, "the first part of a slow stream\n")
	// While the stdin backup is open the repository stays held (by it, or
	// by a process that serves it and so lives on).
	for _, a := range [][]string{{"--tenant", tenants[1], "snapshots"}, {"check"}, {"--tenant", tenants[2], "--json", "snapshots"}} {
		p := startProc(t, bin, dir, false, a...)
		if p.wait(t) != exitOK {
			t.Fatalf("during the backups:\n%s", p)
		}
	}
	if holderPID(dir) == 0 {
		t.Fatalf("nothing held the repository while the stdin backup was open")
	}
	// The holder (whichever process it is) lives until the stdin backup
	// it serves is done.
	io.WriteString(slow.stdin, "and the rest\n")
	slow.stdin.Close()
	for _, p := range append(ps, slow) {
		if p.wait(t) != exitOK || !strings.Contains(p.out.String(), "saved") {
			t.Fatalf("backup:\n%s", p)
		}
	}
	waitFor(t, "the repository is free", func() bool { return holderPID(dir) == 0 })
	t.Logf("backups done after %v", time.Since(start))
	for i, tn := range tenants {
		m := regexp.MustCompile(`snapshot ([0-9a-f]{8}) saved`).FindStringSubmatch(ps[i].out.String())
		if m == nil {
			t.Fatalf("no snapshot ID:\n%s", ps[i])
		}
		back := t.TempDir()
		mustCoffer(t, nil, "--repo", dir, "--tenant", tn, "restore", m[1], "--target", back)
		compareTrees(t, srcs[tn], filepath.Join(back, srcs[tn]))
	}
	t.Logf("restored after %v", time.Since(start))
	m := regexp.MustCompile(`snapshot ([0-9a-f]{8}) saved`).FindStringSubmatch(slow.out.String())
	if m == nil {
		t.Fatalf("no snapshot ID:\n%s", slow)
	}
	res := mustCoffer(t, nil, "--repo", dir, "--tenant", tenants[0], "dump", m[1], "/slow.bin")
	if res.stdout != "the first part of a slow stream\nand the rest\n" {
		t.Fatalf("dump of the stdin backup: %q", res.stdout)
	}
	if res := mustCoffer(t, nil, "--repo", dir, "check", "--read-data"); strings.Contains(res.stdout, "damage:") {
		t.Fatalf("check --read-data:\n%s", res)
	}
	t.Logf("check --read-data after %v", time.Since(start))
	if res := mustCoffer(t, nil, "--repo", dir, "scrub"); res.code != exitOK {
		t.Fatalf("scrub:\n%s", res)
	}
	t.Logf("checked after %v", time.Since(start))
	for _, name := range []string{adminSocketName, dataSocketName} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Fatalf("%s left behind: %v", name, err)
		}
	}
}

// TestHolderKilled: three tenants' stdin backups run at once as separate
// processes, one holding the repository and serving the others; the
// holder is killed (SIGKILL) mid-way. Each client prints the one sentence
// and exits 11; check passes afterwards, no snapshot was half recorded,
// every snapshot restores, and the commands work again.
func TestHolderKilled(t *testing.T) {
	bin := buildCoffer(t)
	dir, tenants, _ := holderRepo(t)
	var ps []*proc
	for _, tn := range tenants {
		ps = append(ps, startProc(t, bin, dir, true, "--tenant", tn, "backup", "--stdin", "--stdin-filename", "s.bin"))
	}
	waitFor(t, "a process holds the repository", func() bool { return holderPID(dir) != 0 })
	pid := holderPID(dir)
	var h *proc
	var clients []*proc
	for _, p := range ps {
		if p.cmd.Process.Pid == pid {
			h = p
		} else {
			clients = append(clients, p)
		}
	}
	if h == nil {
		t.Fatalf("the holder (pid %d) is none of the backups", pid)
	}
	for _, c := range clients {
		waitFor(t, "a client connects to the holder", func() bool { return hasSocket(c.cmd.Process.Pid) })
	}
	for _, p := range ps {
		p.stdin.Write(crashRandom(uint64(p.cmd.Process.Pid), 300<<10))
	}
	time.Sleep(100 * time.Millisecond)
	h.cmd.Process.Kill()
	h.wait(t)
	for _, c := range clients {
		c.stdin.Write(crashRandom(7, 64<<10))
		c.stdin.Close()
		if code := c.wait(t); code != exitRepoLocked {
			t.Fatalf("client of a killed holder: want exit %d:\n%s", exitRepoLocked, c)
		}
		want := fmt.Sprintf("coffer: the coffer process that held %s (pid %d) ended before the backup finished; the backup was not confirmed", dir, pid)
		if !strings.HasPrefix(c.errb.String(), want) || strings.Count(c.errb.String(), "\n") != 1 {
			t.Fatalf("client of a killed holder: want one line starting %q:\n%s", want, c)
		}
	}
	if res := coffer(t, nil, "--repo", dir, "check"); res.code != exitOK {
		t.Fatalf("check after the holder was killed:\n%s", res)
	}
	for _, tn := range tenants {
		var ss []*engine.Snapshot
		decodeJSON(t, mustCoffer(t, nil, "--repo", dir, "--tenant", tn, "--json", "snapshots"), &ss)
		for _, s := range ss {
			mustCoffer(t, nil, "--repo", dir, "--tenant", tn, "restore", s.ID, "--target", t.TempDir())
		}
	}
	// And the commands work again: a backup, on its own.
	p := startProc(t, bin, dir, true, "--tenant", tenants[1], "backup", "--stdin", "--stdin-filename", "again.bin")
	io.WriteString(p.stdin, "again\n")
	p.stdin.Close()
	if p.wait(t) != exitOK {
		t.Fatalf("backup after the kill:\n%s", p)
	}
}

// TestDataSocketRefusesWrongKey: the data socket of a holder refuses a
// proof made with another repository's master key (exit 12 for the
// command), and a hello without proofs, with the one refusal; and it
// tells a proven operator that a tenant does not exist.
func TestDataSocketRefusesWrongKey(t *testing.T) {
	r := newTestRepo(t, "acme")
	other := newTestRepo(t, "")
	pr, pw := io.Pipe()
	first := make(chan result, 1)
	go func() { first <- coffer(t, pr, r.args("backup", "--stdin", "--stdin-filename", "slow.bin")...) }()
	defer func() {
		pw.Close()
		<-first
	}()
	waitFor(t, "the backup holds the repository", func() bool {
		_, err := os.Stat(filepath.Join(r.dir, dataSocketName))
		return err == nil
	})
	for _, a := range [][]string{{"snapshots"}, {"backup", t.TempDir()}, {"restore", "latest", "--target", t.TempDir()}} {
		res := coffer(t, nil, cat([]string{"--repo", r.dir, "--tenant", "acme", "--master-key-file", other.key}, a...)...)
		if res.code != exitWrongKey {
			t.Fatalf("wrong master key through the data socket: want exit %d:\n%s", exitWrongKey, res)
		}
		checkErrorLine(t, res)
	}
	ctx := context.Background()
	for name, prove := range map[string]func([]byte) ([][]byte, error){
		"other key": func(n []byte) ([][]byte, error) { return engine.AdminProofs(other.dir, other.key, n) },
		"no proof":  func([]byte) ([][]byte, error) { return nil, nil },
		"garbage":   func([]byte) ([][]byte, error) { return [][]byte{bytes.Repeat([]byte{1}, 32)}, nil },
	} {
		c, _, ok := dialHolder(ctx, r.dir, dataSocketName)
		if !ok {
			t.Fatal("no data socket")
		}
		_, err := remote.DialLocal(ctx, c, "acme", prove)
		if !errors.Is(err, remote.ErrRefused) {
			t.Fatalf("%s: %v, want the refusal", name, err)
		}
	}
	c, _, _ := dialHolder(ctx, r.dir, dataSocketName)
	_, err := remote.DialLocal(ctx, c, "nobody", func(n []byte) ([][]byte, error) { return engine.AdminProofs(r.dir, "", n) })
	if !errors.Is(err, engine.ErrTenantNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
	res := coffer(t, nil, "--repo", r.dir, "--tenant", "nobody", "snapshots")
	if res.code != exitError || !strings.Contains(res.stderr, "nobody") {
		t.Fatalf("unknown tenant through the data socket:\n%s", res)
	}
}
