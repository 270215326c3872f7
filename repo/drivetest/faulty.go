package drivetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"coffer/repo"
)

// Op is the kind of a drive call a Rule matches.
type Op uint8

const (
	OpAny Op = iota // every kind of call
	OpPut
	OpRead
	OpSize
	OpList
	OpDelete
)

func (o Op) String() string {
	return [...]string{"any", "put", "read", "size", "list", "delete"}[o]
}

// Action is what a Rule does to a call it matches.
type Action uint8

const (
	// Fail makes the call return Rule.Err (ErrInjected if nil) without reaching
	// the inner drive.
	Fail Action = iota + 1
	// Corrupt flips one byte (the middle one) of what a successful read returns.
	Corrupt
	// Truncate makes a put store only the first half of its data, and succeed.
	Truncate
	// Vanish makes a put return nil but store nothing.
	Vanish
	// Gone makes the whole drive vanish: this call and every later one fails with
	// ErrGone until Revive.
	Gone
	// Delay sleeps Rule.Delay (or until ctx is done) before the call proceeds.
	Delay
)

var (
	// ErrInjected is the error of a Fail rule without its own Err.
	ErrInjected = errors.New("drivetest: injected failure")
	// ErrGone is the error of every call to a drive that vanished.
	ErrGone = errors.New("drivetest: drive is gone")
)

// Rule selects calls and says what to do to them.
type Rule struct {
	Op     Op     // kind of call; OpAny matches all
	Name   string // substring of the object name (of the prefix, for List); "" matches all
	Skip   int    // let this many matching calls through untouched first
	Times  int    // act on at most this many calls; 0 means every matching call
	Action Action
	Err    error         // for Fail; nil means ErrInjected
	Delay  time.Duration // for Delay
}

type rule struct {
	Rule
	seen, fired int
}

// Faulty wraps a repo.Drive and applies fault rules to its calls. With no rules
// it behaves exactly like the inner drive (and passes Run). It is safe for
// concurrent use; rules may be added while calls are in flight.
type Faulty struct {
	inner repo.Drive

	mu    sync.Mutex
	rules []*rule    // guarded by mu
	gone  bool       // guarded by mu
	calls map[Op]int // calls per kind; guarded by mu
}

var (
	_ repo.Drive         = (*Faulty)(nil)
	_ repo.PrefixDeleter = (*Faulty)(nil)
)

// NewFaulty wraps inner.
func NewFaulty(inner repo.Drive) *Faulty {
	return &Faulty{inner: inner, calls: map[Op]int{}}
}

// Inner returns the wrapped drive.
func (f *Faulty) Inner() repo.Drive { return f.inner }

// Add appends rules. All rules that match a call act on it, in the order added.
func (f *Faulty) Add(rules ...Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range rules {
		f.rules = append(f.rules, &rule{Rule: r})
	}
}

// Reset removes every rule and revives the drive.
func (f *Faulty) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
	f.gone = false
}

// Vanish makes the drive vanish now: every call fails with ErrGone.
func (f *Faulty) Vanish() {
	f.mu.Lock()
	f.gone = true
	f.mu.Unlock()
}

// Revive brings a vanished drive back (with its contents).
func (f *Faulty) Revive() {
	f.mu.Lock()
	f.gone = false
	f.mu.Unlock()
}

// Calls returns how many calls of kind op reached the wrapper (OpAny: all kinds).
func (f *Faulty) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if op == OpAny {
		n := 0
		for _, c := range f.calls {
			n += c
		}
		return n
	}
	return f.calls[op]
}

// match counts the call and returns the actions to apply to it, or ErrGone.
func (f *Faulty) match(op Op, name string) ([]*rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if f.gone {
		return nil, fmt.Errorf("%s %s: %w", op, name, ErrGone)
	}
	var acts []*rule
	for _, r := range f.rules {
		if r.Op != OpAny && r.Op != op || !strings.Contains(name, r.Name) {
			continue
		}
		r.seen++
		if r.seen <= r.Skip || r.Times > 0 && r.fired >= r.Times {
			continue
		}
		r.fired++
		if r.Action == Gone {
			f.gone = true
			return nil, fmt.Errorf("%s %s: %w", op, name, ErrGone)
		}
		acts = append(acts, r)
	}
	return acts, nil
}

// before applies Delay and Fail actions; it returns the error to return, if any.
func before(ctx context.Context, op Op, name string, acts []*rule) error {
	for _, r := range acts {
		switch r.Action {
		case Delay:
			t := time.NewTimer(r.Delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		case Fail:
			err := r.Err
			if err == nil {
				err = ErrInjected
			}
			return fmt.Errorf("%s %s: %w", op, name, err)
		}
	}
	return nil
}

func has(acts []*rule, a Action) bool {
	for _, r := range acts {
		if r.Action == a {
			return true
		}
	}
	return false
}

// Put implements repo.Drive.
func (f *Faulty) Put(ctx context.Context, name string, data []byte) error {
	acts, err := f.match(OpPut, name)
	if err != nil {
		return err
	}
	if err := before(ctx, OpPut, name, acts); err != nil {
		return err
	}
	switch {
	case has(acts, Vanish):
		if err := repo.ValidateName(name); err != nil {
			return err
		}
		return ctx.Err()
	case has(acts, Truncate):
		data = data[:len(data)/2]
	}
	return f.inner.Put(ctx, name, data)
}

// ReadAt implements repo.Drive.
func (f *Faulty) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	acts, err := f.match(OpRead, name)
	if err != nil {
		return err
	}
	if err := before(ctx, OpRead, name, acts); err != nil {
		return err
	}
	if err := f.inner.ReadAt(ctx, name, p, off); err != nil {
		return err
	}
	if has(acts, Corrupt) && len(p) > 0 {
		p[len(p)/2] ^= 0xff
	}
	return nil
}

// Size implements repo.Drive.
func (f *Faulty) Size(ctx context.Context, name string) (int64, error) {
	acts, err := f.match(OpSize, name)
	if err != nil {
		return 0, err
	}
	if err := before(ctx, OpSize, name, acts); err != nil {
		return 0, err
	}
	return f.inner.Size(ctx, name)
}

// List implements repo.Drive. Rules match the prefix.
func (f *Faulty) List(ctx context.Context, prefix string, fn func(name string, size int64) error) error {
	acts, err := f.match(OpList, prefix)
	if err != nil {
		return err
	}
	if err := before(ctx, OpList, prefix, acts); err != nil {
		return err
	}
	return f.inner.List(ctx, prefix, fn)
}

// Delete implements repo.Drive.
func (f *Faulty) Delete(ctx context.Context, name string) error {
	acts, err := f.match(OpDelete, name)
	if err != nil {
		return err
	}
	if err := before(ctx, OpDelete, name, acts); err != nil {
		return err
	}
	return f.inner.Delete(ctx, name)
}

// DeletePrefix implements repo.PrefixDeleter when the inner drive does (rules for
// OpDelete match the prefix); otherwise it returns errors.ErrUnsupported.
func (f *Faulty) DeletePrefix(ctx context.Context, prefix string) error {
	pd, ok := f.inner.(repo.PrefixDeleter)
	if !ok {
		return fmt.Errorf("delete prefix %s: %w", prefix, errors.ErrUnsupported)
	}
	acts, err := f.match(OpDelete, prefix)
	if err != nil {
		return err
	}
	if err := before(ctx, OpDelete, prefix, acts); err != nil {
		return err
	}
	return pd.DeletePrefix(ctx, prefix)
}
