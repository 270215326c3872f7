// Package metrics exports Coffer's numbers in the Prometheus format:
// drives, redundancy, the last scrub, backups and restores, remote
// sessions, tenants and the audit chain (docs/design.md, chapter 16, lists
// every name). Numbers the engine can be asked for (drives, tenants, the
// audit chain) are read from it when scraped, at most once per
// Options.MinInterval; numbers of things that happen (backups, sessions)
// are counted from engine events and the server's log events while the
// process runs; the last scrub and the last audit verification are kept in
// a small state file so that they survive the process (coffer scrub run by
// cron, then coffer metrics --textfile).
//
// It never exports tenant data, file names, paths or hosts; the tenant
// label holds tenant names, for the operator only (the endpoint is on
// loopback or behind a bearer token).
package metrics

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"coffer/engine"
)

// Source is what the metrics read from the engine (*engine.Engine).
type Source interface {
	DriveReport(ctx context.Context) (*engine.DriveReport, error)
	Report(ctx context.Context, at time.Time) (*engine.Report, error)
	AuditHead() (uint64, string, error)
}

var _ Source = (*engine.Engine)(nil)

// Options configure New.
type Options struct {
	// StatePath is the state file of the last scrub and audit
	// verification; "" keeps them in memory only.
	StatePath string
	// MinInterval is how long numbers read from the engine are reused
	// between scrapes (default 15 s): reading them lists every drive and
	// opens every tenant's snapshot records.
	MinInterval time.Duration
	// Pending, if set, counts the messages waiting in the outbox.
	Pending func() int
	// Now returns the time; nil means time.Now.
	Now func() time.Time
}

// Metrics is a registry of Coffer's metrics. Its methods are safe for
// concurrent use.
type Metrics struct {
	src Source
	o   Options
	reg *prometheus.Registry

	// Two locks, so that Observe (on an engine goroutine that may hold
	// engine locks) never waits for a scrape reading the engine.
	stateMu sync.Mutex // guards state
	state   State
	cacheMu sync.Mutex // guards cache and at
	cache   *snapshot
	at      time.Time // when cache was read

	events                                              *prometheus.CounterVec
	backups, restores                                   prometheus.Counter
	backupFailures, restoreFailures                     *prometheus.CounterVec
	backupBytes, backupAdded, backupStored, backupDedup prometheus.Counter
	backupChunks, restoreBytes                          prometheus.Counter
	backupSeconds, restoreSeconds                       prometheus.Histogram
	sessionsActive                                      prometheus.Gauge
	sessions                                            prometheus.Counter
	sessionsRefused                                     *prometheus.CounterVec
}

// durationBuckets: 1 s to about 4.5 hours, ×4 each.
var durationBuckets = prometheus.ExponentialBuckets(1, 4, 8)

