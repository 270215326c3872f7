package policy

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // zone rules for the tests, independent of the machine
)

// ts parses an RFC 3339 time, keeping its offset, as a snapshot record does.
func ts(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("bad test time %q: %v", s, err)
	}
	return v
}

// snaps makes one snapshot per time, with the time text as its ID.
func snaps(t *testing.T, times ...string) []Snapshot {
	t.Helper()
	out := make([]Snapshot, len(times))
	for i, s := range times {
		out[i] = Snapshot{ID: s, Time: ts(t, s), Host: "h", Paths: []string{"/p"}}
	}
	return out
}

// kept returns "ID: reason; reason" for every kept decision, newest first.
func kept(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		if d.Keep {
			out = append(out, d.Snapshot.ID+": "+strings.Join(d.Reasons, "; "))
		}
	}
	return out
}

func mustDur(t *testing.T, s string) Duration {
	t.Helper()
	d, err := ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestApplyTable(t *testing.T) {
	// Seventy daily snapshots at noon UTC, 2024-01-01 (a Monday) to 2024-03-10.
	var daily []string
	for d := ts(t, "2024-01-01T12:00:00Z"); !d.After(ts(t, "2024-03-10T12:00:00Z")); d = d.AddDate(0, 0, 1) {
		daily = append(daily, d.Format(time.RFC3339))
	}
	days := []string{
		"2024-01-10T09:00:00Z", "2024-01-10T18:00:00Z", // a tie: the newer one counts
		"2024-01-08T12:00:00Z", "2024-01-01T12:00:00Z", "2023-12-20T12:00:00Z",
	}
	twice := func(from, to int) []string { // 06:00 and 18:00 UTC, January from..to 2024
		var out []string
		for d := from; d <= to; d++ {
			out = append(out, fmt.Sprintf("2024-01-%02dT06:00:00Z", d), fmt.Sprintf("2024-01-%02dT18:00:00Z", d))
		}
		return out
	}

	tests := []struct {
		name  string
		times []string
		p     Policy
		want  []string
	}{
		{
			name:  "daily counts days that have snapshots, newest of a day wins",
			times: days, p: Policy{Daily: 3},
			want: []string{
				"2024-01-10T18:00:00Z: daily snapshot",
				"2024-01-08T12:00:00Z: daily snapshot",
				"2024-01-01T12:00:00Z: daily snapshot",
			},
		},
		{
			name:  "daily with counts left keeps the oldest (here a new day anyway)",
			times: days, p: Policy{Daily: 5},
			want: []string{
				"2024-01-10T18:00:00Z: daily snapshot",
				"2024-01-08T12:00:00Z: daily snapshot",
				"2024-01-01T12:00:00Z: daily snapshot",
				"2023-12-20T12:00:00Z: daily snapshot",
			},
		},
		{
			name:  "oldest kept although its day already has a kept snapshot",
			times: []string{"2024-01-10T09:00:00Z", "2024-01-10T18:00:00Z"}, p: Policy{Daily: 5},
			want: []string{
				"2024-01-10T18:00:00Z: daily snapshot",
				"2024-01-10T09:00:00Z: oldest daily snapshot",
			},
		},
		{
			name:  "oldest not kept when the count ran out",
			times: []string{"2024-01-10T09:00:00Z", "2024-01-10T18:00:00Z"}, p: Policy{Daily: 1},
			want: []string{"2024-01-10T18:00:00Z: daily snapshot"},
		},
		{
			name:  "unlimited daily keeps one per day and the oldest",
			times: append(slices.Clone(days), "2023-12-20T08:00:00Z"), p: Policy{Daily: Unlimited},
			want: []string{
				"2024-01-10T18:00:00Z: daily snapshot",
				"2024-01-08T12:00:00Z: daily snapshot",
				"2024-01-01T12:00:00Z: daily snapshot",
				"2023-12-20T12:00:00Z: daily snapshot",
				"2023-12-20T08:00:00Z: oldest daily snapshot",
			},
		},
		{
			name:  "last",
			times: []string{"2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z", "2024-01-01T00:00:03Z"},
			p:     Policy{Last: 2},
			want:  []string{"2024-01-01T00:00:03Z: last snapshot", "2024-01-01T00:00:02Z: last snapshot"},
		},
		{
			name:  "last with more counts than snapshots",
			times: []string{"2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"}, p: Policy{Last: 10},
			want: []string{"2024-01-02T00:00:00Z: last snapshot", "2024-01-01T00:00:00Z: last snapshot"},
		},
		{
			name:  "hourly",
			times: []string{"2024-01-01T10:59:00Z", "2024-01-01T10:01:00Z", "2024-01-01T09:59:00Z", "2024-01-01T08:00:00Z"},
			p:     Policy{Hourly: 2},
			want:  []string{"2024-01-01T10:59:00Z: hourly snapshot", "2024-01-01T09:59:00Z: hourly snapshot"},
		},
		{
			name: "ISO weeks: Sunday 2021-01-03 is in 2020-W53 with Thursday 2020-12-31",
			times: []string{
				"2021-01-04T10:00:00Z", // Monday, 2021-W01
				"2021-01-03T10:00:00Z", // Sunday, 2020-W53
				"2020-12-31T10:00:00Z", // Thursday, 2020-W53
				"2020-12-28T10:00:00Z", // Monday, 2020-W53
				"2020-12-27T10:00:00Z", // Sunday, 2020-W52
				"2020-12-21T10:00:00Z", // Monday, 2020-W52
			},
			p: Policy{Weekly: 3},
			want: []string{
				"2021-01-04T10:00:00Z: weekly snapshot",
				"2021-01-03T10:00:00Z: weekly snapshot",
				"2020-12-27T10:00:00Z: weekly snapshot",
			},
		},
		{
			name:  "ISO weeks: Monday 2024-12-30 is in 2025-W01",
			times: []string{"2025-01-01T10:00:00Z", "2024-12-30T10:00:00Z", "2024-12-29T10:00:00Z", "2024-12-28T10:00:00Z"},
			p:     Policy{Weekly: 2},
			want:  []string{"2025-01-01T10:00:00Z: weekly snapshot", "2024-12-29T10:00:00Z: weekly snapshot"},
		},
		{
			name:  "months across the same dates",
			times: []string{"2025-01-01T10:00:00Z", "2024-12-30T10:00:00Z", "2024-12-29T10:00:00Z", "2024-12-28T10:00:00Z"},
			p:     Policy{Monthly: 2},
			want:  []string{"2025-01-01T10:00:00Z: monthly snapshot", "2024-12-30T10:00:00Z: monthly snapshot"},
		},
		{
			name: "month and year boundaries, leap day",
			times: []string{
				"2023-12-31T23:30:00Z", "2024-01-01T00:30:00Z", "2024-01-31T23:59:59Z",
				"2024-02-01T00:00:00Z", "2024-02-29T12:00:00Z", "2024-03-01T00:00:00Z",
			},
			p: Policy{Monthly: 3, Yearly: 2},
			want: []string{
				"2024-03-01T00:00:00Z: monthly snapshot; yearly snapshot",
				"2024-02-29T12:00:00Z: monthly snapshot",
				"2024-01-31T23:59:59Z: monthly snapshot",
				"2023-12-31T23:30:00Z: yearly snapshot",
			},
		},
		{
			name:  "yearly with counts left keeps the oldest of the last year",
			times: []string{"2025-01-01T10:00:00Z", "2024-12-30T10:00:00Z", "2024-12-29T10:00:00Z"},
			p:     Policy{Yearly: 5},
			want: []string{
				"2025-01-01T10:00:00Z: yearly snapshot",
				"2024-12-30T10:00:00Z: yearly snapshot",
				"2024-12-29T10:00:00Z: oldest yearly snapshot",
			},
		},
		{
			name: "days are taken in each snapshot's own offset",
			times: []string{
				"2024-01-16T08:30:00+09:00", // 2024-01-15T23:30Z, the 16th in Tokyo
				"2024-01-15T23:30:00Z",      // the same instant, the 15th in UTC
				"2024-01-15T12:00:00Z",
				"2024-01-14T12:00:00Z",
			},
			p: Policy{Daily: Unlimited},
			want: []string{
				"2024-01-16T08:30:00+09:00: daily snapshot",
				"2024-01-15T23:30:00Z: daily snapshot",
				"2024-01-14T12:00:00Z: daily snapshot",
			},
		},
		{
			name: "the newer snapshot can be on the earlier day",
			times: []string{
				"2024-01-16T01:00:00Z",      // the 16th
				"2024-01-15T23:30:00-05:00", // 2024-01-16T04:30Z: newer, but the 15th
				"2024-01-14T00:00:00Z",
			},
			p: Policy{Daily: 2},
			want: []string{
				"2024-01-15T23:30:00-05:00: daily snapshot",
				"2024-01-16T01:00:00Z: daily snapshot",
			},
		},
		{
			name: "within counts back from the newest snapshot, not now; the cutoff itself goes",
			times: []string{
				"2020-06-15T12:00:00Z", "2020-06-08T12:00:01Z", "2020-06-08T12:00:00Z", "2020-06-01T12:00:00Z",
			},
			p: Policy{Within: Duration{Days: 7}},
			want: []string{
				"2020-06-15T12:00:00Z: within 7d",
				"2020-06-08T12:00:01Z: within 7d",
			},
		},
		{
			name: "within 1y5m7d2h",
			times: []string{
				"2024-08-10T12:00:00Z", "2023-03-03T10:00:01Z", "2023-03-03T10:00:00Z", "2023-03-03T09:59:59Z",
			},
			p:    Policy{Within: Duration{Years: 1, Months: 5, Days: 7, Hours: 2}},
			want: []string{"2024-08-10T12:00:00Z: within 1y5m7d2h", "2023-03-03T10:00:01Z: within 1y5m7d2h"},
		},
		{
			name:  "within 1m from March 31st reaches back to March 2nd (AddDate normalises)",
			times: []string{"2024-03-31T12:00:00Z", "2024-03-02T13:00:00Z", "2024-03-01T12:00:00Z"},
			p:     Policy{Within: Duration{Months: 1}},
			want:  []string{"2024-03-31T12:00:00Z: within 1m", "2024-03-02T13:00:00Z: within 1m"},
		},
		{
			name:  "within-daily",
			times: twice(1, 5), p: Policy{WithinDaily: Duration{Days: 3}},
			want: []string{
				"2024-01-05T18:00:00Z: daily within 3d",
				"2024-01-04T18:00:00Z: daily within 3d",
				"2024-01-03T18:00:00Z: daily within 3d",
			},
		},
		{
			name:  "within-daily reaching past the oldest keeps the oldest",
			times: twice(1, 3), p: Policy{WithinDaily: Duration{Days: 10}},
			want: []string{
				"2024-01-03T18:00:00Z: daily within 10d",
				"2024-01-02T18:00:00Z: daily within 10d",
				"2024-01-01T18:00:00Z: daily within 10d",
				"2024-01-01T06:00:00Z: oldest daily within 10d",
			},
		},
		{
			name:  "within-hourly and within-weekly together",
			times: twice(1, 9), p: Policy{WithinHourly: Duration{Hours: 13}, WithinWeekly: Duration{Days: 8}},
			want: []string{
				"2024-01-09T18:00:00Z: hourly within 13h; weekly within 8d", // Tuesday, W02
				"2024-01-09T06:00:00Z: hourly within 13h",
				"2024-01-07T18:00:00Z: weekly within 8d", // Sunday, W01
			},
		},
		{
			name: "tags: all tags of one list; the empty tag matches untagged snapshots",
			times: []string{
				"2024-01-05T00:00:00Z", "2024-01-04T00:00:00Z", "2024-01-03T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z",
			},
			p: Policy{Tags: [][]string{{"a", "b"}, {"keep"}, {""}}},
			want: []string{
				"2024-01-04T00:00:00Z: has tags [a, b]",
				"2024-01-02T00:00:00Z: has tags [keep]",
				"2024-01-01T00:00:00Z: has tags []",
			},
		},
		{
			name:  "combination: daily, weekly, monthly, yearly over seventy days",
			times: daily, p: Policy{Daily: 3, Weekly: 2, Monthly: 2, Yearly: 3},
			want: []string{
				"2024-03-10T12:00:00Z: daily snapshot; weekly snapshot; monthly snapshot; yearly snapshot",
				"2024-03-09T12:00:00Z: daily snapshot",
				"2024-03-08T12:00:00Z: daily snapshot",
				"2024-03-03T12:00:00Z: weekly snapshot",
				"2024-02-29T12:00:00Z: monthly snapshot",
				"2024-01-01T12:00:00Z: oldest yearly snapshot",
			},
		},
		{
			name:  "combination: last and within",
			times: daily, p: Policy{Last: 1, Within: Duration{Days: 2}},
			want: []string{
				"2024-03-10T12:00:00Z: within 2d; last snapshot",
				"2024-03-09T12:00:00Z: within 2d",
			},
		},
		{
			name:  "the restic manual: twelve Sundays, keep-daily 4",
			times: sundays(t, "2019-09-01T11:00:00Z", 12), p: Policy{Daily: 4},
			want: []string{
				"2019-11-17T11:00:00Z: daily snapshot",
				"2019-11-10T11:00:00Z: daily snapshot",
				"2019-11-03T11:00:00Z: daily snapshot",
				"2019-10-27T11:00:00Z: daily snapshot",
			},
		},
		{
			name:  "empty policy keeps everything",
			times: []string{"2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"}, p: Policy{},
			want: []string{"2024-01-02T00:00:00Z: policy is empty", "2024-01-01T00:00:00Z: policy is empty"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := snaps(t, tc.times...)
			if strings.HasPrefix(tc.name, "tags") {
				in[1].Tags = []string{"b", "a", "c"}
				in[2].Tags = []string{"a"}
				in[3].Tags = []string{"keep"}
				in[0].Tags = []string{"x"}
			}
			got := kept(Apply(in, tc.p))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("policy %v\ngot  %q\nwant %q", tc.p, got, tc.want)
			}
		})
	}
}

