package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"coffer/engine"
	"coffer/internal/mailpittest"
	"coffer/notify"
)

const notifySecret = "zq-notify-secret-9183" // in file names and the host: never in a message

// notifyRepo makes the repository of the acceptance test: "idle" backed
// up ten days ago (it has packs, and is flagged), "locked" never backed up
// and locked, "gone" backed up and shredded.
func notifyRepo(t *testing.T) *testRepo {
	t.Helper()
	r := newTestRepo(t, "")
	e, err := engine.Open(r.dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), notifySecret)
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, notifySecret+".txt"), bytes.Repeat([]byte("notify test data\n"), 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"idle", "locked", "gone"} {
		if _, err := e.CreateTenant(ctx, name, engine.TenantOptions{Contact: name + "@customer.example"}); err != nil {
			t.Fatal(err)
		}
		if name == "locked" {
			continue
		}
		tn, err := e.OpenTenant(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tn.Backup(ctx, []string{src}, engine.BackupOptions{Host: notifySecret, Tags: []string{notifySecret}, Time: time.Now().Add(-10 * 24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.LockTenant(ctx, "locked"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ShredTenant(ctx, "gone", "gone"); err != nil {
		t.Fatal(err)
	}
	return r
}

// webhookReceiver records the requests posted to it.
type webhookReceiver struct {
	mu   sync.Mutex
	reqs []webhookRequest
}

type webhookRequest struct {
	header http.Header
	body   []byte
}

func (w *webhookReceiver) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.mu.Lock()
	w.reqs = append(w.reqs, webhookRequest{r.Header.Clone(), b})
	w.mu.Unlock()
}

func (w *webhookReceiver) requests() []webhookRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]webhookRequest(nil), w.reqs...)
}

// TestNotifyAcceptance is issue 13's "How we will know": with Mailpit on
// loopback and three tenants (idle, locked, shredded), report --send
// leaves one message for each of the first two (flagged) and the operator
// summary, none for the shredded one, and a second --send in the same
// week sends nothing; a scrub that finds a removed drive's shards missing
// produces one alert e-mail and one signed webhook (the receiver is down
// at first); /metrics shows the drive failed and the scrub's problems.
func TestNotifyAcceptance(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{})
	r := notifyRepo(t)
	t.Setenv("COFFER_SMTP", mp.SMTP)
	t.Setenv("COFFER_OPERATOR_EMAIL", "ops@provider.example")
	t.Setenv("COFFER_MAIL_FROM", "coffer@backup1.provider.example")

	// The weekly report, twice.
	for i := 0; i < 2; i++ {
		res := coffer(t, nil, "--repo", r.dir, "report", "--send")
		if res.code != exitOK {
			t.Fatalf("report --send (run %d):\n%s", i+1, res)
		}
		ms := mp.Messages(t)
		if len(ms) != 3 {
			t.Fatalf("after run %d, Mailpit holds %s; want 3", i+1, mailpittest.String(ms))
		}
	}
	byTo := map[string]mailpittest.Message{}
	for _, m := range mp.Messages(t) {
		if len(m.To) != 1 {
			t.Fatalf("message with %d recipients: %+v", len(m.To), m)
		}
		byTo[m.To[0].Address] = m
	}
	for _, name := range []string{"idle", "locked"} {
		m, ok := byTo[name+"@customer.example"]
		if !ok || !strings.Contains(m.Subject, "report for "+name) || !strings.HasSuffix(m.Subject, engine.ReportFlag) {
			t.Errorf("%s: got %+v, want its flagged report", name, m)
		}
	}
	if m, ok := byTo["ops@provider.example"]; !ok || !strings.Contains(m.Subject, "2 tenants, 2 flagged") {
		t.Errorf("operator summary: got %+v", m)
	}
	if _, ok := byTo["gone@customer.example"]; ok {
		t.Error("the shredded tenant got a message")
	}

	// coffer serve with metrics and alerts to the operator and a webhook
	// that is not up yet.
	hookAddr := mailpittest.FreePort(t)
	secretFile := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(secretFile, []byte("s3cret-hook-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COFFER_WEBHOOKS", "http://"+hookAddr+"/hook")
	t.Setenv("COFFER_WEBHOOK_SECRET_FILE", secretFile)
	out := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, &globals{stdin: strings.NewReader(""), stdout: out, stderr: out},
			[]string{"--repo", r.dir, "serve", "--listen", "127.0.0.1:0", "--metrics", ":0", "--notify-retry", "100ms"})
	}()
	defer func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("serve exited %d:\n%s", code, out.String())
		}
	}()
	metricsRe := regexp.MustCompile(`metrics on (http://\S+)/metrics`)
	var base string
	for i := 0; i < 400 && (base == "" || !strings.Contains(out.String(), "admin socket:")); i++ {
		if m := metricsRe.FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		}
		time.Sleep(25 * time.Millisecond)
	}
	if base == "" {
		t.Fatalf("serve did not start:\n%s", out.String())
	}

	// A drive folder disappears; the nightly scrub (through the admin
	// socket) finds its shards missing.
	var drives []engine.DriveInfo
	if err := json.Unmarshal([]byte(mustCoffer(t, nil, "--repo", r.dir, "--json", "drive", "list").stdout), &struct {
		Drives *[]engine.DriveInfo `json:"drives"`
	}{&drives}); err != nil || len(drives) == 0 {
		t.Fatalf("drive list: %v", err)
	}
	lost := drives[0]
	if err := os.RemoveAll(lost.Path); err != nil {
		t.Fatal(err)
	}
	if res := coffer(t, nil, "--repo", r.dir, "scrub"); res.code != exitDamage || !strings.Contains(res.stdout, "missing") {
		t.Fatalf("scrub of a removed drive:\n%s", res)
	}

	// The webhook failed at least once before its receiver comes up.
	ob := filepath.Join(r.dir, "outbox", "pending")
	for i := 0; ; i++ {
		if hasFailedWebhook(t, ob) {
			break
		}
		if i == 200 {
			t.Fatalf("no failed webhook attempt in the outbox:\n%s", out.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	recv := &webhookReceiver{}
	ln, err := net.Listen("tcp", hookAddr)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: recv}
	go hs.Serve(ln)
	defer hs.Close()

	ms := mp.Wait(t, 4, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for len(recv.requests()) == 0 && time.Now().Before(deadline) {
		time.Sleep(25 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // long enough for a second delivery to show
	ms = mp.Messages(t)
	if len(ms) != 4 {
		t.Fatalf("after the scrub Mailpit holds %s; want the 3 reports and 1 alert", mailpittest.String(ms))
	}
	alert := ms[0] // newest first
	if alert.To[0].Address != "ops@provider.example" || !strings.Contains(alert.Subject, engine.EventScrubDamage) || !strings.Contains(alert.Subject, "missing") {
		t.Errorf("alert e-mail: %+v", alert)
	}
	if body := mp.Text(t, alert.ID); strings.Contains(body, notifySecret) || strings.Contains(body, "idle") || !strings.Contains(body, "missing") {
		t.Errorf("alert e-mail body:\n%s", body)
	}
	reqs := recv.requests()
	if len(reqs) != 1 {
		t.Fatalf("webhook got %d requests, want exactly 1", len(reqs))
	}
	h := reqs[0]
	if !notify.VerifySignature([]byte("s3cret-hook-key"), h.body, h.header.Get(notify.HeaderSignature)) {
		t.Errorf("webhook signature %q does not verify", h.header.Get(notify.HeaderSignature))
	}
	var a notify.Alert
	if err := json.Unmarshal(h.body, &a); err != nil || a.Kind != engine.EventScrubDamage || a.Counts["missing"] == 0 ||
		h.header.Get(notify.HeaderEvent) != engine.EventScrubDamage || h.header.Get(notify.HeaderDelivery) != a.ID {
		t.Errorf("webhook body %s (%v), headers %v", h.body, err, h.header)
	}
	if bytes.Contains(h.body, []byte(notifySecret)) {
		t.Errorf("webhook body holds tenant metadata: %s", h.body)
	}

	// /metrics: the drive failed, the scrub's problems; /healthz ok.
	fams := scrape(t, base+"/metrics")
	if v, ok := metricValue(fams, "coffer_drive_failed", map[string]string{"drive": lost.ID}); !ok || v != 1 {
		t.Errorf("coffer_drive_failed{drive=%s} = %v (%v), want 1", lost.ID, v, ok)
	}
	if v, ok := metricValue(fams, "coffer_scrub_last_problems", map[string]string{"kind": "missing"}); !ok || v == 0 {
		t.Errorf("coffer_scrub_last_problems{kind=missing} = %v (%v), want > 0", v, ok)
	}
	if v, ok := metricValue(fams, "coffer_packs_below_full_redundancy", nil); !ok || v == 0 {
		t.Errorf("coffer_packs_below_full_redundancy = %v (%v), want > 0", v, ok)
	}
	if v, ok := metricValue(fams, "coffer_drive_failed", map[string]string{"drive": drives[1].ID}); !ok || v != 0 {
		t.Errorf("coffer_drive_failed of a healthy drive = %v (%v), want 0", v, ok)
	}
	resp, err := http.Get(base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("/healthz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

type dtoFamily = dto.MetricFamily

// hasFailedWebhook reports whether a webhook message in the pending
// folder ob has a failed attempt.
func hasFailedWebhook(t *testing.T, ob string) bool {
	ents, _ := os.ReadDir(ob)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(ob, e.Name()))
		if err != nil {
			continue
		}
		var m notify.Message
		if json.Unmarshal(b, &m) == nil && strings.HasPrefix(m.Target, "webhook-") && m.Attempts > 0 {
			return true
		}
	}
	return false
}

// scrape reads and parses a Prometheus text endpoint.
func scrape(t *testing.T, url string) map[string]*dtoFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// metricValue finds the gauge or counter value of name with the labels.
func metricValue(fams map[string]*dtoFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// TestNotifyUsage: each mistake in the notification settings is one
// sentence and exit 2, before anything is done.
func TestNotifyUsage(t *testing.T) {
	r := newTestRepo(t, "")
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("k"), 0o600)
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--webhook", "https://hooks.example/h", "tenant", "list"}, "COFFER_WEBHOOK_SECRET_FILE"},
		{nil, []string{"--smtp", "mail.example", "tenant", "list"}, "is not HOST:PORT"},
		{nil, []string{"--smtp", "127.0.0.1:25", "--smtp-user", "u", "tenant", "list"}, "COFFER_SMTP_PASSWORD_FILE"},
		{nil, []string{"--smtp", "127.0.0.1:25", "--smtp-tls", "ssl", "tenant", "list"}, "auto, starttls or implicit"},
		{nil, []string{"--operator-email", "ops@p.example", "tenant", "list"}, "need an SMTP server"},
		{map[string]string{"COFFER_WEBHOOKS": "http://hooks.example/h", "COFFER_WEBHOOK_SECRET_FILE": secret}, []string{"tenant", "list"}, "use https"},
		{map[string]string{"COFFER_WEBHOOK_SECRET_FILE": filepath.Join(r.dir, "nonexistent")}, []string{"--webhook", "https://h.example/h", "tenant", "list"}, "COFFER_WEBHOOK_SECRET_FILE"},
		{nil, []string{"--notify-config", filepath.Join(r.dir, "nonexistent.json"), "tenant", "list"}, "notification file"},
		{nil, []string{"report", "--send"}, "needs an SMTP server"},
		{nil, []string{"notify", "test"}, "no notification target"},
		{nil, []string{"serve", "--listen", "127.0.0.1:0", "--metrics", "0.0.0.0:0"}, "not a loopback address"},
		{nil, []string{"serve", "--listen", "127.0.0.1:0", "--metrics", "[::]:0"}, "not a loopback address"},
		{nil, []string{"serve", "--listen", "127.0.0.1:0", "--metrics", "9464"}, "is not HOST:PORT"},
		{nil, []string{"serve", "--listen", "127.0.0.1:0", "--metrics-token-file", secret}, "needs --metrics"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			res := coffer(t, nil, append([]string{"--repo", r.dir}, tc.args...)...)
			checkErrorLine(t, res)
			if res.code != exitUsage || !strings.Contains(res.stderr, tc.want) {
				t.Errorf("got exit %d, want 2 and %q:\n%s", res.code, tc.want, res)
			}
		})
	}
}

// TestNotifyCLI: without coffer serve, a command's alert is delivered at
// its end; when the SMTP server is down it waits in the outbox, with a
// warning, and the next command delivers it. notify test reaches every
// target; metrics --textfile shows the scrub that ran before.
func TestNotifyCLI(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{})
	r := newTestRepo(t, "acme")
	t.Setenv("COFFER_OPERATOR_EMAIL", "ops@provider.example")

	t.Setenv("COFFER_SMTP", mailpittest.FreePort(t)) // down
	res := r.must(t, nil, "tenant", "lock", "acme")
	if !strings.Contains(res.stderr, "1 messages wait in") {
		t.Errorf("no warning about the waiting alert:\n%s", res)
	}
	t.Setenv("COFFER_SMTP", mp.SMTP)
	r.must(t, nil, "tenant", "list")
	ms := mp.Messages(t)
	if len(ms) != 1 || !strings.Contains(ms[0].Subject, engine.EventTenantLocked) || !strings.Contains(ms[0].Subject, "acme") {
		t.Fatalf("after the lock: %s", mailpittest.String(ms))
	}
	r.must(t, nil, "tenant", "list")
	if n := len(mp.Messages(t)); n != 1 {
		t.Fatalf("the alert was sent %d times", n)
	}

	// notify test: the operator's address and a webhook.
	recv := &webhookReceiver{}
	hs := httptestServer(t, recv)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("hook-key"), 0o600)
	t.Setenv("COFFER_WEBHOOK_SECRET_FILE", secret)
	res = r.must(t, nil, "--webhook", hs+"/hook", "notify", "test")
	if !strings.Contains(res.stdout, "operator ops@provider.example: ok") || !strings.Contains(res.stdout, "webhooks webhook-") {
		t.Errorf("notify test:\n%s", res)
	}
	if reqs := recv.requests(); len(reqs) != 1 || !notify.VerifySignature([]byte("hook-key"), reqs[0].body, reqs[0].header.Get(notify.HeaderSignature)) {
		t.Errorf("webhook test requests: %d", len(reqs))
	}
	if n := len(mp.Messages(t)); n != 2 {
		t.Errorf("%d messages after notify test, want 2", n)
	}
	res = r.run(t, nil, "--webhook", "http://"+mailpittest.FreePort(t)+"/down", "notify", "test")
	if res.code != exitError || !strings.Contains(res.stdout, "FAILED") {
		t.Errorf("notify test with a target down:\n%s", res)
	}

	// metrics --textfile after a scrub run from the command line.
	r.must(t, nil, "scrub")
	prom := filepath.Join(t.TempDir(), "coffer.prom")
	r.must(t, nil, "metrics", "--textfile", prom)
	b, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	fams, err := func() (map[string]*dtoFamily, error) {
		p := expfmt.NewTextParser(model.UTF8Validation)
		return p.TextToMetricFamilies(bytes.NewReader(b))
	}()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := metricValue(fams, "coffer_scrub_last_run_timestamp_seconds", nil); !ok {
		t.Errorf("the textfile has no last scrub:\n%s", b)
	}
	if v, ok := metricValue(fams, "coffer_tenants", map[string]string{"state": "locked"}); !ok || v != 1 {
		t.Errorf("coffer_tenants{state=locked} = %v %v", v, ok)
	}
}

// httptestServer serves h on loopback until the test ends and returns its
// base URL.
func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return "http://" + ln.Addr().String()
}
