package notify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/engine"
	"coffer/internal/mailpittest"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{SMTP: "127.0.0.1:25", Operator: "ops@p.example", Webhooks: []string{"https://hooks.example/x"}, WebhookSecret: []byte("k")}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"smtp not host:port": {func(c *Config) { c.SMTP = "mail.example" }, "is not HOST:PORT"},
		"tls mode":           {func(c *Config) { c.SMTPTLS = "ssl" }, "is not auto, starttls or implicit"},
		"user, no password":  {func(c *Config) { c.SMTPUser = "u" }, "COFFER_SMTP_PASSWORD_FILE"},
		"operator":           {func(c *Config) { c.Operator = "ops" }, "not one e-mail address"},
		"two operators":      {func(c *Config) { c.Operator = "a@b.example, c@d.example" }, "not one e-mail address"},
		"from":               {func(c *Config) { c.From = "Coffer <c@d.example>" }, "not one e-mail address"},
		"operator, no smtp":  {func(c *Config) { c.SMTP = "" }, "need an SMTP server"},
		"webhook plain http": {func(c *Config) { c.Webhooks = []string{"http://hooks.example/x"} }, "use https"},
		"webhook scheme":     {func(c *Config) { c.Webhooks = []string{"ftp://hooks.example/x"} }, "not an http(s) URL"},
		"webhook no secret":  {func(c *Config) { c.WebhookSecret = nil }, "COFFER_WEBHOOK_SECRET_FILE"},
		"ca file":            {func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, "CA file"},
	} {
		c := ok
		tc.mod(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	// A token in a webhook URL never appears in an error.
	c := ok
	c.Webhooks = []string{"http://user:pw@hooks.example/x?token=tok123"}
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "tok123") || strings.Contains(err.Error(), "pw@") {
		t.Errorf("error shows the URL's secrets: %v", err)
	}
	if err := (&Config{Webhooks: []string{"http://127.0.0.1:9/x"}, WebhookSecret: []byte("k")}).Validate(); err != nil {
		t.Errorf("plain http on loopback: %v", err)
	}
}

