package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"coffer/internal/durable"
)

// The outbox (docs/design.md, chapter 16): a folder of the repository,
//
//	outbox/lock          flock'ed by the one delivery pass at a time
//	outbox/pending/ID    a message not yet delivered (JSON, mode 0600)
//	outbox/sent/ID       its delivery record, once delivered
//
// ID is the message's idempotent ID (MessageID): the same message (the
// same report of the same week to the same address, the same alert to the
// same target) always gets the same ID, so queueing it again is a no-op
// and a delivery record stops it from ever being sent twice.

// Message kinds.
const (
	KindReport  = "report"  // a tenant's weekly report
	KindSummary = "summary" // the operator's weekly summary
	KindAlert   = "alert"   // an engine event
	KindTest    = "test"    // coffer notify test
)

// TargetEmail is the target of every e-mail: the configured SMTP server
// delivers it to the message's recipients.
const TargetEmail = "email"

// Bounds of the outbox: a message file is at most maxMessageFile bytes,
// and at most MaxPending messages wait at once (a target down for long
// must not fill the disk).
const (
	maxMessageFile = 1 << 20
	MaxPending     = 10000
	// SentRetention is how long delivery records are kept: longer than the
	// week a report's ID is reused in, and the day an alert's is.
	SentRetention = 40 * 24 * time.Hour
)

// Errors of the outbox.
var (
	ErrOutboxFull = errors.New("notify: outbox is full")
	ErrBadMessage = errors.New("notify: malformed outbox message")
)

// Message is one message in the outbox.
type Message struct {
	ID     string `json:"id"`     // MessageID: 32 hex digits
	Target string `json:"target"` // TargetEmail or a webhook's target name
	Kind   string `json:"kind"`   // KindReport, ...
	// Event is the event kind of an alert (the X-Coffer-Event header of a
	// webhook); "" for other kinds.
	Event string `json:"event,omitempty"`
	// Tenant is the tenant ID (hex) a tenant's report is for; such a
	// message is dropped, not sent, once the tenant is gone.
	Tenant string `json:"tenant,omitempty"`
	// From and To are the envelope of an e-mail.
	From string   `json:"from,omitempty"`
	To   []string `json:"to,omitempty"`
	// Data is the RFC 5322 message or the webhook's JSON body.
	Data []byte `json:"data"`

	Created   time.Time `json:"created"`
	Attempts  int       `json:"attempts"`
	NextTry   time.Time `json:"next_try"`
	LastError string    `json:"last_error,omitempty"`
}

// Record is the delivery record of a message.
type Record struct {
	ID        string    `json:"id"`
	Target    string    `json:"target"`
	Kind      string    `json:"kind"`
	Delivered time.Time `json:"delivered"`
	Attempts  int       `json:"attempts"`
}

// MessageID is the idempotent ID of a message: SHA-256 over the
// repository ID, the target, the recipient and a key naming what the
// message is about (see docs/design.md, chapter 16), first 16 bytes in
// hex.
func MessageID(repository, target, recipient, key string) string {
	h := sha256.New()
	for _, s := range []string{"coffer-notify-v1", repository, target, strings.ToLower(recipient), key} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

// decodeMessage parses a pending message file named id.
func decodeMessage(b []byte, id string) (*Message, error) {
	if len(b) > maxMessageFile {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadMessage, len(b))
	}
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	switch {
	case m.ID != id || !validID(m.ID):
		return nil, fmt.Errorf("%w: ID %q in file %q", ErrBadMessage, m.ID, id)
	case m.Target == "" || len(m.Target) > 64:
		return nil, fmt.Errorf("%w: target %q", ErrBadMessage, m.Target)
	case len(m.To) > 100:
		return nil, fmt.Errorf("%w: %d recipients", ErrBadMessage, len(m.To))
	case m.Attempts < 0:
		return nil, fmt.Errorf("%w: %d attempts", ErrBadMessage, m.Attempts)
	}
	return &m, nil
}

// Outbox is the on-disk outbox in a folder. Its methods are safe for
// concurrent use, by goroutines and by processes: queueing is atomic per
// file, and delivery passes take an exclusive lock.
type Outbox struct {
	dir string
	// MinBackoff and MaxBackoff bound the wait before the next try of a
	// message that failed: MinBackoff doubled per failed try, at most
	// MaxBackoff (defaults 30 s and 1 h).
	MinBackoff, MaxBackoff time.Duration
	// Now returns the time (tests); nil means time.Now.
	Now func() time.Time
}

