package policy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want Duration
		err  string // substring of the error; "" means success
	}{
		{in: "1y5m7d2h", want: Duration{Years: 1, Months: 5, Days: 7, Hours: 2}},
		{in: "30d", want: Duration{Days: 30}},
		{in: "36h", want: Duration{Hours: 36}},
		{in: "2h1y", want: Duration{Years: 1, Hours: 2}},
		{in: " 1m ", want: Duration{Months: 1}},
		{in: "0d", want: Duration{}},
		{in: "007d", want: Duration{Days: 7}},
		{in: "1000000y", want: Duration{Years: 1000000}},
		{in: "", err: "empty"},
		{in: "   ", err: "empty"},
		{in: "7", err: "no unit after number 7"},
		{in: "d", err: "expected a number"},
		{in: "1w", err: "write 7d"},
		{in: "1M", err: `unknown unit 'M'`},
		{in: "1s", err: `unknown unit 's'`},
		{in: "1d2d", err: "unit d given twice"},
		{in: "-1d", err: "negative"},
		{in: "1d-2h", err: "negative"},
		{in: "1000001h", err: "larger than"},
		{in: "99999999999999999999999y", err: "larger than"},
		{in: "1 d", err: "unknown unit ' '"},
		{in: "1y é", err: "expected a number"},
		{in: "1é", err: "unknown unit 'é'"},
		{in: "٣d", err: "expected a number"}, // restic's unicode.IsNumber would panic on this
	}
	for _, tc := range tests {
		got, err := ParseDuration(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("ParseDuration(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrBadDuration) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseDuration(%q) error = %v; want ErrBadDuration mentioning %q", tc.in, err, tc.err)
		}
	}
}

func TestDurationString(t *testing.T) {
	for d, want := range map[Duration]string{
		{Years: 1, Months: 5, Days: 7, Hours: 2}: "1y5m7d2h",
		{Days: 7}:                                "7d",
		{Years: 2, Hours: 3}:                     "2y3h",
		{}:                                       "0h",
	} {
		if got := d.String(); got != want {
			t.Errorf("%+v.String() = %q, want %q", d, got, want)
		}
	}
}

func TestDurationBefore(t *testing.T) {
	at := time.Date(2024, 8, 10, 12, 0, 0, 0, time.UTC)
	got := Duration{Years: 1, Months: 5, Days: 7, Hours: 2}.Before(at)
	if want := time.Date(2023, 3, 3, 10, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Before = %v, want %v", got, want)
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"1y5m7d2h", "30d", "", "1w", "-1d", "1d2d", "٣d", "99999999999999999999y", "2h1y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			if !errors.Is(err, ErrBadDuration) {
				t.Fatalf("ParseDuration(%q): error %v does not wrap ErrBadDuration", s, err)
			}
			if d != (Duration{}) {
				t.Fatalf("ParseDuration(%q): non-zero %+v with error", s, d)
			}
			return
		}
		if !d.valid() {
			t.Fatalf("ParseDuration(%q) = %+v out of range", s, d)
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("round trip %q -> %+v -> %q -> %+v, %v", s, d, d.String(), back, err)
		}
		// The cutoff arithmetic must not panic or overflow into the future.
		now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		if d.Before(now).After(now) {
			t.Fatalf("%+v.Before(now) is after now", d)
		}
	})
}