// New makes the metrics of src, loading the state file if there is one.
func New(src Source, o Options) (*Metrics, error) {
	if o.MinInterval <= 0 {
		o.MinInterval = 15 * time.Second
	}
	m := &Metrics{src: src, o: o, reg: prometheus.NewPedanticRegistry()}
	if o.StatePath != "" {
		st, err := LoadState(o.StatePath)
		if err != nil {
			return nil, err
		}
		m.state = *st
	}
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coffer_events_total",
		Help: "Engine events seen by this process, by kind and severity."}, []string{"kind", "severity"})
	m.backups = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_backups_total", Help: "Backups that recorded a snapshot."})
	m.backupFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coffer_backup_failures_total",
		Help: "Backups that ended without a snapshot, by reason."}, []string{"reason"})
	m.backupBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_backup_processed_bytes_total", Help: "Bytes of the files backed up (before deduplication)."})
	m.backupAdded = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_backup_added_bytes_total", Help: "Plaintext bytes of new chunks."})
	m.backupStored = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_backup_stored_bytes_total", Help: "Sealed bytes of new chunks (compressed, before parity)."})
	m.backupDedup = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_backup_deduplicated_bytes_total", Help: "Bytes backed up that were already stored (unchanged files and known chunks)."})
	m.backupChunks = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_backup_new_chunks_total", Help: "New chunks stored by backups."})
	m.backupSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "coffer_backup_duration_seconds", Help: "Duration of backups that recorded a snapshot.", Buckets: durationBuckets})
	m.restores = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_restores_total", Help: "Restores (local and remote) that finished."})
	m.restoreFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coffer_restore_failures_total",
		Help: "Restores that failed, by reason."}, []string{"reason"})
	m.restoreBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_restore_bytes_total", Help: "Bytes restored."})
	m.restoreSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "coffer_restore_duration_seconds", Help: "Duration of restores that finished.", Buckets: durationBuckets})
	m.sessionsActive = prometheus.NewGauge(prometheus.GaugeOpts{Name: "coffer_remote_sessions_active", Help: "Remote client sessions open now."})
	m.sessions = prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_remote_sessions_total", Help: "Remote client sessions admitted."})
	m.sessionsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coffer_remote_sessions_refused_total",
		Help: "Remote connections refused, by reason (key, handshake, timeout, tenant-limit, busy)."}, []string{"reason"})
	for _, c := range []prometheus.Collector{m.events, m.backups, m.backupFailures, m.backupBytes, m.backupAdded, m.backupStored,
		m.backupDedup, m.backupChunks, m.backupSeconds, m.restores, m.restoreFailures, m.restoreBytes, m.restoreSeconds,
		m.sessionsActive, m.sessions, m.sessionsRefused, (*engineCollector)(m)} {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// Registry returns the registry (for tests and the textfile).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) now() time.Time {
	if m.o.Now != nil {
		return m.o.Now()
	}
	return time.Now()
}

