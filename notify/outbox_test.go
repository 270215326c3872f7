package notify

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSender records what it sent; fail makes it fail.
type fakeSender struct {
	mu   sync.Mutex
	sent []string // message IDs
	fail error
	on   func(m *Message) error // called before recording; an error fails the send
}

func (f *fakeSender) Send(ctx context.Context, m *Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.on != nil {
		if err := f.on(m); err != nil {
			return err
		}
	}
	if f.fail != nil {
		return f.fail
	}
	f.sent = append(f.sent, m.ID)
	return nil
}

func (f *fakeSender) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

func testOutbox(t *testing.T) *Outbox {
	t.Helper()
	ob, err := OpenOutbox(filepath.Join(t.TempDir(), "outbox"))
	if err != nil {
		t.Fatal(err)
	}
	return ob
}

func testMessage(key string) *Message {
	return &Message{ID: MessageID("repo", TargetEmail, "a@b.example", key), Target: TargetEmail, Kind: KindAlert,
		From: "c@b.example", To: []string{"a@b.example"}, Data: []byte("Subject: x\r\n\r\nbody\r\n")}
}

func TestMessageID(t *testing.T) {
	base := MessageID("r", "t", "a@b", "k")
	if !validID(base) || base != MessageID("r", "t", "A@B", "k") {
		t.Fatalf("ID %q not stable or not valid", base)
	}
	for _, other := range []string{MessageID("r2", "t", "a@b", "k"), MessageID("r", "t2", "a@b", "k"), MessageID("r", "t", "c@b", "k"), MessageID("r", "t", "a@b", "k2"),
		MessageID("r", "ta", "@b", "k")} {
		if other == base {
			t.Errorf("two different messages share ID %s", base)
		}
	}
}

// TestOutboxOnce: a message queued twice waits once, is delivered once,
// and queueing it again after delivery does nothing.
func TestOutboxOnce(t *testing.T) {
	ob := testOutbox(t)
	m := testMessage("k")
	for i, want := range []Queued{Added, AlreadyQueued} {
		if q, err := ob.Enqueue(testMessage("k")); err != nil || q != want {
			t.Fatalf("enqueue %d: %v %v, want %v", i, q, err, want)
		}
	}
	s := &fakeSender{}
	opt := DeliverOptions{Senders: map[string]Sender{TargetEmail: s}, All: true}
	for i := 0; i < 2; i++ {
		d, err := ob.Deliver(context.Background(), opt)
		if err != nil {
			t.Fatal(err)
		}
		if q, err := ob.Enqueue(testMessage("k")); err != nil || q != AlreadySent {
			t.Fatalf("enqueue after delivery: %v %v", q, err)
		}
		if i == 0 && d.Sent != 1 {
			t.Errorf("first pass sent %d", d.Sent)
		}
	}
	if got := s.ids(); len(got) != 1 || got[0] != m.ID {
		t.Fatalf("sent %v, want once %s", got, m.ID)
	}
	var rec Record
	b, err := os.ReadFile(filepath.Join(ob.Dir(), "sent", m.ID))
	if err != nil || json.Unmarshal(b, &rec) != nil || rec.ID != m.ID || rec.Attempts != 1 {
		t.Fatalf("delivery record %s: %v", b, err)
	}
	if strings.Contains(string(b), "a@b.example") {
		t.Errorf("the delivery record holds the recipient: %s", b)
	}
	if fi, _ := os.Stat(filepath.Join(ob.Dir(), "sent", m.ID)); fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v", fi.Mode())
	}
}