// OpenOutbox opens the outbox in dir, creating its folders (mode 0700).
func OpenOutbox(dir string) (*Outbox, error) {
	for _, d := range []string{dir, filepath.Join(dir, "pending"), filepath.Join(dir, "sent")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create outbox folder: %w", err)
		}
	}
	return &Outbox{dir: dir, MinBackoff: 30 * time.Second, MaxBackoff: time.Hour}, nil
}

// Dir returns the outbox folder.
func (o *Outbox) Dir() string { return o.dir }

func (o *Outbox) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Outbox) pendingPath(id string) string { return filepath.Join(o.dir, "pending", id) }
func (o *Outbox) sentPath(id string) string    { return filepath.Join(o.dir, "sent", id) }

// Queued says what Enqueue did with a message.
type Queued int

const (
	Added         Queued = iota // written to the outbox
	AlreadyQueued               // the same message waits already
	AlreadySent                 // the same message was delivered before
)

// Enqueue writes m durably into the outbox (temporary file, fsync, rename,
// fsync of the folder) unless a message of the same ID waits already or
// was delivered. m.ID must be set; Created and NextTry default to now.
func (o *Outbox) Enqueue(m *Message) (Queued, error) {
	if !validID(m.ID) {
		return 0, fmt.Errorf("%w: ID %q", ErrBadMessage, m.ID)
	}
	if exists(o.sentPath(m.ID)) {
		return AlreadySent, nil
	}
	if exists(o.pendingPath(m.ID)) {
		return AlreadyQueued, nil
	}
	ids, err := o.pendingIDs()
	if err != nil {
		return 0, err
	}
	if len(ids) >= MaxPending {
		return 0, fmt.Errorf("%w: %d messages wait in %s", ErrOutboxFull, len(ids), o.dir)
	}
	if m.Created.IsZero() {
		m.Created = o.now().UTC()
	}
	if m.NextTry.IsZero() {
		m.NextTry = m.Created
	}
	b, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	if len(b) > maxMessageFile {
		return 0, fmt.Errorf("%w: message of %d bytes (at most %d)", ErrBadMessage, len(b), maxMessageFile)
	}
	if err := writeFileDurable(o.pendingPath(m.ID), b); err != nil {
		return 0, fmt.Errorf("write outbox message: %w", err)
	}
	return Added, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// pendingIDs lists the IDs of the waiting messages.
func (o *Outbox) pendingIDs() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(o.dir, "pending"))
	if err != nil {
		return nil, fmt.Errorf("list outbox: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if validID(e.Name()) && e.Type().IsRegular() {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// Pending returns the waiting messages, oldest first. Files that cannot
// be read are skipped (Deliver reports them).
func (o *Outbox) Pending() ([]*Message, error) {
	ids, err := o.pendingIDs()
	if err != nil {
		return nil, err
	}
	var out []*Message
	for _, id := range ids {
		if m, err := o.read(id); err == nil {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

func (o *Outbox) read(id string) (*Message, error) {
	f, err := os.Open(o.pendingPath(id))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMessageFile+1))
	if err != nil {
		return nil, err
	}
	return decodeMessage(b, id)
}

// Drop removes the waiting messages for which drop returns true (the
// reports of a tenant just shredded). It returns how many it removed.
func (o *Outbox) Drop(drop func(*Message) bool) (int, error) {
	ms, err := o.Pending()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range ms {
		if drop(m) {
			if err := os.Remove(o.pendingPath(m.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return n, err
			}
			n++
		}
	}
	if n > 0 {
		return n, syncDir(filepath.Join(o.dir, "pending"))
	}
	return n, nil
}

// Sender delivers a message to its target. It returns nil only when the
// target accepted the message.
type Sender interface {
	Send(ctx context.Context, m *Message) error
}

// DeliverOptions configure one delivery pass.
type DeliverOptions struct {
	// Senders by target name; a message whose target has none waits.
	Senders map[string]Sender
	// All tries every waiting message now, whatever its backoff (a run of
	// a command); otherwise only those whose NextTry has come (the
	// background loop of coffer serve).
	All bool
	// Keep, if set, is asked about every message with a Tenant; a message
	// it refuses (the tenant is gone) is removed unsent.
	Keep func(tenantID string) bool
	// AfterSend, if set, is called after a send succeeded and before its
	// record is written (tests stop a pass there, as a crash would).
	AfterSend func(m *Message) error
}

// Delivery says what one pass did.
type Delivery struct {
	Sent    int      `json:"sent"`
	Failed  int      `json:"failed"`  // tried and failed: waiting for the next try
	Waiting int      `json:"waiting"` // not tried (backoff, or no sender for the target)
	Dropped int      `json:"dropped"` // removed unsent: the tenant is gone
	Errors  []string `json:"errors,omitempty"`
	// NextTry is the earliest NextTry of the messages left, zero if none.
	NextTry time.Time `json:"-"`
}

// Deliver makes one delivery pass: each waiting message whose time has
// come is sent to its target; on success its delivery record is written
// durably, then the message removed; on failure its attempt count and next
// try (with backoff) are written back. A message with a delivery record is
// removed without being sent (a crash came between the record and the
// removal). One pass runs at a time, across processes (outbox/lock).
func (o *Outbox) Deliver(ctx context.Context, opt DeliverOptions) (*Delivery, error) {
	unlock, err := o.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	ids, err := o.pendingIDs()
	if err != nil {
		return nil, err
	}
	var ms []*Message
	d := &Delivery{}
	for _, id := range ids {
		m, err := o.read(id)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			// Written atomically, so only a hand edit or damage makes it
			// unreadable: kept aside for the operator, never sent.
			d.Errors = append(d.Errors, fmt.Sprintf("outbox message %s is unreadable and was moved to %s.bad: %v", id, id, err))
			os.Rename(o.pendingPath(id), o.pendingPath(id)+".bad")
			continue
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Created.Before(ms[j].Created) })
	for _, m := range ms {
		if err := ctx.Err(); err != nil {
			return d, err
		}
		if exists(o.sentPath(m.ID)) {
			if err := o.remove(m.ID); err != nil {
				return d, err
			}
			continue
		}
		if m.Tenant != "" && opt.Keep != nil && !opt.Keep(m.Tenant) {
			if err := o.remove(m.ID); err != nil {
				return d, err
			}
			d.Dropped++
			continue
		}
		s := opt.Senders[m.Target]
		if s == nil || (!opt.All && m.NextTry.After(o.now())) {
			d.Waiting++
			d.next(m.NextTry)
			continue
		}
		if err := s.Send(ctx, m); err != nil {
			if ctx.Err() != nil {
				return d, ctx.Err()
			}
			d.Failed++
			m.Attempts++
			m.LastError = oneLine(err.Error())
			m.NextTry = o.now().UTC().Add(o.backoff(m.Attempts))
			d.next(m.NextTry)
			d.Errors = append(d.Errors, fmt.Sprintf("%s to %s: %s", m.Kind, targetLabel(m), m.LastError))
			b, jerr := json.Marshal(m)
			if jerr == nil {
				jerr = writeFileDurable(o.pendingPath(m.ID), b)
			}
			if jerr != nil {
				return d, fmt.Errorf("record a failed delivery in the outbox: %w", jerr)
			}
			continue
		}
		if opt.AfterSend != nil {
			if err := opt.AfterSend(m); err != nil {
				return d, err
			}
		}
		rec, _ := json.Marshal(Record{ID: m.ID, Target: m.Target, Kind: m.Kind, Delivered: o.now().UTC(), Attempts: m.Attempts + 1})
		if err := writeFileDurable(o.sentPath(m.ID), rec); err != nil {
			return d, fmt.Errorf("write the delivery record of %s: %w", m.ID, err)
		}
		if err := o.remove(m.ID); err != nil {
			return d, err
		}
		d.Sent++
	}
	o.pruneSent()
	return d, nil
}

func (d *Delivery) next(t time.Time) {
	if d.NextTry.IsZero() || t.Before(d.NextTry) {
		d.NextTry = t
	}
}

// targetLabel names a message's destination for the operator: the
// recipient of an e-mail, the target name of a webhook.
func targetLabel(m *Message) string {
	if m.Target == TargetEmail {
		return strings.Join(m.To, ", ")
	}
	return m.Target
}

func (o *Outbox) backoff(attempts int) time.Duration {
	d := o.MinBackoff
	for i := 1; i < attempts && d < o.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, o.MaxBackoff)
}

func (o *Outbox) remove(id string) error {
	if err := os.Remove(o.pendingPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove delivered message %s: %w", id, err)
	}
	return syncDir(filepath.Join(o.dir, "pending"))
}

// pruneSent removes delivery records older than SentRetention.
func (o *Outbox) pruneSent() {
	dir := filepath.Join(o.dir, "sent")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	cut := o.now().Add(-SentRetention)
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.ModTime().Before(cut) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// lock takes outbox/lock exclusively, waiting while another pass holds it.
func (o *Outbox) lock(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(filepath.Join(o.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open outbox lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock outbox: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// writeFileDurable writes path atomically and durably, mode 0600
// (internal/durable).
func writeFileDurable(path string, data []byte) error { return durable.WriteFile(path, data, 0o600) }

func syncDir(dir string) error { return durable.SyncDir(dir) }