func sundays(t *testing.T, first string, n int) []string {
	t.Helper()
	var out []string
	for i, d := 0, ts(t, first); i < n; i, d = i+1, d.AddDate(0, 0, 7) {
		out = append(out, d.Format(time.RFC3339))
	}
	return out
}

func TestApplyOrderAndInput(t *testing.T) {
	in := snaps(t, "2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z", "2024-01-02T00:00:00Z")
	before := slices.Clone(in)
	ds := Apply(in, Policy{Last: 1})
	if !reflect.DeepEqual(in, before) {
		t.Fatal("Apply modified its input")
	}
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.Snapshot.ID)
		if !d.Keep && d.Reasons != nil {
			t.Errorf("%s removed with reasons %q", d.Snapshot.ID, d.Reasons)
		}
	}
	want := []string{"2024-01-03T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("order %q, want newest first %q", ids, want)
	}
	if got := Apply(nil, Policy{Last: 1}); len(got) != 0 {
		t.Errorf("Apply(nil) = %v", got)
	}

	// Equal instants keep their input order (a stable sort, as restic).
	a := Snapshot{ID: "a", Time: ts(t, "2024-01-01T00:00:00Z")}
	b := Snapshot{ID: "b", Time: ts(t, "2024-01-01T09:00:00+09:00")}
	for _, order := range [][]Snapshot{{a, b}, {b, a}} {
		ds := Apply(order, Policy{Last: 1})
		if ds[0].Snapshot.ID != order[0].ID || !ds[0].Keep || ds[1].Keep {
			t.Errorf("tie %s,%s: got %+v", order[0].ID, order[1].ID, ds)
		}
	}
}

