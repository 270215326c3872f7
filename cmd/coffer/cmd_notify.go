package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"coffer/engine"
	"coffer/engine/remote"
	"coffer/metrics"
	"coffer/notify"
)

// Notifications and metrics in the CLI (docs/design.md, chapter 16): the
// global flags of the notification targets, the sink that takes the
// engine's events of this process (alerts into the outbox, the last scrub
// into the metrics state file), coffer notify test and coffer metrics.

// Files of the repository folder.
const (
	outboxDirName     = "outbox"
	metricsStateName  = "metrics-state.json"
	notifyFlushBudget = 30 * time.Second // delivery at the end of a command
)

// notifyFlags are the global notification flags.
type notifyFlags struct {
	smtp, smtpUser, smtpTLS, mailFrom, operator, config, ca string
	webhooks                                                []string
	retry                                                   time.Duration // coffer serve --notify-retry
}

func addNotifyFlags(pf *pflag.FlagSet, g *globals) {
	f := &g.notify
	pf.StringVar(&f.smtp, "smtp", g.getenv("COFFER_SMTP"), "SMTP server HOST:PORT for reports and alerts (env COFFER_SMTP); password from COFFER_SMTP_PASSWORD_FILE")
	pf.StringVar(&f.smtpUser, "smtp-user", g.getenv("COFFER_SMTP_USER"), "SMTP login (env COFFER_SMTP_USER)")
	pf.StringVar(&f.smtpTLS, "smtp-tls", g.getenv("COFFER_SMTP_TLS"), "auto (STARTTLS required unless the server is on loopback), starttls or implicit (env COFFER_SMTP_TLS)")
	pf.StringVar(&f.mailFrom, "mail-from", g.getenv("COFFER_MAIL_FROM"), "sender address of reports and alerts (env COFFER_MAIL_FROM; default coffer@HOSTNAME)")
	pf.StringVar(&f.operator, "operator-email", g.getenv("COFFER_OPERATOR_EMAIL"), "operator's address: weekly summary and alerts (env COFFER_OPERATOR_EMAIL)")
	pf.StringArrayVar(&f.webhooks, "webhook", strings.Fields(g.getenv("COFFER_WEBHOOKS")), "URL that alerts are posted to, signed with COFFER_WEBHOOK_SECRET_FILE; repeatable (env COFFER_WEBHOOKS, space-separated)")
	pf.StringVar(&f.config, "notify-config", g.getenv("COFFER_NOTIFY_CONFIG"), "JSON file of further targets and routes of alerts (env COFFER_NOTIFY_CONFIG)")
	pf.StringVar(&f.ca, "notify-ca", g.getenv("COFFER_NOTIFY_CA"), "PEM file of the authorities of the SMTP server's and webhooks' certificates (env COFFER_NOTIFY_CA; default: the system roots)")
}

