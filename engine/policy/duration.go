package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrBadDuration is the class of every error returned by ParseDuration.
var ErrBadDuration = errors.New("policy: invalid duration")

// maxDurationPart bounds each number in a duration so that the cutoff
// arithmetic (time.Duration hours, AddDate) cannot overflow. A million years
// or a million hours is far beyond any retention period.
const maxDurationPart = 1_000_000

// Duration is a calendar span as restic's --keep-within takes it: years,
// months, days and hours, each applied with calendar arithmetic
// (time.Time.AddDate for years, months and days, then whole hours). It is
// not a time.Duration: "1m" is one calendar month, not one minute.
type Duration struct {
	Years, Months, Days, Hours int
}

// ParseDuration parses restic's duration syntax: one or more groups of a
// non-negative decimal number and a unit, where the unit is y (years),
// m (months), d (days) or h (hours), e.g. "1y5m7d2h", "30d", "36h". Units
// may come in any order, each at most once. Surrounding white space is
// ignored. There is no week unit: write 7d.
//
// restic also accepts a repeated unit (the last one wins) and negative
// numbers (rejected later by forget); Coffer rejects both here with an
// error, so that a typo cannot silently change a policy. Every error
// wraps ErrBadDuration.
func ParseDuration(s string) (Duration, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Duration{}, fmt.Errorf("%w %q: empty (want e.g. 1y5m7d2h)", ErrBadDuration, in)
	}
	var d Duration
	var seen [4]bool // y, m, d, h
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			if s[0] == '-' {
				return Duration{}, fmt.Errorf("%w %q: negative numbers are not allowed", ErrBadDuration, in)
			}
			return Duration{}, fmt.Errorf("%w %q: expected a number at %q", ErrBadDuration, in, s)
		}
		digits := s[:i]
		s = s[i:]
		n, err := strconv.Atoi(digits)
		if err != nil || n > maxDurationPart {
			return Duration{}, fmt.Errorf("%w %q: number %s is larger than %d", ErrBadDuration, in, digits, maxDurationPart)
		}
		if s == "" {
			return Duration{}, fmt.Errorf("%w %q: no unit after number %s (want y, m, d or h)", ErrBadDuration, in, digits)
		}
		var slot int
		switch s[0] {
		case 'y':
			slot, d.Years = 0, n
		case 'm':
			slot, d.Months = 1, n
		case 'd':
			slot, d.Days = 2, n
		case 'h':
			slot, d.Hours = 3, n
		case 'w':
			return Duration{}, fmt.Errorf("%w %q: unit w is not supported, write 7d for a week", ErrBadDuration, in)
		default:
			r := []rune(s)[0]
			return Duration{}, fmt.Errorf("%w %q: unknown unit %q after number %s (want y, m, d or h)", ErrBadDuration, in, r, digits)
		}
		if seen[slot] {
			return Duration{}, fmt.Errorf("%w %q: unit %c given twice", ErrBadDuration, in, s[0])
		}
		seen[slot] = true
		s = s[1:]
	}
	return d, nil
}

// String formats d as ParseDuration reads it, omitting zero parts, in the
// order y, m, d, h ("1y5m7d2h"), as restic does; the zero Duration is "0h".
func (d Duration) String() string {
	var b strings.Builder
	for _, p := range []struct {
		n    int
		unit byte
	}{{d.Years, 'y'}, {d.Months, 'm'}, {d.Days, 'd'}, {d.Hours, 'h'}} {
		if p.n != 0 {
			b.WriteString(strconv.Itoa(p.n))
			b.WriteByte(p.unit)
		}
	}
	if b.Len() == 0 {
		return "0h"
	}
	return b.String()
}

// Zero reports whether d is empty; a zero Duration switches its rule off.
func (d Duration) Zero() bool {
	return d.Years == 0 && d.Months == 0 && d.Days == 0 && d.Hours == 0
}

// Before returns the instant d before t: t.AddDate(-Years, -Months, -Days)
// in t's location, then minus Hours whole hours. This is restic's
// Duration.PastTime. AddDate normalises overflow as time.Date does, so
// 2024-03-31 minus 1m is 2024-03-02 (February 31st normalised).
func (d Duration) Before(t time.Time) time.Time {
	return t.AddDate(-d.Years, -d.Months, -d.Days).Add(-time.Duration(d.Hours) * time.Hour)
}

func (d Duration) valid() bool {
	for _, n := range []int{d.Years, d.Months, d.Days, d.Hours} {
		if n < 0 || n > maxDurationPart {
			return false
		}
	}
	return true
}
