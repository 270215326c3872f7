package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Webhook headers (docs/design.md, chapter 16).
const (
	// HeaderSignature carries "sha256=" and the hex HMAC-SHA256 of the
	// request body under the webhook secret.
	HeaderSignature = "X-Coffer-Signature"
	// HeaderDelivery carries the message ID: the same for every try of one
	// message, so a receiver can drop a repeat.
	HeaderDelivery = "X-Coffer-Delivery"
	// HeaderEvent carries the event kind.
	HeaderEvent = "X-Coffer-Event"
)

// Sign returns the X-Coffer-Signature value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature reports whether sig is the signature of body under
// secret (in constant time): what a receiver checks.
func VerifySignature(secret, body []byte, sig string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(sig))
}

// Webhook posts JSON alerts to one URL.
type Webhook struct {
	URL    string
	Secret []byte
	// RootCAs verify an https server's certificate; nil means the system
	// roots.
	RootCAs *x509.CertPool
	// Timeout bounds one request (default 10 s).
	Timeout time.Duration
}

var _ Sender = (*Webhook)(nil)

// checkWebhookURL accepts https URLs, and http URLs of loopback hosts
// only (a secret-signed alert still tells who is down to anyone on the
// path).
func checkWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("webhook %q is not an http(s) URL", redactURL(raw))
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("webhook %s is plain http to a host that is not loopback: use https", redactURL(raw))
	}
	return fmt.Errorf("webhook %q is not an http(s) URL", redactURL(raw))
}

// redactURL drops a URL's user information, query and fragment, which may
// hold tokens, for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

// WebhookTarget is the target name of a webhook URL: "webhook-" and the
// first 8 hex digits of its SHA-256, so that the name does not change with
// the order of flags and does not show a token the URL may hold.
func WebhookTarget(raw string) string {
	h := sha256.Sum256([]byte(raw))
	return "webhook-" + hex.EncodeToString(h[:4])
}

// Send posts m.Data, signed, and succeeds on a 2xx answer. Redirects are
// not followed.
func (w *Webhook) Send(ctx context.Context, m *Message) error {
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(m.Data))
	if err != nil {
		return fmt.Errorf("webhook %s: %v", redactURL(w.URL), errors.Unwrap(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "coffer")
	req.Header.Set(HeaderSignature, Sign(w.Secret, m.Data))
	req.Header.Set(HeaderDelivery, m.ID)
	if m.Event != "" {
		req.Header.Set(HeaderEvent, m.Event)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: w.RootCAs, MinVersion: tls.VersionTLS12}, Proxy: http.ProxyFromEnvironment}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a token
		}
		return fmt.Errorf("webhook %s: %v", redactURL(w.URL), err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s answered %s", redactURL(w.URL), strings.TrimSpace(resp.Status))
	}
	return nil
}
