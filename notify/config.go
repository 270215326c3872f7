package notify

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"

	"coffer/engine"
)

// ErrConfig marks a mistake in the notification settings (the CLI exits 2).
var ErrConfig = errors.New("notify: bad configuration")

func configf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// Names of the built-in targets in routes: the operator's address
// (Config.Operator) and every webhook of Config.Webhooks.
const (
	TargetOperator = "operator"
	TargetWebhooks = "webhooks"
)

// DefaultMinSeverity is the least severity an event needs to go to the
// built-in targets when no route names them: operator actions and worse,
// not the informational events that feed metrics (backup.finished, ...).
const DefaultMinSeverity = engine.SevNotice

// Config is the notification setup: the CLI's flags and environment,
// plus an optional file of further targets and routes.
type Config struct {
	SMTP         string // HOST:PORT of the SMTP server; "" = no e-mail
	SMTPTLS      string // TLSAuto (""), TLSStartTLS or TLSImplicit
	SMTPUser     string
	SMTPPassword string // from a file or the environment, never a flag
	// CAFile is a PEM file of the authorities that sign the SMTP server's
	// and the webhooks' certificates; "" means the system roots.
	CAFile   string
	From     string // sender address; "" means engine.DefaultReportFrom()
	Operator string // the operator's address: summaries and alerts
	Webhooks []string
	// WebhookSecret signs every webhook of Webhooks.
	WebhookSecret []byte
	// File holds further targets and routes (LoadFile); nil for none.
	File *File
}

// File is the optional operator file of targets and routes (JSON; see
// docs/design.md, chapter 16).
type File struct {
	Targets []FileTarget `json:"targets"`
	Routes  []Route      `json:"routes"`
}

// FileTarget is a named target of the file: an e-mail address (sent
// through the configured SMTP server) or a webhook with its own secret.
type FileTarget struct {
	Name       string `json:"name"`
	Email      string `json:"email,omitempty"`
	Webhook    string `json:"webhook,omitempty"`
	SecretFile string `json:"secret_file,omitempty"`
	secret     []byte
}

// Route sends the events it matches to its targets: an event matches
// when its kind matches one of Kinds ("scrub.damage", "drive.*", "*";
// empty means every kind) and its severity is at least MinSeverity
// (default notice).
type Route struct {
	Targets     []string `json:"targets"`
	Kinds       []string `json:"kinds,omitempty"`
	MinSeverity string   `json:"min_severity,omitempty"`
}

// Bounds of the file.
const (
	maxConfigFile = 64 << 10
	maxSecretFile = 4 << 10
	maxTargets    = 64
	maxRoutes     = 64
)

// LoadFile reads and checks the operator's file of targets and routes,
// and the secret files it names.
func LoadFile(p string) (*File, error) {
	b, err := readBounded(p, maxConfigFile)
	if err != nil {
		return nil, configf("notification file %s: %v", p, err)
	}
	f, err := ParseFile(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, p)
	}
	for i := range f.Targets {
		t := &f.Targets[i]
		if t.Webhook == "" {
			continue
		}
		sp := t.SecretFile
		if !filepath.IsAbs(sp) {
			sp = filepath.Join(filepath.Dir(p), sp)
		}
		if t.secret, err = ReadSecret(sp); err != nil {
			return nil, configf("target %q of %s: %v", t.Name, p, err)
		}
	}
	return f, nil
}

