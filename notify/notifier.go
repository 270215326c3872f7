package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"coffer/engine"
)

// Notifier turns events and reports into messages in the outbox and
// delivers them. Its methods are safe for concurrent use.
type Notifier struct {
	ob       *Outbox
	repo     string // repository ID
	from     string
	operator string
	senders  map[string]Sender
	routes   []route
	dests    []dest

	// Live, if set, tells whether a tenant (ID in hex) still exists; the
	// waiting reports of a tenant that does not are dropped unsent.
	Live func(tenantID string) bool
	// OnError, if set, is told of what could not be queued or delivered
	// (coffer serve logs it). It must not block.
	OnError func(error)

	wake chan struct{}
}

// New checks c and makes a notifier for repository (its ID) with its
// outbox in outboxDir.
func New(c Config, outboxDir, repository string) (*Notifier, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	senders, routes, dests, err := c.resolve()
	if err != nil {
		return nil, err
	}
	ob, err := OpenOutbox(outboxDir)
	if err != nil {
		return nil, err
	}
	from := c.From
	if from == "" {
		from = engine.DefaultReportFrom()
		if !validAddress(from) {
			from = "coffer@localhost"
		}
	}
	return &Notifier{ob: ob, repo: repository, from: from, operator: c.Operator,
		senders: senders, routes: routes, dests: dests, wake: make(chan struct{}, 1)}, nil
}

// Outbox returns the notifier's outbox.
func (n *Notifier) Outbox() *Outbox { return n.ob }

func (n *Notifier) fail(err error) {
	if n.OnError != nil && err != nil {
		n.OnError(err)
	}
}