// Observe counts an engine event, and records a scrub's or an audit
// verification's results in the state file. It is an engine.Options.Events
// consumer: quick, and it never calls the engine.
func (m *Metrics) Observe(ev engine.Event) error {
	m.events.WithLabelValues(ev.Kind, ev.Severity.String()).Inc()
	c := ev.Counts
	switch ev.Kind {
	case engine.EventBackupFinished:
		m.backups.Inc()
		m.backupBytes.Add(float64(c["bytes"]))
		m.backupAdded.Add(float64(c["bytes_added"]))
		m.backupStored.Add(float64(c["bytes_stored"]))
		m.backupDedup.Add(float64(max(c["bytes"]-c["bytes_added"], 0)))
		m.backupChunks.Add(float64(c["chunks_added"]))
		m.backupSeconds.Observe(ev.Seconds)
	case engine.EventBackupFailed, engine.EventBackupQuota:
		m.backupFailures.WithLabelValues(ev.Reason).Inc()
	case engine.EventRestoreFinished:
		m.restores.Inc()
		m.restoreBytes.Add(float64(c["bytes"]))
		m.restoreSeconds.Observe(ev.Seconds)
	case engine.EventRestoreFailed:
		m.restoreFailures.WithLabelValues(ev.Reason).Inc()
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	if m.state.Apply(ev) && m.o.StatePath != "" {
		return m.state.Save(m.o.StatePath)
	}
	return nil
}

// ObserveServer counts the remote server's log events (remote.Config.Log):
// sessions opened, closed and refused.
func (m *Metrics) ObserveServer(event string, kv ...any) {
	switch event {
	case "conn.open":
		m.sessions.Inc()
		m.sessionsActive.Inc()
	case "conn.close":
		m.sessionsActive.Dec()
	case "conn.busy":
		m.sessionsRefused.WithLabelValues("busy").Inc()
	case "conn.refused":
		reason := "other"
		for i := 0; i+1 < len(kv); i += 2 {
			if k, _ := kv[i].(string); k == "reason" {
				reason = fmt.Sprint(kv[i+1])
			}
		}
		m.sessionsRefused.WithLabelValues(reason).Inc()
	}
}

// Handler serves /metrics and /healthz. With a token, every request
// needs "Authorization: Bearer TOKEN". health says whether the server is
// healthy (nil: the index answers).
func (m *Metrics) Handler(token string, health func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if health != nil {
			if err := health(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "unhealthy")
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	if token == "" {
		return mux
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="coffer"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// WriteText writes every metric in the Prometheus text format.
func (m *Metrics) WriteText(w io.Writer) error {
	fams, err := m.reg.Gather()
	if err != nil && len(fams) == 0 {
		return fmt.Errorf("gather metrics: %w", err)
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			return fmt.Errorf("write metrics: %w", err)
		}
	}
	return nil
}

// WriteTextfile writes every metric in the text format for
// node_exporter's textfile collector: atomically (temporary file in the
// same folder, fsync, rename), mode 0644.
func (m *Metrics) WriteTextfile(path string) error {
	var b bytes.Buffer
	if err := m.WriteText(&b); err != nil {
		return err
	}
	if err := writeFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// State is what the state file keeps: the last scrub and the last audit
// verification.
type State struct {
	Scrub *ScrubState `json:"scrub,omitempty"`
	Audit *AuditState `json:"audit,omitempty"`
}

// ScrubState is the result of the last scrub.
type ScrubState struct {
	Time    time.Time        `json:"time"`
	Seconds float64          `json:"seconds"`
	Repair  bool             `json:"repair"`
	Counts  map[string]int64 `json:"counts"` // the scrub event's counts
}

// AuditState is the result of the last audit verification.
type AuditState struct {
	Time     time.Time `json:"time"`
	OK       bool      `json:"ok"`
	Entries  int64     `json:"entries"`
	Problems int64     `json:"problems"`
}

// maxStateFile bounds the state file.
const maxStateFile = 64 << 10

// LoadState reads a state file; a missing file, or one that does not
// decode (it is written without fsync, so a power cut may leave it empty),
// is an empty state, replaced at the next save.
func LoadState(path string) (*State, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read metrics state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, fmt.Errorf("read metrics state: %w", err)
	}
	st, err := decodeState(b)
	if err != nil {
		return &State{}, nil
	}
	return st, nil
}

func decodeState(b []byte) (*State, error) {
	if len(b) > maxStateFile {
		return nil, fmt.Errorf("%d bytes (at most %d)", len(b), maxStateFile)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("unreadable: %v", err)
	}
	if st.Scrub != nil && len(st.Scrub.Counts) > 64 {
		return nil, errors.New("too many scrub counts")
	}
	return &st, nil
}

// Apply records the results of a scrub or an audit verification event;
// it reports whether the state changed.
func (st *State) Apply(ev engine.Event) bool {
	switch ev.Kind {
	case engine.EventScrubDamage, engine.EventScrubClean, engine.EventRepairFinished:
		counts := map[string]int64{}
		for k, v := range ev.Counts {
			counts[k] = v
		}
		st.Scrub = &ScrubState{Time: ev.Time.UTC(), Seconds: ev.Seconds, Repair: ev.Kind == engine.EventRepairFinished, Counts: counts}
	case engine.EventAuditVerified, engine.EventAuditFailed:
		st.Audit = &AuditState{Time: ev.Time.UTC(), OK: ev.Kind == engine.EventAuditVerified,
			Entries: ev.Counts["entries"], Problems: ev.Counts["problems"]}
	default:
		return false
	}
	return true
}

// Save writes the state file atomically. It is not fsynced: losing the
// last scrub's numbers to a power cut costs nothing but a gap in a graph,
// and the hook that saves it must be quick.
func (st State) Save(path string) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write metrics state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write metrics state: %w", err)
	}
	return nil
}

// Record applies ev to the state file at path (for a command that runs
// without coffer serve: its scrub is then seen by coffer metrics).
func Record(path string, ev engine.Event) error {
	st, err := LoadState(path)
	if err != nil {
		return err
	}
	if st.Apply(ev) {
		return st.Save(path)
	}
	return nil
}

// writeFile writes path atomically and durably.
func writeFile(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// scrubKinds are the problem kinds of coffer_scrub_last_problems.
var scrubKinds = []string{"missing", "corrupt", "misplaced", "orphaned", "stale_temp", "errors"}

// labelSafe keeps a label value printable.
func labelSafe(s string) string { return strings.ToValidUTF8(s, "?") }