func TestParseFile(t *testing.T) {
	good := `{"targets":[{"name":"pager","webhook":"https://pager.example/h","secret_file":"pager.key"},{"name":"team","email":"team@p.example"}],
	  "routes":[{"targets":["pager"],"kinds":["scrub.damage","drive.*"],"min_severity":"error"},{"targets":["team","operator"]}]}`
	if _, err := ParseFile([]byte(good)); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]string{
		"unknown field":   `{"targets":[],"route":[]}`,
		"two objects":     `{} {}`,
		"no name":         `{"targets":[{"email":"a@b.example"}]}`,
		"built-in name":   `{"targets":[{"name":"operator","email":"a@b.example"}]}`,
		"twice":           `{"targets":[{"name":"a","email":"a@b.example"},{"name":"a","email":"c@b.example"}]}`,
		"both kinds":      `{"targets":[{"name":"a","email":"a@b.example","webhook":"https://x.example"}]}`,
		"bad email":       `{"targets":[{"name":"a","email":"a"}]}`,
		"webhook secret":  `{"targets":[{"name":"a","webhook":"https://x.example"}]}`,
		"route no target": `{"routes":[{"kinds":["*"]}]}`,
		"route unknown":   `{"routes":[{"targets":["nobody"]}]}`,
		"kind":            `{"routes":[{"targets":["operator"],"kinds":["scrub.damaged"]}]}`,
		"severity":        `{"routes":[{"targets":["operator"],"min_severity":"urgent"}]}`,
	} {
		if _, err := ParseFile([]byte(in)); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte(`{"targets":[{"name":"team","email":"team@p.example"}],"routes":[{"targets":["team"],"kinds":["drive.*"]}]}`))
	f.Add([]byte(`{"routes":[{"targets":["operator"],"min_severity":"error"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := ParseFile(b)
		if err != nil {
			return
		}
		// What is accepted resolves without surprises.
		c := Config{SMTP: "127.0.0.1:25", Operator: "o@p.example", File: file}
		for i := range file.Targets {
			file.Targets[i].secret = []byte("k")
		}
		if c.Validate() == nil {
			if _, _, _, err := c.resolve(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestRoutes(t *testing.T) {
	file, err := ParseFile([]byte(`{"targets":[{"name":"team","email":"team@p.example"}],
	  "routes":[{"targets":["team"],"kinds":["drive.*"]},{"targets":["operator"],"kinds":["scrub.*","audit.failed"],"min_severity":"error"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	hook := "https://hooks.example/x"
	c := Config{SMTP: "127.0.0.1:25", Operator: "ops@p.example", Webhooks: []string{hook}, WebhookSecret: []byte("k"), File: file}
	_, routes, _, err := c.resolve()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kind string
		sev  engine.Severity
		want string // destinations, by name
	}{
		{engine.EventDriveFailed, engine.SevWarning, "team webhooks"},
		{engine.EventScrubDamage, engine.SevError, "operator webhooks"},
		{engine.EventScrubClean, engine.SevInfo, ""},
		{engine.EventTenantLocked, engine.SevNotice, "webhooks"}, // the file routes the operator: the default is off for it
		{engine.EventAuditFailed, engine.SevCritical, "operator webhooks"},
		{engine.EventBackupFinished, engine.SevInfo, ""},
	} {
		var got []string
		for _, d := range match(routes, engine.Event{Kind: tc.kind, Severity: tc.sev}) {
			got = append(got, d.name)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s/%v: %v, want %q", tc.kind, tc.sev, got, tc.want)
		}
	}
	if d := match(routes, engine.Event{Kind: engine.EventDriveFailed, Severity: engine.SevWarning}); d[1].target != WebhookTarget(hook) {
		t.Errorf("webhook target %q", d[1].target)
	}
}

// TestHandle: alerts queued per target; a drive found unreachable twice
// the same day is told once; a shredded tenant's reports are dropped.
func TestHandle(t *testing.T) {
	dir := t.TempDir()
	n, err := New(Config{SMTP: "127.0.0.1:9", Operator: "ops@p.example", Webhooks: []string{"http://127.0.0.1:9/h"}, WebhookSecret: []byte("k")}, dir, "repo1")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	n.Handle(engine.Event{Kind: engine.EventDriveUnreachable, Severity: engine.SevError, Drive: "d1", Time: at})
	n.Handle(engine.Event{Kind: engine.EventDriveUnreachable, Severity: engine.SevError, Drive: "d1", Time: at.Add(time.Hour)})
	n.Handle(engine.Event{Kind: engine.EventBackupFinished, Severity: engine.SevInfo, Tenant: "acme", Time: at})
	ms, _ := n.Outbox().Pending()
	if len(ms) != 2 {
		t.Fatalf("%d messages, want 2 (one e-mail, one webhook)", len(ms))
	}
	for _, m := range ms {
		switch m.Target {
		case TargetEmail:
			if m.To[0] != "ops@p.example" || !strings.Contains(string(m.Data), "Subject: [coffer ERROR] drive.unreachable") ||
				!strings.Contains(string(m.Data), "Message-ID: <coffer."+m.ID+"@") {
				t.Errorf("e-mail:\n%s", m.Data)
			}
		default:
			var a Alert
			if err := json.Unmarshal(m.Data, &a); err != nil || a.ID != m.ID || a.Drive != "d1" || a.Severity != "error" || a.Repository != "repo1" {
				t.Errorf("webhook body %s: %v", m.Data, err)
			}
		}
	}
	m := testMessage("report")
	m.Tenant = "t1"
	n.Outbox().Enqueue(m)
	n.Handle(engine.Event{Kind: engine.EventTenantShredded, Severity: engine.SevNotice, TenantID: "t1", Tenant: "acme", Time: at})
	ms, _ = n.Outbox().Pending()
	for _, m := range ms {
		if m.Tenant == "t1" {
			t.Error("a shredded tenant's report still waits")
		}
	}
	if len(ms) != 4 {
		t.Errorf("%d messages, want 4", len(ms))
	}
}

func TestWebhook(t *testing.T) {
	var got []*http.Request
	var bodies [][]byte
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got, bodies = append(got, r), append(bodies, b)
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	m := &Message{ID: strings.Repeat("ab", 16), Event: engine.EventScrubDamage, Data: []byte(`{"kind":"scrub.damage"}`)}
	w := &Webhook{URL: srv.URL + "/hook", Secret: []byte("key")}
	if err := w.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	r := got[0]
	if r.Method != "POST" || r.Header.Get(HeaderDelivery) != m.ID || r.Header.Get(HeaderEvent) != engine.EventScrubDamage ||
		r.Header.Get("Content-Type") != "application/json" || string(bodies[0]) != string(m.Data) {
		t.Errorf("request %v %v", r.Method, r.Header)
	}
	if !VerifySignature([]byte("key"), bodies[0], r.Header.Get(HeaderSignature)) || VerifySignature([]byte("other"), bodies[0], r.Header.Get(HeaderSignature)) ||
		VerifySignature([]byte("key"), []byte(`{"kind":"x"}`), r.Header.Get(HeaderSignature)) {
		t.Errorf("signature %q", r.Header.Get(HeaderSignature))
	}
	status = http.StatusServiceUnavailable
	if err := w.Send(context.Background(), m); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("503: %v", err)
	}
	status = http.StatusOK
	w.URL = srv.URL + "/redirect?token=tok999"
	if err := w.Send(context.Background(), m); err == nil || strings.Contains(err.Error(), "tok999") {
		t.Errorf("a redirect counts as delivered, or the error shows the token: %v", err)
	}
	if len(got) != 3 {
		t.Errorf("%d requests: the redirect was followed", len(got))
	}
	w.URL = "http://" + mailpittest.FreePort(t) + "/down"
	if err := w.Send(context.Background(), m); err == nil {
		t.Error("a webhook nobody listens to took the alert")
	}
}

func TestLoginAuth(t *testing.T) {
	a := &loginAuth{user: "u", pass: "p", tls: true}
	mech, resp, err := a.Start(&smtp.ServerInfo{TLS: true})
	if mech != "LOGIN" || resp != nil || err != nil {
		t.Fatal(mech, resp, err)
	}
	for _, tc := range []struct{ challenge, want string }{{"Username:", "u"}, {"Password:", "p"}} {
		if b, err := a.Next([]byte(tc.challenge), true); err != nil || string(b) != tc.want {
			t.Errorf("%s: %q %v", tc.challenge, b, err)
		}
	}
	for _, a := range []smtp.Auth{&loginAuth{user: "u", pass: "p"}, &plainAuth{user: "u", pass: "p"}} {
		if _, _, err := a.Start(&smtp.ServerInfo{}); err == nil {
			t.Errorf("%T sends a password over a plain connection to a server not on loopback", a)
		}
	}
	if _, b, err := (&plainAuth{user: "u", pass: "p", loopback: true}).Start(&smtp.ServerInfo{}); err != nil || string(b) != "\x00u\x00p" {
		t.Errorf("plain on loopback: %q %v", b, err)
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{"localhost": true, "127.0.0.1": true, "127.9.9.9": true, "::1": true, "[::1]": true,
		"mail.example": false, "10.0.0.1": false, "": false, "localhost.example": false} {
		if isLoopback(host) != want {
			t.Errorf("isLoopback(%q) != %v", host, want)
		}
	}
}

// testCert makes a self-signed certificate for 127.0.0.1 and returns the
// PEM files and a pool that trusts it.
func testCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames: []string{"localhost"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func testMail(id, to string) *Message {
	return &Message{ID: id, Target: TargetEmail, From: "coffer@p.example", To: []string{to},
		Data: renderMail("coffer@p.example", to, "test "+id, time.Now(), "<"+id+"@p.example>", "hello\n")}
}

// TestSMTPMailpit sends through a real SMTP server: plain on loopback,
// STARTTLS with AUTH, implicit TLS, and refusals.
func TestSMTPMailpit(t *testing.T) {
	ctx := context.Background()
	certFile, keyFile, pool := testCert(t)
	t.Run("plain on loopback", func(t *testing.T) {
		mp := mailpittest.Start(t, mailpittest.Options{Auth: true, InsecureAuth: true})
		s := &SMTP{Addr: mp.SMTP, User: "coffer", Password: "pw"}
		if err := s.Send(ctx, testMail("m1", "a@b.example")); err != nil {
			t.Fatal(err)
		}
		// STARTTLS required, and the server offers none.
		s.TLS = TLSStartTLS
		if err := s.Send(ctx, testMail("m2", "a@b.example")); !errors.Is(err, ErrNoTLS) {
			t.Fatalf("starttls mode on a plain server: %v", err)
		}
		if ms := mp.Messages(t); len(ms) != 1 || ms[0].Subject != "test m1" || ms[0].To[0].Address != "a@b.example" {
			t.Fatalf("%s", mailpittest.String(ms))
		}
	})
	t.Run("starttls and auth", func(t *testing.T) {
		mp := mailpittest.Start(t, mailpittest.Options{TLSCert: certFile, TLSKey: keyFile, RequireTLS: true, Auth: true})
		s := &SMTP{Addr: mp.SMTP, TLS: TLSStartTLS, User: "coffer", Password: "pw", RootCAs: pool}
		if err := s.Send(ctx, testMail("m3", "a@b.example")); err != nil {
			t.Fatal(err)
		}
		// An untrusted certificate is refused.
		s.RootCAs = x509.NewCertPool()
		if err := s.Send(ctx, testMail("m4", "a@b.example")); err == nil {
			t.Fatal("an untrusted certificate was accepted")
		}
		// On loopback, auto mode keeps the connection plain: a server that
		// requires TLS refuses it (starttls mode is then the choice).
		s.TLS, s.RootCAs = TLSAuto, pool
		if err := s.Send(ctx, testMail("m5", "a@b.example")); err == nil {
			t.Error("auto mode on loopback used STARTTLS, or the server took mail without it")
		}
		ms := mp.Messages(t)
		if len(ms) == 0 || ms[len(ms)-1].Subject != "test m3" {
			t.Fatalf("%s", mailpittest.String(ms))
		}
	})
	t.Run("implicit tls", func(t *testing.T) {
		mp := mailpittest.Start(t, mailpittest.Options{TLSCert: certFile, TLSKey: keyFile, ImplicitTLS: true})
		s := &SMTP{Addr: mp.SMTP, TLS: TLSImplicit, RootCAs: pool}
		if err := s.Send(ctx, testMail("m6", "a@b.example")); err != nil {
			t.Fatal(err)
		}
		if ms := mp.Messages(t); len(ms) != 1 {
			t.Fatalf("%s", mailpittest.String(ms))
		}
	})
	t.Run("down", func(t *testing.T) {
		s := &SMTP{Addr: mailpittest.FreePort(t), Timeout: 2 * time.Second}
		if err := s.Send(ctx, testMail("m7", "a@b.example")); err == nil {
			t.Fatal("a server nobody runs took the mail")
		}
	})
}