// The machine's zone and zone database do not matter: only each time's
// offset does. Within arithmetic across a DST change is done in the newest
// snapshot's fixed offset.
func TestApplyIgnoresZoneRules(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	times := []string{
		"2024-04-01T10:00:00+02:00",
		"2024-03-25T09:30:00+01:00", // 08:30Z: after the fixed-offset cutoff 08:00Z
		"2024-03-25T08:30:00+01:00", // 07:30Z
		"2024-03-31T01:30:00+01:00", "2024-03-31T03:30:00+02:00", "2024-03-30T23:30:00+01:00",
	}
	p := Policy{Within: Duration{Days: 7}, Daily: Unlimited, Hourly: Unlimited}
	fixed := snaps(t, times...)
	zoned := snaps(t, times...)
	for i := range zoned {
		zoned[i].Time = zoned[i].Time.In(berlin)
		if _, off := zoned[i].Time.Zone(); off != offsetOf(fixed[i].Time) {
			t.Fatalf("%s: Berlin offset %d", times[i], off)
		}
	}
	want := kept(Apply(fixed, p))
	if got := kept(Apply(zoned, p)); !reflect.DeepEqual(got, want) {
		t.Errorf("Berlin location: %q\nfixed offsets: %q", got, want)
	}
	if !slices.Contains(want, "2024-03-25T09:30:00+01:00: within 7d; hourly snapshot; daily snapshot") {
		t.Errorf("cutoff not taken in the newest snapshot's fixed offset: %q", want)
	}
}

