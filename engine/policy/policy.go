package policy

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Unlimited as a count (e.g. Policy.Daily) keeps every bucket: restic's
// "--keep-daily unlimited".
const Unlimited = -1

// ErrBadPolicy is the class of every error returned by Policy.Validate.
var ErrBadPolicy = errors.New("policy: invalid policy")

// Snapshot is what the policy needs to know about one snapshot.
//
// Time must carry the UTC offset recorded when the snapshot was taken (a
// time.Time decoded from RFC 3339 text does). Apply uses only that offset,
// never the Location's zone rules, to find hours, days, weeks, months and
// years.
type Snapshot struct {
	ID    string
	Time  time.Time
	Host  string
	Paths []string
	Tags  []string
}

// Policy says which snapshots to keep. A snapshot is kept if any rule keeps
// it. The zero Policy is empty (see Empty).
type Policy struct {
	// Last, Hourly, Daily, Weekly, Monthly and Yearly keep the newest
	// snapshot of each of the N newest hours, days, ISO weeks (Monday to
	// Sunday), months and years that have snapshots; Last keeps the N newest
	// snapshots. 0 switches a rule off; Unlimited (-1) keeps one per bucket
	// for all buckets. Other negative values are invalid.
	Last, Hourly, Daily, Weekly, Monthly, Yearly int

	// Within keeps every snapshot newer than Within before the newest
	// snapshot of the group (strictly newer: one exactly at the cutoff
	// goes). WithinHourly ... WithinYearly keep the newest snapshot of each
	// hour ... year among those newer than that cutoff. The zero Duration
	// switches a rule off.
	Within, WithinHourly, WithinDaily, WithinWeekly, WithinMonthly, WithinYearly Duration

	// Tags keeps every snapshot that has all tags of at least one of the
	// lists. A list holding the empty tag "" matches untagged snapshots
	// (restic's --keep-tag ''). Use ParseTagList to read a --keep-tag value.
	Tags [][]string

	// Now is optional and off by default, so that Apply never depends on the
	// clock. When set, snapshots dated after Now are not used as the
	// reference for the Within rules (restic 0.18 does this with the wall
	// clock, to resist a snapshot forged with a far-future time); they are
	// still evaluated and, being within every duration, kept by Within.
	Now time.Time
}

// Empty reports whether p has no rule: every count 0, every Duration zero
// and no tag list. Now is not a rule. restic's forget refuses to run an
// empty policy ("no policy was specified, no snapshots will be removed");
// Apply keeps everything under one.
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 &&
		p.Monthly == 0 && p.Yearly == 0 && len(p.Tags) == 0 &&
		p.Within.Zero() && p.WithinHourly.Zero() && p.WithinDaily.Zero() &&
		p.WithinWeekly.Zero() && p.WithinMonthly.Zero() && p.WithinYearly.Zero()
}

// Validate reports a count below Unlimited or a Duration with a negative
// (or absurdly large) part, with an error wrapping ErrBadPolicy that names
// the flag. It accepts the empty policy; refusing that is forget's call.
func (p Policy) Validate() error {
	for _, c := range []struct {
		flag string
		n    int
	}{
		{"--keep-last", p.Last}, {"--keep-hourly", p.Hourly}, {"--keep-daily", p.Daily},
		{"--keep-weekly", p.Weekly}, {"--keep-monthly", p.Monthly}, {"--keep-yearly", p.Yearly},
	} {
		if c.n < Unlimited {
			return fmt.Errorf("%w: %s %d: negative counts are not allowed (use unlimited to keep all)", ErrBadPolicy, c.flag, c.n)
		}
	}
	for _, c := range []struct {
		flag string
		d    Duration
	}{
		{"--keep-within", p.Within}, {"--keep-within-hourly", p.WithinHourly},
		{"--keep-within-daily", p.WithinDaily}, {"--keep-within-weekly", p.WithinWeekly},
		{"--keep-within-monthly", p.WithinMonthly}, {"--keep-within-yearly", p.WithinYearly},
	} {
		if !c.d.valid() {
			return fmt.Errorf("%w: %s %+v: each part must be between 0 and %d", ErrBadPolicy, c.flag, c.d, maxDurationPart)
		}
	}
	return nil
}

