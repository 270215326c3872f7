// Package mailpittest runs Mailpit (github.com/axllent/mailpit v1.33.1,
// installed by .ci/run) on loopback for tests, and reads what it received
// through its HTTP API. Tests skip, saying how to install it, when the
// binary is missing.
package mailpittest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Options of a Mailpit server.
type Options struct {
	// TLSCert and TLSKey (PEM files) make the server offer STARTTLS;
	// RequireTLS refuses a client that does not use it.
	TLSCert, TLSKey string
	RequireTLS      bool
	// ImplicitTLS makes it speak TLS from the first byte (port 465 style).
	ImplicitTLS bool
	// Auth accepts any user name and password (PLAIN or LOGIN);
	// InsecureAuth over a plain connection too.
	Auth, InsecureAuth bool
}

// Server is a running Mailpit.
type Server struct {
	SMTP string // HOST:PORT of its SMTP server
	API  string // base URL of its HTTP API
}

// Binary finds the mailpit binary on PATH or in GOPATH/bin.
func Binary() string {
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if h, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(h, "go")
		}
	}
	p := filepath.Join(gopath, "bin", "mailpit")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// FreePort returns a loopback address with a port nobody listens on now.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Start runs Mailpit until the test ends, or skips the test when it is not
// installed. Its ports are chosen free, and chosen again when another
// process takes one first (the machine is shared).
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		t.Skip("mailpit is not installed: go install github.com/axllent/mailpit@v1.33.1 (.ci/run installs it)")
	}
	var last string
	for try := 0; try < 3; try++ {
		s, log := start(t, bin, o)
		if s != nil {
			return s
		}
		last = log
	}
	t.Fatalf("mailpit did not start:\n%s", last)
	return nil
}

// start runs one Mailpit; nil and its log when it did not come up.
func start(t testing.TB, bin string, o Options) (*Server, string) {
	smtpAddr, apiAddr := FreePort(t), FreePort(t)
	args := []string{"--smtp", smtpAddr, "--listen", apiAddr, "--quiet", "--disable-version-check",
		"--smtp-disable-rdns", "--database", filepath.Join(t.TempDir(), "mailpit.db")}
	if o.TLSCert != "" {
		args = append(args, "--smtp-tls-cert", o.TLSCert, "--smtp-tls-key", o.TLSKey)
	}
	if o.RequireTLS {
		args = append(args, "--smtp-require-starttls")
	}
	if o.ImplicitTLS {
		args = append(args, "--smtp-require-tls")
	}
	if o.Auth {
		args = append(args, "--smtp-auth-accept-any")
	}
	if o.InsecureAuth {
		args = append(args, "--smtp-auth-allow-insecure")
	}
	cmd := exec.Command(bin, args...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "mailpit.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mailpit: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
	}
	s := &Server{SMTP: smtpAddr, API: "http://" + apiAddr}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			logf.Close()
			b, _ := os.ReadFile(logf.Name())
			return nil, string(b)
		default:
		}
		resp, err := http.Get(s.API + "/api/v1/messages")
		if err == nil {
			resp.Body.Close()
			if c, err := net.Dial("tcp", smtpAddr); err == nil {
				c.Close()
				t.Cleanup(stop)
				return s, ""
			}
		}
		if time.Now().After(deadline) {
			stop()
			b, _ := os.ReadFile(logf.Name())
			return nil, fmt.Sprintf("%v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Address is a sender or recipient in the API.
type Address struct {
	Name    string `json:"Name"`
	Address string `json:"Address"`
}

// Message is one received message as the API lists it.
type Message struct {
	ID        string    `json:"ID"`
	MessageID string    `json:"MessageID"`
	From      Address   `json:"From"`
	To        []Address `json:"To"`
	Subject   string    `json:"Subject"`
}

// Messages lists every message received, newest first.
func (s *Server) Messages(t testing.TB) []Message {
	t.Helper()
	var out struct {
		Total    int       `json:"total"`
		Messages []Message `json:"messages"`
	}
	s.get(t, "/api/v1/messages?limit=1000", &out)
	return out.Messages
}

// Text returns the plain-text body of the message with the API's ID id.
func (s *Server) Text(t testing.TB, id string) string {
	t.Helper()
	var out struct {
		Text string `json:"Text"`
	}
	s.get(t, "/api/v1/message/"+id, &out)
	return out.Text
}

// Wait polls until at least n messages arrived (or the timeout passes)
// and returns them.
func (s *Server) Wait(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ms := s.Messages(t)
		if len(ms) >= n || time.Now().After(deadline) {
			return ms
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) get(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := http.Get(s.API + path)
	if err != nil {
		t.Fatalf("mailpit API: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("mailpit API %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("mailpit API %s: %v", path, err)
	}
}

// String describes the messages for a test failure.
func String(ms []Message) string {
	s := strconv.Itoa(len(ms)) + " messages:"
	for _, m := range ms {
		var to []string
		for _, a := range m.To {
			to = append(to, a.Address)
		}
		s += fmt.Sprintf("\n  to %v: %s", to, m.Subject)
	}
	return s
}