// TestOutboxCrash: a pass stopped at each point of a delivery, as a crash
// would stop it, and the next pass.
func TestOutboxCrash(t *testing.T) {
	errCrash := errors.New("crash")
	t.Run("between two messages", func(t *testing.T) {
		ob := testOutbox(t)
		a, b := testMessage("a"), testMessage("b")
		b.Created = time.Now().Add(time.Second) // delivered after a
		ob.Enqueue(a)
		ob.Enqueue(b)
		ctx, cancel := context.WithCancel(context.Background())
		s := &fakeSender{on: func(m *Message) error {
			if m.ID == b.ID {
				cancel() // the process dies before b is sent
				return ctx.Err()
			}
			return nil
		}}
		if _, err := ob.Deliver(ctx, DeliverOptions{Senders: map[string]Sender{TargetEmail: s}, All: true}); !errors.Is(err, context.Canceled) {
			t.Fatalf("pass: %v", err)
		}
		s.on = nil
		if _, err := ob.Deliver(context.Background(), DeliverOptions{Senders: map[string]Sender{TargetEmail: s}, All: true}); err != nil {
			t.Fatal(err)
		}
		if got := s.ids(); len(got) != 2 || got[0] != a.ID || got[1] != b.ID {
			t.Fatalf("sent %v, want a then b once each", got)
		}
	})
	t.Run("after the record, before the removal", func(t *testing.T) {
		ob := testOutbox(t)
		m := testMessage("m")
		ob.Enqueue(m)
		rec, _ := json.Marshal(Record{ID: m.ID})
		if err := writeFileDurable(filepath.Join(ob.Dir(), "sent", m.ID), rec); err != nil {
			t.Fatal(err)
		}
		s := &fakeSender{}
		d, err := ob.Deliver(context.Background(), DeliverOptions{Senders: map[string]Sender{TargetEmail: s}, All: true})
		if err != nil || len(s.ids()) != 0 || d.Sent != 0 {
			t.Fatalf("a recorded message was sent again: %v %v", s.ids(), err)
		}
		if p, _ := ob.Pending(); len(p) != 0 {
			t.Fatalf("%d messages still wait", len(p))
		}
	})
	t.Run("after the send, before the record", func(t *testing.T) {
		// The one window where a message goes out twice: the server took
		// it, and the record was not yet written. The repeat carries the
		// same ID (Message-ID, X-Coffer-Delivery) for the receiver to drop.
		ob := testOutbox(t)
		m := testMessage("m")
		ob.Enqueue(m)
		s := &fakeSender{}
		opt := DeliverOptions{Senders: map[string]Sender{TargetEmail: s}, All: true, AfterSend: func(*Message) error { return errCrash }}
		if _, err := ob.Deliver(context.Background(), opt); !errors.Is(err, errCrash) {
			t.Fatal(err)
		}
		opt.AfterSend = nil
		if _, err := ob.Deliver(context.Background(), opt); err != nil {
			t.Fatal(err)
		}
		if got := s.ids(); len(got) != 2 || got[0] != got[1] {
			t.Fatalf("sent %v", got)
		}
	})
}