func offsetOf(t time.Time) int { _, off := t.Zone(); return off }

func TestApplyNow(t *testing.T) {
	in := snaps(t, "2030-01-01T00:00:00Z", "2024-01-10T00:00:00Z", "2024-01-01T00:00:00Z")
	p := Policy{Within: Duration{Days: 5}}
	if got, want := kept(Apply(in, p)), []string{"2030-01-01T00:00:00Z: within 5d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("without Now: %q, want %q", got, want)
	}
	p.Now = ts(t, "2024-06-01T00:00:00Z")
	want := []string{"2030-01-01T00:00:00Z: within 5d", "2024-01-10T00:00:00Z: within 5d"}
	if got := kept(Apply(in, p)); !reflect.DeepEqual(got, want) {
		t.Errorf("with Now: %q, want %q", got, want)
	}
	// Everything in the future: restic's zero reference keeps all.
	p.Now = ts(t, "2000-01-01T00:00:00Z")
	if got := kept(Apply(in, p)); len(got) != 3 {
		t.Errorf("all in the future: %q", got)
	}
}

func TestValidate(t *testing.T) {
	bad := []Policy{
		{Daily: -2}, {Last: -5},
		{Within: Duration{Days: -1}}, {WithinWeekly: Duration{Hours: maxDurationPart + 1}},
	}
	for _, p := range bad {
		err := p.Validate()
		if !errors.Is(err, ErrBadPolicy) {
			t.Errorf("%+v: Validate = %v, want ErrBadPolicy", p, err)
		}
		ds := Apply(snaps(t, "2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"), p)
		for _, d := range ds {
			if !d.Keep || len(d.Reasons) != 1 || !strings.HasPrefix(d.Reasons[0], "invalid policy: ") {
				t.Errorf("%+v: bad policy must keep all, got %+v", p, d)
			}
		}
	}
	for _, p := range []Policy{{}, {Daily: Unlimited}, {Within: Duration{Years: 1}}} {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
}

func TestEmpty(t *testing.T) {
	for p, want := range map[*Policy]bool{
		{}:                                 true,
		{Now: time.Unix(1, 0)}:             true,
		{Last: 1}:                          false,
		{Yearly: Unlimited}:                false,
		{WithinYearly: Duration{Hours: 1}}: false,
		{Tags: [][]string{{"a"}}}:          false,
	} {
		if got := p.Empty(); got != want {
			t.Errorf("%+v.Empty() = %v", *p, got)
		}
	}
}

func TestPolicyString(t *testing.T) {
	tests := []struct {
		p    Policy
		want string
	}{
		{Policy{}, "remove"},
		{Policy{Daily: 7, Weekly: 4, Within: Duration{Months: 1}}, "keep 7 daily, 4 weekly snapshots and all snapshots within 1m of the newest"},
		{Policy{Last: Unlimited, WithinDaily: Duration{Days: 7}, Tags: [][]string{{"a", "b"}, {"c"}}},
			"keep all latest snapshots, daily snapshots within 7d and all snapshots with tags [[a, b] [c]]"},
	}
	for _, tc := range tests {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func TestParseTagList(t *testing.T) {
	for in, want := range map[string][]string{
		"a":       {"a"},
		"a, b ,c": {"a", "b", "c"},
		"":        {""},
	} {
		if got := ParseTagList(in); !reflect.DeepEqual(got, want) {
			t.Errorf("ParseTagList(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestApplyGrouped(t *testing.T) {
	mk := func(id, host string, at string, paths ...string) Snapshot {
		return Snapshot{ID: id, Host: host, Time: ts(t, at), Paths: paths}
	}
	in := []Snapshot{
		mk("b1", "b", "2024-01-01T00:00:00Z", "/x"),
		mk("a1", "a", "2024-01-01T00:00:00Z", "/y", "/x"),
		mk("a2", "a", "2024-01-02T00:00:00Z", "/x", "/y"),
		mk("a3", "a", "2024-01-03T00:00:00Z", "/x"),
		mk("b2", "b", "2024-01-02T00:00:00Z", "/x"),
	}
	groups := ApplyGrouped(in, Policy{Last: 1})
	var got []string
	for _, g := range groups {
		var ids []string
		for _, d := range g.Decisions {
			ids = append(ids, fmt.Sprintf("%s=%v", d.Snapshot.ID, d.Keep))
		}
		got = append(got, fmt.Sprintf("%s %q: %s", g.Host, g.Paths, strings.Join(ids, " ")))
	}
	want := []string{
		`a ["/x"]: a3=true`,
		`a ["/x" "/y"]: a2=true a1=false`,
		`b ["/x"]: b2=true b1=false`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if !reflect.DeepEqual(in[1].Paths, []string{"/y", "/x"}) {
		t.Error("ApplyGrouped sorted the caller's Paths")
	}
}
