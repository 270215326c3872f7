package main

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// servedRepo is a coffer serve subprocess on a crash repository.
type servedRepo struct {
	cmd      *exec.Cmd
	addr, fp string
}

// serve starts coffer serve on a loopback port and waits until it listens.
func (r *crashRepo) serve(t *testing.T) *servedRepo {
	t.Helper()
	cmd := exec.Command(r.bin, "--repo", r.dir, "serve", "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &servedRepo{cmd: cmd}
	fpRe := regexp.MustCompile(`server fingerprint: (SHA256:\S+)`)
	addrRe := regexp.MustCompile(`listening on (\S+)`)
	sc := bufio.NewScanner(stdout)
	for s.addr == "" && sc.Scan() {
		if m := fpRe.FindStringSubmatch(sc.Text()); m != nil {
			s.fp = m[1]
		}
		if m := addrRe.FindStringSubmatch(sc.Text()); m != nil {
			s.addr = m[1]
		}
	}
	if s.addr == "" || s.fp == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("coffer serve did not start")
	}
	go io.Copy(io.Discard, stdout)
	return s
}

// crashKillServe kills coffer serve (SIGKILL) while a remote backup runs
// through it, at random moments, then restarts it: the repository must
// pass check with only notes, every committed snapshot must restore, and a
// rerun through the restarted server must complete. Between kills the
// operator's commands go through the server's admin socket, and after a
// kill its stale socket must not get in the way.
func crashKillServe(t *testing.T, bin string) {
	kills := 6
	if testing.Short() {
		kills = 2
	}
	r := newCrashRepo(t, bin)
	id := filepath.Join(t.TempDir(), "id")
	mustCoffer(t, nil, "keygen", "--out", id)
	r.inproc(t, exitOK, "tenant", "key", "add", "acme", id+".pub", "--role", "backup")
	remoteBackup := func(s *servedRepo, force bool) result {
		a := append([]string{"--remote", s.addr, "--identity", id, "--server-fingerprint", s.fp}, r.backupArgs(force)...)
		return coffer(t, nil, a...)
	}

	s := r.serve(t)
	before := r.snapshots(t) // through the admin socket
	start := time.Now()
	if res := remoteBackup(s, false); res.code != exitOK {
		t.Fatalf("first remote backup:\n%s", res)
	}
	typical := time.Since(start)
	r.record(t, before, r.snapshots(t), "first remote backup")
	killed := 0
	for i := 0; killed < kills && i < 4*kills; i++ {
		r.change(t)
		before := r.snapshots(t)
		force := i%2 == 1 // every file read and chunked again
		delay := r.sampleDelay(typical)
		what := fmt.Sprintf("iteration %d (force %v, serve killed after %v)", i, force, delay)
		done := make(chan result, 1)
		go func() { done <- remoteBackup(s, force) }()
		time.Sleep(delay)
		s.cmd.Process.Kill()
		s.cmd.Wait()
		res := <-done
		if res.code == exitOK {
			t.Logf("%s: the backup completed before the kill", what)
		} else {
			killed++
		}
		// The server is dead: its admin socket is stale, and the commands
		// open the repository themselves.
		r.record(t, before, r.snapshots(t), what)
		r.mustCheck(t, what)
		s = r.serve(t)
		before = r.snapshots(t)
		rerun := time.Now()
		if res := remoteBackup(s, false); res.code != exitOK {
			t.Fatalf("%s: rerun through the restarted server:\n%s", what, res)
		}
		// Later backups send less than the first: aim the kills at the
		// length of a recent one.
		typical = (typical + time.Since(rerun)) / 2
		if r.record(t, before, r.snapshots(t), what+", rerun") != 1 {
			t.Fatalf("%s: the rerun recorded no snapshot", what)
		}
		if t.Failed() {
			t.Fatalf("stopping after the first failed iteration (seed %d)", crashSeed)
		}
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	if killed < kills/2 {
		t.Errorf("only %d of %d remote backups were cut by the kill", killed, kills)
	}
	t.Logf("%d remote backups cut by a kill of the server", killed)
	r.mustCheck(t, "final check")
	for _, sid := range r.snapshots(t) {
		r.restore(t, sid, "final restore of every snapshot")
	}
}
