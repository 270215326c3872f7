package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"strings"
	"time"
)

// TLS modes of the SMTP client.
const (
	// TLSAuto: STARTTLS, required unless the server is on loopback (where
	// the connection stays plain: it never leaves the machine).
	TLSAuto = "auto"
	// TLSStartTLS: STARTTLS required, on loopback too.
	TLSStartTLS = "starttls"
	// TLSImplicit: TLS from the first byte (port 465).
	TLSImplicit = "implicit"
)

// SMTP sends e-mail through one SMTP server.
type SMTP struct {
	Addr string // HOST:PORT
	TLS  string // TLSAuto ("" means it), TLSStartTLS or TLSImplicit
	// User and Password authenticate with AUTH PLAIN or LOGIN (whichever
	// the server offers, PLAIN first); no AUTH when User is "". The
	// password is never sent over a plain connection to a server that is
	// not on loopback, and never appears in an error.
	User, Password string
	// RootCAs verify the server's certificate; nil means the system roots.
	RootCAs *x509.CertPool
	// Timeout bounds one whole delivery (default 60 s).
	Timeout time.Duration
	// LocalName is the name given in EHLO (default: this host's name).
	LocalName string
}

var _ Sender = (*SMTP)(nil)

// ErrNoTLS: the server does not offer STARTTLS where it is required.
var ErrNoTLS = errors.New("notify: the SMTP server does not offer STARTTLS")

// isLoopback reports whether host (a name or an IP literal) is this
// machine: "localhost" or a loopback address. Names are not resolved.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Send delivers m (an e-mail) to m.To.
func (s *SMTP) Send(ctx context.Context, m *Message) error {
	if len(m.To) == 0 {
		return errors.New("notify: an e-mail without recipients")
	}
	return s.send(ctx, m.From, m.To, m.Data)
}

func (s *SMTP) send(ctx context.Context, from string, to []string, data []byte) error {
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return fmt.Errorf("SMTP server %q is not HOST:PORT", s.Addr)
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("connect to SMTP server %s: %w", s.Addr, err)
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	tc := &tls.Config{ServerName: host, RootCAs: s.RootCAs, MinVersion: tls.VersionTLS12}
	tlsOn := false
	if s.TLS == TLSImplicit {
		t := tls.Client(conn, tc)
		if err := t.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS with SMTP server %s: %w", s.Addr, err)
		}
		conn, tlsOn = t, true
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return fmt.Errorf("SMTP server %s: %w", s.Addr, err)
	}
	defer c.Close()
	local := s.LocalName
	if local == "" {
		local, _ = os.Hostname()
		if local == "" {
			local = "localhost"
		}
	}
	if err := c.Hello(local); err != nil {
		return fmt.Errorf("SMTP server %s: %w", s.Addr, err)
	}
	if !tlsOn {
		offered, _ := c.Extension("STARTTLS")
		switch {
		case offered && (s.TLS == TLSStartTLS || !isLoopback(host)):
			if err := c.StartTLS(tc); err != nil {
				return fmt.Errorf("STARTTLS with SMTP server %s: %w", s.Addr, err)
			}
			tlsOn = true
		case s.TLS == TLSStartTLS || !isLoopback(host):
			return fmt.Errorf("%w: %s offers no STARTTLS, and coffer sends mail to a server that is not on loopback only over TLS (use --smtp-tls=implicit for a server on port 465)", ErrNoTLS, s.Addr)
		}
	}
	if s.User != "" {
		ok, mechs := c.Extension("AUTH")
		if !ok {
			return fmt.Errorf("SMTP server %s offers no AUTH, but --smtp-user is set", s.Addr)
		}
		var a smtp.Auth
		switch fields := strings.Fields(strings.ToUpper(mechs)); {
		case contains(fields, "PLAIN"):
			a = &plainAuth{user: s.User, pass: s.Password, tls: tlsOn, loopback: isLoopback(host)}
		case contains(fields, "LOGIN"):
			a = &loginAuth{user: s.User, pass: s.Password, tls: tlsOn, loopback: isLoopback(host)}
		default:
			return fmt.Errorf("SMTP server %s offers neither AUTH PLAIN nor LOGIN (it offers %s)", s.Addr, mechs)
		}
		if err := c.Auth(a); err != nil {
			return fmt.Errorf("SMTP login as %s on %s failed: %s", s.User, s.Addr, scrub(err.Error(), s.Password))
		}
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("SMTP server %s refused the sender: %w", s.Addr, err)
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return fmt.Errorf("SMTP server %s refused recipient %s: %w", s.Addr, r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("SMTP server %s: %w", s.Addr, err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("send message to %s: %w", s.Addr, err)
	}
	// The server's answer to the end of the data is its acceptance.
	if err := w.Close(); err != nil {
		return fmt.Errorf("SMTP server %s did not accept the message: %w", s.Addr, err)
	}
	c.Quit() // accepted already: a failed QUIT changes nothing
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scrub removes a secret from a text that goes into an error.
func scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "[password]")
}

// plainAuth is AUTH PLAIN (RFC 4616), refused on a plain connection to a
// server that is not on loopback.
type plainAuth struct {
	user, pass    string
	tls, loopback bool
}

func (a *plainAuth) Start(*smtp.ServerInfo) (string, []byte, error) {
	if !a.tls && !a.loopback {
		return "", nil, errors.New("notify: refusing to send a password over a plain connection")
	}
	return "PLAIN", []byte("\x00" + a.user + "\x00" + a.pass), nil
}

func (a *plainAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("notify: unexpected AUTH PLAIN challenge")
	}
	return nil, nil
}

// loginAuth is AUTH LOGIN: the server asks for the user name, then the
// password.
type loginAuth struct {
	user, pass    string
	tls, loopback bool
	step          int
}

func (a *loginAuth) Start(*smtp.ServerInfo) (string, []byte, error) {
	if !a.tls && !a.loopback {
		return "", nil, errors.New("notify: refusing to send a password over a plain connection")
	}
	a.step = 0
	return "LOGIN", nil, nil
}

func (a *loginAuth) Next(challenge []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	a.step++
	q := strings.ToLower(strings.TrimSpace(string(challenge)))
	switch {
	case strings.HasPrefix(q, "user") || (a.step == 1 && !strings.HasPrefix(q, "pass")):
		return []byte(a.user), nil
	case strings.HasPrefix(q, "pass") || a.step == 2:
		return []byte(a.pass), nil
	}
	return nil, errors.New("notify: unexpected AUTH LOGIN challenge")
}