// ParseFile decodes and checks a file of targets and routes (secret files
// are not read). Unknown fields are refused.
func ParseFile(b []byte) (*File, error) {
	if len(b) > maxConfigFile {
		return nil, configf("notification file of %d bytes (at most %d)", len(b), maxConfigFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, configf("notification file is not valid: %v", err)
	}
	if dec.More() {
		return nil, configf("notification file holds more than one JSON object")
	}
	if len(f.Targets) > maxTargets || len(f.Routes) > maxRoutes {
		return nil, configf("notification file has more than %d targets or %d routes", maxTargets, maxRoutes)
	}
	names := map[string]bool{TargetOperator: true, TargetWebhooks: true}
	for _, t := range f.Targets {
		switch {
		case t.Name == "" || len(t.Name) > 64 || strings.ContainsAny(t.Name, " \t\r\n"):
			return nil, configf("target name %q must be 1 to 64 characters without spaces", t.Name)
		case names[t.Name]:
			return nil, configf("target name %q is used twice (or is a built-in name)", t.Name)
		case (t.Email == "") == (t.Webhook == ""):
			return nil, configf("target %q needs exactly one of email and webhook", t.Name)
		case t.Email != "" && !validAddress(t.Email):
			return nil, configf("target %q: %q is not one e-mail address", t.Name, t.Email)
		case t.Webhook != "" && t.SecretFile == "":
			return nil, configf("target %q: a webhook needs a secret_file (its requests are signed)", t.Name)
		}
		if t.Webhook != "" {
			if err := checkWebhookURL(t.Webhook); err != nil {
				return nil, configf("target %q: %v", t.Name, err)
			}
		}
		names[t.Name] = true
	}
	for i, r := range f.Routes {
		if len(r.Targets) == 0 {
			return nil, configf("route %d names no targets", i+1)
		}
		for _, n := range r.Targets {
			if !names[n] {
				return nil, configf("route %d names target %q, which is not defined", i+1, n)
			}
		}
		for _, k := range r.Kinds {
			if !validKindPattern(k) {
				return nil, configf("route %d: %q is not an event kind (one of %s, or a prefix such as drive.*, or *)", i+1, k, strings.Join(engine.EventKinds, ", "))
			}
		}
		if r.MinSeverity != "" {
			if _, err := engine.ParseSeverity(r.MinSeverity); err != nil {
				return nil, configf("route %d: %v", i+1, errors.Unwrap(err))
			}
		}
	}
	return &f, nil
}

func validKindPattern(k string) bool {
	if k == "*" {
		return true
	}
	for _, kind := range engine.EventKinds {
		if kindMatches(k, kind) {
			return true
		}
	}
	return false
}

// kindMatches reports whether pattern ("*", "drive.*" or an exact kind)
// matches kind.
func kindMatches(pattern, kind string) bool {
	if pattern == "*" || pattern == kind {
		return true
	}
	if p, ok := strings.CutSuffix(pattern, ".*"); ok {
		return strings.HasPrefix(kind, p+".")
	}
	return false
}

func validAddress(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s
}

// ReadSecret reads a secret (a webhook key, a password) from a file: at
// most 4 KiB, surrounding white space removed, not empty.
func ReadSecret(p string) ([]byte, error) {
	b, err := readBounded(p, maxSecretFile)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, fmt.Errorf("secret file %s is empty", p)
	}
	return b, nil
}

func readBounded(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, max)
	}
	return b, nil
}

// Validate checks the configuration; each mistake is one sentence.
func (c *Config) Validate() error {
	if c.SMTP != "" {
		host, port, err := net.SplitHostPort(c.SMTP)
		if err != nil || host == "" || port == "" {
			return configf("--smtp %q is not HOST:PORT", c.SMTP)
		}
	}
	switch c.SMTPTLS {
	case "", TLSAuto, TLSStartTLS, TLSImplicit:
	default:
		return configf("--smtp-tls %q is not auto, starttls or implicit", c.SMTPTLS)
	}
	if c.SMTPUser != "" && c.SMTPPassword == "" {
		return configf("--smtp-user needs a password: set COFFER_SMTP_PASSWORD_FILE to a file holding it")
	}
	if c.From != "" && !validAddress(c.From) {
		return configf("--mail-from %q is not one e-mail address", c.From)
	}
	if c.Operator != "" && !validAddress(c.Operator) {
		return configf("--operator-email %q is not one e-mail address", c.Operator)
	}
	needMail := c.Operator != ""
	if c.File != nil {
		for _, t := range c.File.Targets {
			needMail = needMail || t.Email != ""
		}
	}
	if needMail && c.SMTP == "" {
		return configf("e-mail targets need an SMTP server: give --smtp HOST:PORT (or COFFER_SMTP)")
	}
	for _, w := range c.Webhooks {
		if err := checkWebhookURL(w); err != nil {
			return configf("%v", err)
		}
	}
	if len(c.Webhooks) > 0 && len(c.WebhookSecret) == 0 {
		return configf("webhooks are signed: set COFFER_WEBHOOK_SECRET_FILE to a file holding the secret")
	}
	if c.CAFile != "" {
		if _, err := c.roots(); err != nil {
			return err
		}
	}
	return nil
}

