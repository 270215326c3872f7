package drivetest

import (
	"fmt"
	"go/build"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// VersityGWInstall is the command that installs the S3 server the tests use.
const VersityGWInstall = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Credentials of the test S3 servers (loopback only).
const (
	S3AccessKey = "coffertest"
	S3SecretKey = "coffertest-secret-0123456789"
)

// VersityGW returns the path of the versitygw binary (on PATH, in GOBIN or in
// GOPATH/bin), or "" if it is not installed.
func VersityGW() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(build.Default.GOPATH, "bin")} {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// S3Server is a real S3 server (versitygw in posix mode) on a loopback port,
// for tests. Every folder under Dir is a bucket; object a/b is the file
// Dir/BUCKET/a/b.
type S3Server struct {
	Dir  string // the server's folder
	Addr string // 127.0.0.1:PORT

	bin        string
	versioning string // --versioning-dir, or ""
	t          testing.TB

	mu  sync.Mutex
	cmd *exec.Cmd // guarded by mu; nil while stopped
}

// StartS3Server starts versitygw on a free loopback port with a new folder
// holding the given buckets, and stops it when the test ends. Without
// versitygw the test is skipped with a message that says how to install it.
// With versioning, the server supports bucket versioning (the buckets are
// created unversioned).
func StartS3Server(t testing.TB, versioning bool, buckets ...string) *S3Server {
	t.Helper()
	bin := VersityGW()
	if bin == "" {
		t.Skip("versitygw not installed: " + VersityGWInstall)
	}
	s := &S3Server{Dir: t.TempDir(), bin: bin, t: t}
	if versioning {
		s.versioning = t.TempDir()
	}
	for _, b := range buckets {
		if err := os.Mkdir(filepath.Join(s.Dir, b), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	l.Close()
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// URL returns the drive URL of a bucket (with an optional prefix) on s.
func (s *S3Server) URL(bucket string) string {
	return fmt.Sprintf("s3+http://%s/%s", s.Addr, bucket)
}

// Start (re)starts the server on its address and waits until it accepts
// connections. Starting a running server does nothing.
func (s *S3Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	args := []string{"--port", s.Addr, "posix"}
	if s.versioning != "" {
		args = append(args, "--versioning-dir", s.versioning)
	}
	args = append(args, s.Dir)
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+S3AccessKey, "ROOT_SECRET_KEY="+S3SecretKey)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start versitygw: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			s.t.Fatalf("versitygw on %s did not start: %v", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd = cmd
}

// Stop kills the server (as a machine that vanishes would) and waits for it
// to exit. Stopping a stopped server does nothing.
func (s *S3Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// SetS3Credentials sets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to the
// test servers' credentials for the rest of the test.
func SetS3Credentials(t testing.TB) {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", S3AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", S3SecretKey)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(os.TempDir(), "coffer-no-such-credentials-file"))
}