// Handle queues the alerts of ev for the targets whose routes match it,
// and wakes Run. A shredded tenant's waiting reports are dropped at once.
// It runs on the engine's goroutine (engine.Options.Events): it only
// writes to the outbox, never to the network.
func (n *Notifier) Handle(ev engine.Event) {
	if ev.Kind == engine.EventTenantShredded && ev.TenantID != "" {
		_, err := n.ob.Drop(func(m *Message) bool { return m.Tenant == ev.TenantID })
		n.fail(err)
	}
	key := eventKey(ev)
	queued := false
	for _, d := range match(n.routes, ev) {
		id := MessageID(n.repo, d.target, d.email, key)
		m := &Message{ID: id, Target: d.target, Kind: KindAlert, Event: ev.Kind}
		if d.email != "" {
			m.From, m.To = n.from, []string{d.email}
			m.Data = alertMail(headerID(id, n.from), n.repo, n.from, d.email, ev)
		} else {
			body, err := alertJSON(id, n.repo, ev)
			if err != nil {
				n.fail(err)
				continue
			}
			m.Data = body
		}
		q, err := n.ob.Enqueue(m)
		if err != nil {
			n.fail(fmt.Errorf("queue the %s alert for %s: %w", ev.Kind, d.name, err))
			continue
		}
		queued = queued || q == Added
	}
	if queued {
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
}

// eventKey names what an alert is about, for its message ID. Most events
// are one-offs (a random key); a drive found unreachable and a tenant
// above its quota threshold are told once a day (UTC), however often the
// engine sees them.
func eventKey(ev engine.Event) string {
	day := ev.Time.UTC().Format(time.DateOnly)
	switch ev.Kind {
	case engine.EventDriveUnreachable:
		return "event|" + ev.Kind + "|" + ev.Drive + "|" + day
	case engine.EventTenantQuota:
		return "event|" + ev.Kind + "|" + ev.TenantID + "|" + day
	}
	var r [16]byte
	rand.Read(r[:])
	return "event|" + hex.EncodeToString(r[:])
}

// Deliver makes one delivery pass (Outbox.Deliver); all tries every
// waiting message now, whatever its backoff.
func (n *Notifier) Deliver(ctx context.Context, all bool) (*Delivery, error) {
	return n.ob.Deliver(ctx, DeliverOptions{Senders: n.senders, All: all, Keep: n.Live})
}

// Run delivers in the background until ctx ends: a pass whenever Handle
// queued something, and when the earliest waiting message's next try has
// come (checked at least once a minute).
func (n *Notifier) Run(ctx context.Context) {
	for {
		wait := time.Minute
		d, err := n.Deliver(ctx, false)
		if ctx.Err() != nil {
			return
		}
		n.fail(err)
		if d != nil {
			for _, e := range d.Errors {
				n.fail(errors.New(e))
			}
			if !d.NextTry.IsZero() {
				wait = min(max(time.Until(d.NextTry), 100*time.Millisecond), time.Minute)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-n.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// ReportResult says what SendReport did.
type ReportResult struct {
	Queued      int       `json:"queued"`       // new messages put in the outbox
	AlreadySent int       `json:"already_sent"` // delivered by an earlier run in the same week
	NoContact   int       `json:"no_contact"`   // tenants without a usable contact: nothing sent
	Delivery    *Delivery `json:"delivery"`
}

// ErrNotDelivered: some messages could not be delivered and wait in the
// outbox for the next run.
var ErrNotDelivered = errors.New("notify: not every message could be delivered")

// SendReport queues each tenant's weekly message (to its contact) and the
// operator's summary (to Config.Operator), then delivers everything that
// waits. The message IDs are those of the report's ISO week (UTC), so a
// second run in the same week sends nothing twice. Every tenant in r gets
// its message, locked ones too (flagged when no backup ran); shredded
// tenants are not in a report, and their waiting messages are dropped.
// It returns ErrNotDelivered (with the result) when messages are left.
func (n *Notifier) SendReport(ctx context.Context, r *engine.Report) (*ReportResult, error) {
	if n.senders[TargetEmail] == nil {
		return nil, configf("report --send needs an SMTP server: give --smtp HOST:PORT (or COFFER_SMTP)")
	}
	y, w := r.At.UTC().ISOWeek()
	week := fmt.Sprintf("%04d-W%02d", y, w)
	res := &ReportResult{}
	live := map[string]bool{}
	count := func(q Queued) {
		switch q {
		case Added:
			res.Queued++
		case AlreadySent:
			res.AlreadySent++
		}
	}
	for i := range r.Tenants {
		tr := &r.Tenants[i]
		live[tr.ID] = true
		addr := engine.ContactAddress(tr.Contact)
		if addr == "" {
			res.NoContact++
			continue
		}
		id := MessageID(n.repo, TargetEmail, addr, "report|"+tr.ID+"|"+week)
		data, err := r.TenantMessage(tr, n.from, headerID(id, n.from))
		if err != nil {
			return nil, err
		}
		q, err := n.ob.Enqueue(&Message{ID: id, Target: TargetEmail, Kind: KindReport, Tenant: tr.ID, From: n.from, To: []string{addr}, Data: data})
		if err != nil {
			return nil, fmt.Errorf("queue the report of tenant %q: %w", tr.Name, err)
		}
		count(q)
	}
	if n.operator != "" {
		id := MessageID(n.repo, TargetEmail, n.operator, "summary|"+week)
		t := r.Totals
		subject := fmt.Sprintf("Coffer weekly report, week ending %s: %d tenants, %d flagged", r.At.UTC().Format(time.DateOnly), t.Tenants, t.Flagged)
		data := renderMail(n.from, n.operator, subject, r.At, headerID(id, n.from), r.OperatorSummary())
		q, err := n.ob.Enqueue(&Message{ID: id, Target: TargetEmail, Kind: KindSummary, From: n.from, To: []string{n.operator}, Data: data})
		if err != nil {
			return nil, fmt.Errorf("queue the operator summary: %w", err)
		}
		count(q)
	}
	keep := func(id string) bool { return live[id] && (n.Live == nil || n.Live(id)) }
	d, err := n.ob.Deliver(ctx, DeliverOptions{Senders: n.senders, All: true, Keep: keep})
	res.Delivery = d
	if err != nil {
		return res, err
	}
	if d.Failed > 0 || d.Waiting > 0 {
		return res, fmt.Errorf("%w: %d messages wait in %s and are tried again on the next run (first error: %s)", ErrNotDelivered, d.Failed+d.Waiting, n.ob.Dir(), firstOr(d.Errors, "no sender for their target"))
	}
	return res, nil
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// TestResult is the outcome of a test message to one target.
type TestResult struct {
	Target string `json:"target"` // the configured name: operator, webhooks, a file target
	To     string `json:"to"`     // the address, or the webhook's target name
	Error  string `json:"error,omitempty"`
}

// Test sends one test message to every target right away, not through
// the outbox (a failed test is not retried), and says how each went.
func (n *Notifier) Test(ctx context.Context) []TestResult {
	var out []TestResult
	now := time.Now().UTC()
	for _, d := range n.dests {
		var r [16]byte
		rand.Read(r[:])
		id := hex.EncodeToString(r[:])
		m := &Message{ID: id, Target: d.target, Kind: KindTest, Event: "test"}
		tr := TestResult{Target: d.name, To: d.email}
		if d.email != "" {
			m.From, m.To = n.from, []string{d.email}
			m.Data = renderMail(n.from, d.email, "[coffer] test message", now, headerID(id, n.from),
				fmt.Sprintf("This is a test message from coffer notify test for repository %s.\nAlerts and reports for target %q will arrive like this one.\n", n.repo, d.name))
		} else {
			tr.To = d.target
			m.Data, _ = alertJSON(id, n.repo, engine.Event{Kind: "test", Time: now})
		}
		s := n.senders[d.target]
		var err error
		if s == nil {
			err = fmt.Errorf("no sender for %s", d.target)
		} else {
			err = s.Send(ctx, m)
		}
		if err != nil {
			tr.Error = oneLine(err.Error())
		}
		out = append(out, tr)
	}
	return out
}