// Enabled reports whether anything is configured to be sent to.
func (c *Config) Enabled() bool {
	return c.SMTP != "" || len(c.Webhooks) > 0 || (c.File != nil && len(c.File.Targets) > 0)
}

func (c *Config) roots() (*x509.CertPool, error) {
	if c.CAFile == "" {
		return nil, nil
	}
	b, err := readBounded(c.CAFile, 1<<20)
	if err != nil {
		return nil, configf("CA file: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, configf("CA file %s holds no PEM certificate", c.CAFile)
	}
	return pool, nil
}

// dest is one resolved destination: an outbox target, and for e-mail the
// recipient.
type dest struct {
	name   string // the configured name (TargetOperator, a file target, ...)
	target string // outbox target: TargetEmail or WebhookTarget(url)
	email  string
}

type route struct {
	dests []dest
	kinds []string
	min   engine.Severity
}

// resolve builds the senders and routes of a validated configuration.
func (c *Config) resolve() (map[string]Sender, []route, []dest, error) {
	roots, err := c.roots()
	if err != nil {
		return nil, nil, nil, err
	}
	senders := map[string]Sender{}
	if c.SMTP != "" {
		senders[TargetEmail] = &SMTP{Addr: c.SMTP, TLS: c.SMTPTLS, User: c.SMTPUser, Password: c.SMTPPassword, RootCAs: roots}
	}
	byName := map[string][]dest{}
	var all []dest
	add := func(name string, d dest) {
		byName[name] = append(byName[name], d)
		all = append(all, d)
	}
	if c.Operator != "" {
		add(TargetOperator, dest{name: TargetOperator, target: TargetEmail, email: c.Operator})
	}
	for _, w := range c.Webhooks {
		t := WebhookTarget(w)
		senders[t] = &Webhook{URL: w, Secret: c.WebhookSecret, RootCAs: roots}
		add(TargetWebhooks, dest{name: TargetWebhooks, target: t})
	}
	var routes []route
	named := map[string]bool{}
	if c.File != nil {
		for _, ft := range c.File.Targets {
			if ft.Email != "" {
				add(ft.Name, dest{name: ft.Name, target: TargetEmail, email: ft.Email})
				continue
			}
			t := WebhookTarget(ft.Webhook)
			senders[t] = &Webhook{URL: ft.Webhook, Secret: ft.secret, RootCAs: roots}
			add(ft.Name, dest{name: ft.Name, target: t})
		}
		for _, r := range c.File.Routes {
			rt := route{kinds: r.Kinds, min: DefaultMinSeverity}
			if r.MinSeverity != "" {
				rt.min, _ = engine.ParseSeverity(r.MinSeverity)
			}
			for _, n := range r.Targets {
				named[n] = true
				rt.dests = append(rt.dests, byName[n]...)
			}
			routes = append(routes, rt)
		}
	}
	for _, n := range []string{TargetOperator, TargetWebhooks} {
		if !named[n] && len(byName[n]) > 0 {
			routes = append(routes, route{dests: byName[n], min: DefaultMinSeverity})
		}
	}
	return senders, routes, all, nil
}

// match returns the destinations of ev, each once.
func match(routes []route, ev engine.Event) []dest {
	var out []dest
	seen := map[dest]bool{}
	for _, r := range routes {
		if ev.Severity < r.min {
			continue
		}
		ok := len(r.kinds) == 0
		for _, k := range r.kinds {
			ok = ok || kindMatches(k, ev.Kind)
		}
		if !ok {
			continue
		}
		for _, d := range r.dests {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}