// String describes p in restic's words, e.g. "keep 7 daily, 4 weekly
// snapshots and all snapshots within 1m of the newest" (restic prints it as
// "Applying Policy: ..."). The empty policy is "remove".
func (p Policy) String() string {
	// Follows restic's ExpirePolicy.String.
	var keeps, keepw []string
	for _, c := range []struct {
		n     int
		descr string
	}{
		{p.Last, "latest"}, {p.Hourly, "hourly"}, {p.Daily, "daily"},
		{p.Weekly, "weekly"}, {p.Monthly, "monthly"}, {p.Yearly, "yearly"},
	} {
		if c.n > 0 {
			keeps = append(keeps, fmt.Sprintf("%d %s", c.n, c.descr))
		} else if c.n == Unlimited {
			keeps = append(keeps, "all "+c.descr)
		}
	}
	for _, w := range []struct {
		d     Duration
		descr string
	}{
		{p.WithinHourly, "hourly"}, {p.WithinDaily, "daily"}, {p.WithinWeekly, "weekly"},
		{p.WithinMonthly, "monthly"}, {p.WithinYearly, "yearly"},
	} {
		if !w.d.Zero() {
			keepw = append(keepw, fmt.Sprintf("%s snapshots within %v", w.descr, w.d))
		}
	}
	var s string
	if len(keeps) > 0 {
		s = strings.Join(keeps, ", ") + " snapshots"
	}
	if len(keepw) > 0 {
		if s != "" {
			s += ", "
		}
		s += strings.Join(keepw, ", ")
	}
	if len(p.Tags) > 0 {
		if s != "" {
			s += " and "
		}
		lists := make([]string, len(p.Tags))
		for i, l := range p.Tags {
			lists[i] = tagListString(l)
		}
		s += "all snapshots with tags [" + strings.Join(lists, " ") + "]"
	}
	if !p.Within.Zero() {
		if s != "" {
			s += " and "
		}
		s += fmt.Sprintf("all snapshots within %v of the newest", p.Within)
	}
	if s == "" {
		return "remove"
	}
	return "keep " + s
}