// TestOutboxRetry: a failed message waits with backoff, keeps its ID and
// is delivered once the target is back.
func TestOutboxRetry(t *testing.T) {
	ob := testOutbox(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ob.Now = func() time.Time { return now }
	ob.MinBackoff, ob.MaxBackoff = time.Second, 5*time.Second
	m := testMessage("m")
	ob.Enqueue(m)
	s := &fakeSender{fail: errors.New("connection refused")}
	opt := DeliverOptions{Senders: map[string]Sender{TargetEmail: s}}
	var waits []time.Duration
	for i := 0; i < 5; i++ {
		d, err := ob.Deliver(context.Background(), opt)
		if err != nil || d.Failed != 1 || !strings.Contains(d.Errors[0], "connection refused") {
			t.Fatalf("pass %d: %+v %v", i, d, err)
		}
		waits = append(waits, d.NextTry.Sub(now))
		// Before its next try, a background pass leaves it alone.
		if d, _ := ob.Deliver(context.Background(), opt); d.Waiting != 1 || d.Failed != 0 {
			t.Fatalf("pass before the next try: %+v", d)
		}
		now = d.NextTry
	}
	want := []time.Duration{1, 2, 4, 5, 5}
	for i := range want {
		if waits[i] != want[i]*time.Second {
			t.Fatalf("backoff %v, want %v s", waits, want)
		}
	}
	s.fail = nil
	if d, err := ob.Deliver(context.Background(), opt); err != nil || d.Sent != 1 {
		t.Fatalf("after the target came back: %+v %v", d, err)
	}
	if got := s.ids(); len(got) != 1 || got[0] != m.ID {
		t.Fatalf("sent %v", got)
	}
	// A message without a sender for its target waits.
	w := testMessage("w")
	w.Target = "webhook-00000000"
	ob.Enqueue(w)
	if d, _ := ob.Deliver(context.Background(), DeliverOptions{All: true}); d.Waiting != 1 {
		t.Fatalf("%+v", d)
	}
}

// TestOutboxKeep: the messages of a tenant that is gone are dropped unsent.
func TestOutboxKeep(t *testing.T) {
	ob := testOutbox(t)
	for _, tenant := range []string{"aa", "bb", ""} {
		m := testMessage("report " + tenant)
		m.Tenant = tenant
		ob.Enqueue(m)
	}
	s := &fakeSender{}
	d, err := ob.Deliver(context.Background(), DeliverOptions{Senders: map[string]Sender{TargetEmail: s}, All: true,
		Keep: func(id string) bool { return id != "bb" }})
	if err != nil || d.Sent != 2 || d.Dropped != 1 || len(s.ids()) != 2 {
		t.Fatalf("%+v %v", d, err)
	}
	m := testMessage("x")
	m.Tenant = "cc"
	ob.Enqueue(m)
	if n, err := ob.Drop(func(m *Message) bool { return m.Tenant == "cc" }); n != 1 || err != nil {
		t.Fatalf("drop: %d %v", n, err)
	}
}

// TestOutboxDamaged: a damaged message file is set aside, never sent.
func TestOutboxDamaged(t *testing.T) {
	ob := testOutbox(t)
	m := testMessage("m")
	ob.Enqueue(m)
	p := filepath.Join(ob.Dir(), "pending", m.ID)
	if err := os.WriteFile(p, []byte(`{"id":"`+strings.Repeat("0", 32)+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &fakeSender{}
	d, err := ob.Deliver(context.Background(), DeliverOptions{Senders: map[string]Sender{TargetEmail: s}, All: true})
	if err != nil || len(d.Errors) != 1 || len(s.ids()) != 0 {
		t.Fatalf("%+v %v", d, err)
	}
	if _, err := os.Stat(p + ".bad"); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeMessage(t *testing.T) {
	good := testMessage("k")
	b, _ := json.Marshal(good)
	if _, err := decodeMessage(b, good.ID); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		b  []byte
		id string
	}{
		"other ID":   {b, strings.Repeat("0", 32)},
		"not JSON":   {[]byte("{"), good.ID},
		"too large":  {make([]byte, maxMessageFile+1), good.ID},
		"no target":  {[]byte(`{"id":"` + good.ID + `"}`), good.ID},
		"upper case": {[]byte(strings.ReplaceAll(string(b), good.ID, strings.ToUpper(good.ID))), strings.ToUpper(good.ID)},
		"negative":   {[]byte(`{"id":"` + good.ID + `","target":"email","attempts":-1}`), good.ID},
	} {
		if _, err := decodeMessage(tc.b, tc.id); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	b, _ := json.Marshal(testMessage("k"))
	f.Add(b, testMessage("k").ID)
	f.Add([]byte(`{"to":[]}`), "")
	f.Fuzz(func(t *testing.T, b []byte, id string) {
		m, err := decodeMessage(b, id)
		if err == nil && (m.ID != id || !validID(m.ID) || m.Target == "") {
			t.Fatalf("accepted %+v", m)
		}
	})
}