// notifyConfig builds the notification configuration from the flags and
// the environment. Secrets come from files (or COFFER_SMTP_PASSWORD),
// never from the command line. A mistake is a usage error.
func (g *globals) notifyConfig() (*notify.Config, error) {
	f := g.notify
	c := &notify.Config{SMTP: f.smtp, SMTPTLS: f.smtpTLS, SMTPUser: f.smtpUser, From: f.mailFrom, Operator: f.operator,
		CAFile: g.path(f.ca)}
	for _, w := range f.webhooks {
		c.Webhooks = append(c.Webhooks, strings.Fields(w)...)
	}
	if p := g.getenv("COFFER_SMTP_PASSWORD_FILE"); p != "" {
		b, err := notify.ReadSecret(g.path(p))
		if err != nil {
			return nil, usagef("COFFER_SMTP_PASSWORD_FILE: %v", err)
		}
		c.SMTPPassword = string(b)
	} else {
		c.SMTPPassword = g.getenv("COFFER_SMTP_PASSWORD")
	}
	if p := g.getenv("COFFER_WEBHOOK_SECRET_FILE"); p != "" {
		b, err := notify.ReadSecret(g.path(p))
		if err != nil {
			return nil, usagef("COFFER_WEBHOOK_SECRET_FILE: %v", err)
		}
		c.WebhookSecret = b
	}
	if f.config != "" {
		file, err := notify.LoadFile(g.path(f.config))
		if err != nil {
			return nil, usageError{err}
		}
		c.File = file
	}
	if err := c.Validate(); err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// newNotifier makes the notifier of e from the flags; nil when nothing is
// configured.
func (g *globals) newNotifier(e *engine.Engine) (*notify.Notifier, error) {
	c, err := g.notifyConfig()
	if err != nil || !c.Enabled() {
		return nil, err
	}
	n, err := notify.New(*c, filepath.Join(e.Dir(), outboxDirName), e.ID())
	if err != nil {
		return nil, err
	}
	n.Live = func(id string) bool {
		ts, err := e.Tenants(context.Background())
		if err != nil {
			return true // unknown: keep the message for the next pass
		}
		for _, t := range ts {
			if t.ID == id {
				return true
			}
		}
		return false
	}
	return n, nil
}

// eventSink takes the engine's events of this process: alerts go to the
// notifier's outbox, a scrub's or audit verification's results to the
// metrics (coffer serve) or straight to the metrics state file. Events
// that come before the notifier is attached (drive.unreachable while the
// repository opens) wait for it.
type eventSink struct {
	statePath string

	mu       sync.Mutex // guards the fields below
	notifier *notify.Notifier
	metrics  *metrics.Metrics
	attached bool
	early    []engine.Event
	warn     func(error)
}

// maxEarlyEvents bounds the events kept before the notifier is attached
// (one per drive at most, in practice).
const maxEarlyEvents = 256

func (s *eventSink) handle(ev engine.Event) {
	s.mu.Lock()
	n, m, warn := s.notifier, s.metrics, s.warn
	if !s.attached {
		if len(s.early) < maxEarlyEvents {
			s.early = append(s.early, ev)
		}
	}
	attached := s.attached
	s.mu.Unlock()
	var err error
	if m != nil {
		err = m.Observe(ev)
	} else if s.statePath != "" {
		err = metrics.Record(s.statePath, ev)
	}
	if err != nil && warn != nil {
		warn(err)
	}
	if attached && n != nil {
		n.Handle(ev)
	}
}

// attach sets the notifier (nil: none) and hands it the events that came
// before.
func (s *eventSink) attach(n *notify.Notifier, warn func(error)) {
	s.mu.Lock()
	s.notifier, s.attached, s.warn = n, true, warn
	early := s.early
	s.early = nil
	s.mu.Unlock()
	if n != nil {
		n.OnError = warn
		for _, ev := range early {
			n.Handle(ev)
		}
	}
}

func (s *eventSink) setMetrics(m *metrics.Metrics) {
	s.mu.Lock()
	s.metrics = m
	s.mu.Unlock()
}

func (s *eventSink) current() *notify.Notifier {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notifier
}

// openSink checks the notification flags before the repository is opened
// (a mistake stops the command before it does anything) and makes the
// sink of this process's engine.
func (g *globals) openSink(dir string) (*eventSink, error) {
	if _, err := g.notifyConfig(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	g.sink = &eventSink{statePath: filepath.Join(abs, metricsStateName)}
	return g.sink, nil
}

// attachSink makes the notifier of the engine just opened.
func (g *globals) attachSink(e *engine.Engine) error {
	if g.sink == nil {
		return nil
	}
	n, err := g.newNotifier(e)
	if err != nil {
		return err
	}
	if n != nil {
		// The outbox is delivered once more after the command, when e is
		// closed: the tenants are known from now, and a tenant shredded
		// meanwhile has its messages dropped by its event.
		ts, err := e.Tenants(context.Background())
		if err != nil {
			return err
		}
		live := map[string]bool{}
		for _, t := range ts {
			live[t.ID] = true
		}
		n.Live = func(id string) bool { return live[id] }
	}
	g.sink.attach(n, func(err error) { fmt.Fprintf(g.stderr, "warning: %s\n", message(err)) })
	return nil
}

// flushNotify delivers what waits in the outbox at the end of a command
// that opened the repository itself (coffer serve delivers in the
// background), for at most notifyFlushBudget. What cannot be delivered
// stays for the next run, with a warning.
func (g *globals) flushNotify(ctx context.Context) {
	if g.sink == nil {
		return
	}
	n := g.sink.current()
	if n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyFlushBudget)
	defer cancel()
	d, err := n.Deliver(ctx, true)
	if err != nil {
		fmt.Fprintf(g.stderr, "warning: the outbox could not be delivered: %s\n", message(err))
		return
	}
	if left := d.Failed + d.Waiting; left > 0 {
		fmt.Fprintf(g.stderr, "warning: %d messages wait in %s for the next run (%s)\n", left, n.Outbox().Dir(), firstOr(d.Errors, "no sender for their target"))
	}
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

func newNotifyCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "notify",
		Short: "Notification targets: e-mail over SMTP and signed webhooks",
		Long: `Reports and alerts go to the targets of the global flags --smtp, --smtp-user,
--smtp-tls, --mail-from, --operator-email and --webhook (or their COFFER_*
variables), plus the targets and routes of --notify-config FILE. The SMTP
password comes from COFFER_SMTP_PASSWORD_FILE, the webhook secret from
COFFER_WEBHOOK_SECRET_FILE. Alerts go through the outbox REPO/outbox, so a
target that is down gets them later; while coffer serve runs, its own
flags decide where alerts go.`,
	}
	c.AddCommand(&cobra.Command{
		Use:   "test",
		Short: "Send a test message to every target now, and say how each went",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			return runNotifyTest(cmd.Context(), g, e)
		},
	})
	return c
}