// ParseTagList reads one --keep-tag value: tags separated by commas, each
// trimmed of white space, as restic does ("a, b" is [a b]; "" is [""],
// which matches untagged snapshots).
func ParseTagList(s string) []string {
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// Decision is the verdict on one snapshot.
type Decision struct {
	Snapshot Snapshot
	Keep     bool
	// Reasons names every rule that keeps the snapshot, in restic's words
	// and order: "has tags [a, b]", "within 1y5m7d2h", "last snapshot",
	// "hourly snapshot", "daily snapshot", "weekly snapshot", "monthly
	// snapshot", "yearly snapshot" (each may be prefixed "oldest "),
	// "daily within 7d" (or "oldest daily within 7d"), and so on. Empty when
	// Keep is false. Under an empty policy it is ["policy is empty"], under
	// an invalid one ["invalid policy: ..."].
	Reasons []string
}

// bucketFunc maps a snapshot to its bucket value; nr is its position in the
// newest-first list (used by "last"). These are restic's ymdh, ymd, yw, ym,
// y and always. t is already in the snapshot's own fixed offset.
type bucketFunc func(t time.Time, nr int) int

func hourBucket(t time.Time, _ int) int {
	return t.Year()*1000000 + int(t.Month())*10000 + t.Day()*100 + t.Hour()
}
func dayBucket(t time.Time, _ int) int   { return t.Year()*10000 + int(t.Month())*100 + t.Day() }
func monthBucket(t time.Time, _ int) int { return t.Year()*100 + int(t.Month()) }
func yearBucket(t time.Time, _ int) int  { return t.Year() }
func lastBucket(_ time.Time, nr int) int { return nr }

// weekBucket uses the ISO 8601 week (Monday first; week 1 holds the year's
// first Thursday) and the ISO year, as restic does with time.ISOWeek: Monday
// 2024-12-30 is in week 2025-01, Sunday 2021-01-03 in week 2020-53.
func weekBucket(t time.Time, _ int) int {
	year, week := t.ISOWeek()
	return year*100 + week
}

// noBucket is a value no bucket function returns (a time.Time year is above
// -3e11, so hour buckets stay above -3e17, and nr >= 0): the first snapshot
// always opens a new bucket. restic starts from -1, which only a snapshot
// dated in year -1 could collide with.
const noBucket = math.MinInt

// fixedZone returns t in a fixed zone with t's own UTC offset, so that
// calendar arithmetic never consults a zone database: the result of Apply
// must not depend on the machine's TZ or tzdata.
func fixedZone(t time.Time) time.Time {
	name, off := t.Zone()
	return t.In(time.FixedZone(name, off))
}

// Apply decides which of snaps (one group; see ApplyGrouped) p keeps, and
// returns one Decision per snapshot, newest first. Snapshots at the same
// instant keep their order in snaps, as in restic (a stable sort).
//
// Apply does not modify snaps; the Decisions share its Paths and Tags
// slices. It reads no clock (unless p.Now is set, it is not even consulted)
// and no time zone database. If p fails Validate, or is empty, every
// snapshot is kept, with the reason saying why: a bad policy never removes
// anything. Callers should still call Validate first and report its error.
func Apply(snaps []Snapshot, p Policy) []Decision {
	list := slices.Clone(snaps)
	// Newest first, as restic's Snapshots.Less with sort.Stable.
	sort.SliceStable(list, func(i, j int) bool { return list[i].Time.After(list[j].Time) })

	out := make([]Decision, len(list))
	for i := range list {
		out[i].Snapshot = list[i]
	}
	if len(list) == 0 {
		return out
	}
	if err := p.Validate(); err != nil {
		return keepAll(out, "invalid policy: "+err.Error())
	}
	if p.Empty() {
		return keepAll(out, "policy is empty")
	}

	// The counting rules, in restic's order (and so its order of reasons).
	type counter struct {
		count  int // left to keep; Unlimited never runs out
		bucket bucketFunc
		last   int // bucket value of the last snapshot kept by this rule
		reason string
	}
	counters := [6]counter{
		{p.Last, lastBucket, noBucket, "last snapshot"},
		{p.Hourly, hourBucket, noBucket, "hourly snapshot"},
		{p.Daily, dayBucket, noBucket, "daily snapshot"},
		{p.Weekly, weekBucket, noBucket, "weekly snapshot"},
		{p.Monthly, monthBucket, noBucket, "monthly snapshot"},
		{p.Yearly, yearBucket, noBucket, "yearly snapshot"},
	}
	// The keep-within-<unit> rules: one per bucket, no count, but only for
	// snapshots newer than their cutoff.
	type within struct {
		d      Duration
		bucket bucketFunc
		last   int
		reason string
	}
	withins := [5]within{
		{p.WithinHourly, hourBucket, noBucket, "hourly within"},
		{p.WithinDaily, dayBucket, noBucket, "daily within"},
		{p.WithinWeekly, weekBucket, noBucket, "weekly within"},
		{p.WithinMonthly, monthBucket, noBucket, "monthly within"},
		{p.WithinYearly, yearBucket, noBucket, "yearly within"},
	}

	latest := newest(list, p.Now)
	oldest := len(list) - 1
	for nr := range list {
		cur := list[nr]
		t := fixedZone(cur.Time)
		var reasons []string

		// Tags are not counted (restic: "Tags are handled specially").
		for _, l := range p.Tags {
			if hasTags(cur.Tags, l) {
				reasons = append(reasons, "has tags "+tagListString(l))
			}
		}

		if !p.Within.Zero() && t.After(p.Within.Before(latest)) {
			reasons = append(reasons, "within "+p.Within.String())
		}

		for i := range counters {
			c := &counters[i]
			if c.count <= 0 && c.count != Unlimited {
				continue
			}
			val := c.bucket(t, nr)
			// restic: "also keep the oldest snapshot if the bucket has some
			// counts left. This maximizes the history length kept while
			// some counts are left."
			if val == c.last && nr != oldest {
				continue
			}
			reason := c.reason
			if val == c.last {
				reason = "oldest " + reason
			}
			c.last = val
			if c.count > 0 {
				c.count--
			}
			reasons = append(reasons, reason)
		}

		for i := range withins {
			w := &withins[i]
			if w.d.Zero() || !t.After(w.d.Before(latest)) {
				continue
			}
			val := w.bucket(t, nr)
			if val == w.last && nr != oldest {
				continue
			}
			reason := w.reason
			if val == w.last {
				reason = "oldest " + reason
			}
			w.last = val
			reasons = append(reasons, reason+" "+w.d.String())
		}

		out[nr].Keep = len(reasons) > 0
		out[nr].Reasons = reasons
	}
	return out
}

func keepAll(out []Decision, reason string) []Decision {
	for i := range out {
		out[i].Keep = true
		out[i].Reasons = []string{reason}
	}
	return out
}

// newest returns the reference time for the Within rules, in its own fixed
// offset: the newest snapshot's time, or, when now is set, the newest not
// after now (restic's findLatestTimestamp; the zero time if there is none,
// which makes every snapshot "within").
func newest(list []Snapshot, now time.Time) time.Time {
	if now.IsZero() {
		return fixedZone(list[0].Time) // list is sorted newest first
	}
	var latest time.Time
	for _, sn := range list {
		if sn.Time.After(latest) && sn.Time.Before(now) {
			latest = sn.Time
		}
	}
	return fixedZone(latest)
}

// hasTags reports whether a snapshot with tags have carries every tag of l,
// exactly as restic's Snapshot.HasTags: the empty tag "" matches a snapshot
// without tags, and an empty l matches every snapshot.
func hasTags(have, l []string) bool {
	for _, tag := range l {
		if tag == "" && len(have) == 0 {
			return true
		}
		if !slices.Contains(have, tag) {
			return false
		}
	}
	return true
}

// tagListString formats l as restic's TagList.String: "[a, b]".
func tagListString(l []string) string {
	return "[" + strings.Join(l, ", ") + "]"
}

// Group is one (host, paths) group with the decisions for its snapshots.
type Group struct {
	Host      string
	Paths     []string // sorted
	Decisions []Decision
}

// ApplyGrouped splits snaps into groups of equal host and equal sorted
// paths, as restic's default --group-by host,paths does, and applies p to
// each group separately. Groups are ordered by host, then by paths
// (compared element by element); each Group.Paths is a sorted copy. The
// contract of Apply holds for each group.
func ApplyGrouped(snaps []Snapshot, p Policy) []Group {
	type key struct{ host, paths string }
	index := map[key]int{}
	var groups []Group
	var members [][]Snapshot
	for _, sn := range snaps {
		paths := slices.Clone(sn.Paths)
		sort.Strings(paths)
		// Quoting makes the key unambiguous for any path bytes.
		var kb strings.Builder
		for _, p := range paths {
			kb.WriteString(strconv.Quote(p))
		}
		k := key{sn.Host, kb.String()}
		i, ok := index[k]
		if !ok {
			i = len(groups)
			index[k] = i
			groups = append(groups, Group{Host: sn.Host, Paths: paths})
			members = append(members, nil)
		}
		members[i] = append(members[i], sn)
	}
	for i := range groups {
		groups[i].Decisions = Apply(members[i], p)
	}
	sort.SliceStable(groups, func(i, j int) bool {
		if groups[i].Host != groups[j].Host {
			return groups[i].Host < groups[j].Host
		}
		return slices.Compare(groups[i].Paths, groups[j].Paths) < 0
	})
	return groups
}