// errSomeTargetsFailed: notify test could not reach every target.
var errSomeTargetsFailed = errors.New("not every target took the test message")

func runNotifyTest(ctx context.Context, g *globals, e *engine.Engine) error {
	n, err := g.newNotifier(e)
	if err != nil {
		return err
	}
	if n == nil {
		return usagef("no notification target is configured: give --smtp and --operator-email, or --webhook (or their COFFER_* variables)")
	}
	res := n.Test(ctx)
	if len(res) == 0 {
		return usagef("no target to test: give --operator-email or --webhook (an SMTP server alone has no recipient)")
	}
	failed := 0
	for _, r := range res {
		if r.Error != "" {
			failed++
		}
	}
	if g.json {
		if err := g.printJSON(res); err != nil {
			return err
		}
	} else {
		for _, r := range res {
			status := "ok"
			if r.Error != "" {
				status = "FAILED: " + r.Error
			}
			fmt.Fprintf(g.stdout, "%s %s: %s\n", r.Target, r.To, status)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d failed", errSomeTargetsFailed, failed, len(res))
	}
	return nil
}

func newMetricsCmd(g *globals) *cobra.Command {
	var textfile string
	c := &cobra.Command{
		Use:   "metrics [--textfile FILE]",
		Short: "Print the Prometheus metrics, or write them for node_exporter's textfile collector",
		Long: `Print the repository's metrics in the Prometheus text format: drives, packs
below full redundancy, the last scrub, tenants' last snapshot and stored
bytes, the audit chain. --textfile FILE writes them atomically for
node_exporter's textfile collector (cron set-ups without coffer serve).
Counters of backups, restores and sessions exist only in coffer serve
--metrics, which counts them while it runs.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			m, err := metrics.New(e, metrics.Options{StatePath: filepath.Join(e.Dir(), metricsStateName)})
			if err != nil {
				return err
			}
			if textfile == "" {
				return m.WriteText(g.stdout)
			}
			if err := m.WriteTextfile(g.path(textfile)); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "wrote %s\n", textfile)
			return nil
		},
	}
	c.Flags().StringVar(&textfile, "textfile", "", "write the metrics to this file (atomically) instead of printing them")
	return c
}

// metricsListener is coffer serve's --metrics socket and token.
type metricsListener struct {
	ln    net.Listener
	token string
}

func (m *metricsListener) close() {
	if m != nil && m.ln != nil {
		m.ln.Close()
	}
}

// listenMetrics checks --metrics and --metrics-token-file and listens;
// nil without --metrics. An address that is not loopback needs a token:
// exposing the metrics is the operator's explicit choice.
func listenMetrics(g *globals, addr, tokenFile string) (*metricsListener, error) {
	if addr == "" {
		if tokenFile != "" {
			return nil, usagef("--metrics-token-file needs --metrics ADDR")
		}
		return nil, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usagef("--metrics %q is not HOST:PORT (for example 127.0.0.1:9464)", addr)
	}
	if host == "" { // ":9464": loopback by default, every interface only when named (0.0.0.0)
		host = "127.0.0.1"
		addr = net.JoinHostPort(host, port)
	}
	m := &metricsListener{}
	if tokenFile != "" {
		b, err := notify.ReadSecret(g.path(tokenFile))
		if err != nil {
			return nil, usagef("--metrics-token-file: %v", err)
		}
		m.token = string(b)
	}
	ip := net.ParseIP(host)
	if m.token == "" && !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
		return nil, usagef("--metrics %s is not a loopback address: serving metrics to the network needs --metrics-token-file FILE (requests then carry Authorization: Bearer TOKEN)", addr)
	}
	if m.ln, err = net.Listen("tcp", addr); err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	return m, nil
}

// startOps starts coffer serve's delivery of alerts (the notifier of
// g.sink, in the background) and its metrics endpoint (g.serveMetrics),
// and counts the remote server's sessions (cfg.Log). stop waits for both.
func startOps(ctx context.Context, g *globals, e *engine.Engine, cfg *remote.Config, logger *slog.Logger) (stop func(), err error) {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	var n *notify.Notifier
	if g.sink != nil {
		n = g.sink.current()
	}
	if n != nil {
		n.Live = func(id string) bool {
			ts, err := e.Tenants(context.Background())
			if err != nil {
				return true // unknown: the message waits for the next pass
			}
			for _, t := range ts {
				if t.ID == id {
					return true
				}
			}
			return false
		}
		n.OnError = func(err error) { logger.Warn("notify.error", "error", message(err)) }
		if g.notify.retry > 0 {
			n.Outbox().MinBackoff = g.notify.retry
		}
		wg.Add(1)
		go func() { defer wg.Done(); n.Run(ctx) }()
	}
	ms := g.serveMetrics
	if ms != nil {
		o := metrics.Options{StatePath: filepath.Join(e.Dir(), metricsStateName)}
		if n != nil {
			o.Pending = func() int { p, _ := n.Outbox().Pending(); return len(p) }
		}
		m, err := metrics.New(e, o)
		if err != nil {
			cancel()
			wg.Wait()
			ms.close()
			return nil, err
		}
		if g.sink != nil {
			g.sink.setMetrics(m)
		}
		log := cfg.Log
		cfg.Log = func(event string, kv ...any) {
			log(event, kv...)
			m.ObserveServer(event, kv...)
		}
		health := func() error { _, _, err := e.AuditHead(); return err }
		srv := &http.Server{Handler: m.Handler(ms.token, health), ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
		wg.Add(2)
		go func() { defer wg.Done(); srv.Serve(ms.ln) }()
		go func() {
			defer wg.Done()
			<-ctx.Done()
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			srv.Shutdown(sctx)
		}()
		fmt.Fprintf(g.stdout, "metrics on http://%s/metrics\n", ms.ln.Addr())
	}
	return func() { cancel(); wg.Wait() }, nil
}
