package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The oracle test makes snapshots at chosen times with restic 0.18.1 itself,
// asks `restic forget --dry-run --json` what each policy keeps, and compares
// that, snapshot by snapshot and reason by reason, with ApplyGrouped.

const resticWant = "restic 0.18."

const skipNoRestic = "restic 0.18.1 not installed: go install github.com/restic/restic/cmd/restic@v0.18.1"

func findRestic(t *testing.T) string {
	t.Helper()
	candidates := []string{}
	if p, err := exec.LookPath("restic"); err == nil {
		candidates = append(candidates, p)
	}
	for _, dir := range filepath.SplitList(build.Default.GOPATH) {
		candidates = append(candidates, filepath.Join(dir, "bin", "restic"))
	}
	for _, c := range candidates {
		out, err := exec.Command(c, "version").Output()
		if err == nil && strings.HasPrefix(string(out), resticWant) {
			return c
		}
		if err == nil {
			t.Logf("%s is %q, not %s*", c, strings.TrimSpace(string(out)), resticWant)
		}
	}
	t.Skip(skipNoRestic)
	return ""
}

// oracleSnap is one snapshot to make: a local wall-clock time as given to
// `restic backup --time`, the TZ restic runs in, a host and tags.
type oracleSnap struct {
	local string // "2006-01-02 15:04:05"
	tz    string
	host  string
	tags  string // restic --tag value, "" for none
}

const (
	berlin  = "Europe/Berlin"
	newYork = "America/New_York"
	tokyo   = "Asia/Tokyo"
)

func oracleSnaps() []oracleSnap {
	a := func(local string, more ...string) oracleSnap {
		s := oracleSnap{local: local, tz: berlin, host: "alpha"}
		if len(more) > 0 && more[0] != "" {
			s.tz = more[0]
		}
		if len(more) > 1 {
			s.tags = more[1]
		}
		return s
	}
	list := []oracleSnap{
		a("2023-01-01 00:30:00"),          // Sunday, ISO 2022-W52
		a("2023-01-02 09:00:00"),          // Monday, 2023-W01
		a("2023-02-28 23:59:00"),          // month end
		a("2023-03-01 00:01:00"),          //
		a("2023-03-26 01:30:00"),          // DST starts in Berlin: +01:00
		a("2023-03-26 04:00:00"),          // +02:00 on the same day
		a("2023-06-16 05:00:00"),          // 03:00Z, the 16th
		a("2023-06-15 23:50:00", newYork), // 03:50Z: newer, the 15th
		a("2023-07-10 12:00:00", "", "important"),
		a("2023-07-10 12:30:00"),        // same-day ties
		a("2023-07-10 18:00:00"),        //
		a("2023-09-30 22:30:00"),        //
		a("2023-10-01 00:15:00"),        //
		a("2023-10-29 01:00:00"),        // DST ends: +02:00
		a("2023-10-29 04:00:00"),        // +01:00
		a("2023-12-31 22:00:00"),        // 21:00Z, 2023
		a("2024-01-01 07:00:00", tokyo), // 22:00Z, already 2024 in Tokyo
		a("2024-01-01 00:30:00"),        // 23:30Z
		a("2024-01-07 10:00:00"),        // Sunday, 2024-W01
		a("2024-01-08 10:00:00"),        // Monday, 2024-W02
		a("2024-02-29 12:00:00", "", "monthly,extra"),
		a("2024-03-31 03:30:00"), // DST day
		a("2024-04-01 10:00:00"), //
		a("2024-05-15 08:00:00"), // three in one day
		a("2024-05-15 12:00:00", "", "important"),
		a("2024-05-15 20:00:00"),          //
		a("2024-06-30 23:30:00", newYork), // 03:30Z July 1st, June in New York
		a("2024-07-01 04:00:00"),          // 02:00Z, July
		a("2024-09-15 10:00:00", tokyo),
		a("2024-11-20 10:00:00"),
		a("2024-11-21 10:00:00"),
		a("2024-11-22 10:00:00"),
		a("2024-11-25 10:00:00"),
		a("2024-11-25 22:00:00"), // tie
		a("2024-11-26 10:00:00"),
		a("2024-11-27 10:00:00"),
		a("2024-11-29 10:00:00"),
		a("2024-12-01 10:00:00"),          // Sunday, 2024-W48
		a("2024-12-30 08:00:00"),          // Monday, ISO 2025-W01
		a("2024-12-31 20:00:00", newYork), // newest: 2025-01-01T01:00Z
	}
	b := func(local, tags string) oracleSnap {
		return oracleSnap{local: local, tz: berlin, host: "beta", tags: tags}
	}
	return append(list,
		b("2023-05-05 10:00:00", ""),
		b("2024-02-02 10:00:00", "important"),
		b("2024-02-03 10:00:00", ""),
		b("2024-12-01 11:00:00", ""),
	)
}

type oraclePolicy struct {
	flags []string
	p     Policy
}

func oraclePolicies(t *testing.T) []oraclePolicy {
	d := func(s string) Duration { return mustDur(t, s) }
	return []oraclePolicy{
		{[]string{"--keep-last", "5"}, Policy{Last: 5}},
		{[]string{"--keep-hourly", "4"}, Policy{Hourly: 4}},
		{[]string{"--keep-daily", "7"}, Policy{Daily: 7}},
		{[]string{"--keep-daily", "60"}, Policy{Daily: 60}},
		{[]string{"--keep-weekly", "10"}, Policy{Weekly: 10}},
		{[]string{"--keep-monthly", "6"}, Policy{Monthly: 6}},
		{[]string{"--keep-yearly", "5"}, Policy{Yearly: 5}},
		{[]string{"--keep-daily", "unlimited"}, Policy{Daily: Unlimited}},
		{[]string{"--keep-within", "1y5m7d2h"}, Policy{Within: d("1y5m7d2h")}},
		{[]string{"--keep-within", "2m", "--keep-weekly", "4"}, Policy{Within: d("2m"), Weekly: 4}},
		{[]string{"--keep-daily", "7", "--keep-weekly", "5", "--keep-monthly", "12", "--keep-yearly", "75"},
			Policy{Daily: 7, Weekly: 5, Monthly: 12, Yearly: 75}},
		{[]string{"--keep-tag", "important", "--keep-last", "1"},
			Policy{Tags: [][]string{ParseTagList("important")}, Last: 1}},
		{[]string{"--keep-tag", "monthly,extra", "--keep-tag", "", "--keep-monthly", "3"},
			Policy{Tags: [][]string{ParseTagList("monthly,extra"), ParseTagList("")}, Monthly: 3}},
		{[]string{"--keep-within-daily", "10d", "--keep-within-weekly", "2m", "--keep-within-monthly", "1y", "--keep-within-yearly", "5y"},
			Policy{WithinDaily: d("10d"), WithinWeekly: d("2m"), WithinMonthly: d("1y"), WithinYearly: d("5y")}},
		{[]string{"--keep-within", "36h", "--keep-within-hourly", "3d", "--keep-hourly", "2"},
			Policy{Within: d("36h"), WithinHourly: d("3d"), Hourly: 2}},
		{[]string{"--keep-within-daily", "3y", "--keep-weekly", "unlimited"},
			Policy{WithinDaily: d("3y"), Weekly: Unlimited}},
	}
}

type resticSnap struct {
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Hostname string    `json:"hostname"`
	Paths    []string  `json:"paths"`
	Tags     []string  `json:"tags"`
}

type resticForgetGroup struct {
	Host    string       `json:"host"`
	Paths   []string     `json:"paths"`
	Keep    []resticSnap `json:"keep"`
	Remove  []resticSnap `json:"remove"`
	Reasons []struct {
		Snapshot resticSnap `json:"snapshot"`
		Matches  []string   `json:"matches"`
	} `json:"reasons"`
}

func TestOracleRestic(t *testing.T) {
	if testing.Short() {
		t.Skip("oracle test against restic skipped in -short mode")
	}
	bin := findRestic(t)
	start := time.Now()

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "file"), []byte("coffer oracle\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RESTIC_") && !strings.HasPrefix(kv, "TZ=") {
			env = append(env, kv)
		}
	}
	env = append(env, "RESTIC_REPOSITORY="+filepath.Join(dir, "repo"), "RESTIC_PASSWORD=oracle")
	restic := func(tz string, args ...string) ([]byte, error) {
		cmd := exec.Command(bin, append([]string{"--no-cache"}, args...)...)
		cmd.Env = append(slices.Clone(env), "TZ="+tz)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return out, fmt.Errorf("restic %s (TZ=%s): %w: %s", strings.Join(args, " "), tz, err, stderr.String())
		}
		return out, nil
	}
	if _, err := restic("UTC", "init", "--quiet"); err != nil {
		t.Fatal(err)
	}

	// Make the snapshots, a few at a time: backup takes a shared lock, and
	// restic is mostly waiting on its key derivation.
	spec := oracleSnaps()
	byInstant := map[int64]int{}
	want := make([]time.Time, len(spec))
	for i, s := range spec {
		loc, err := time.LoadLocation(s.tz)
		if err != nil {
			t.Fatal(err)
		}
		// restic parses --time with time.ParseInLocation in time.Local.
		at, err := time.ParseInLocation(time.DateTime, s.local, loc)
		if err != nil {
			t.Fatal(err)
		}
		if j, dup := byInstant[at.UnixNano()]; dup {
			t.Fatalf("spec %d and %d are the same instant: restic breaks such ties by its listing order, so the oracle avoids them", i, j)
		}
		byInstant[at.UnixNano()] = i
		want[i] = at
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	errs := make([]error, len(spec))
	for i, s := range spec {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			args := []string{"backup", "--quiet", "--time", s.local, "--host", s.host}
			if s.tags != "" {
				args = append(args, "--tag", s.tags)
			}
			_, errs[i] = restic(s.tz, append(args, data)...)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// Read back what restic recorded and check it is the time we meant,
	// offset included; then build Coffer's view of the same snapshots.
	out, err := restic("UTC", "snapshots", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var recorded []resticSnap
	if err := json.Unmarshal(out, &recorded); err != nil {
		t.Fatalf("decode restic snapshots: %v", err)
	}
	if len(recorded) != len(spec) {
		t.Fatalf("restic has %d snapshots, made %d", len(recorded), len(spec))
	}
	var ours []Snapshot
	for _, r := range recorded {
		i, ok := byInstant[r.Time.UnixNano()]
		if !ok {
			t.Fatalf("restic snapshot %s at %v matches no spec", r.ID, r.Time)
		}
		if got, w := r.Time.Format(time.RFC3339), want[i].Format(time.RFC3339); got != w {
			t.Fatalf("restic recorded %s for spec %q in %s, want %s", got, spec[i].local, spec[i].tz, w)
		}
		var tags []string
		if spec[i].tags != "" {
			tags = ParseTagList(spec[i].tags)
		}
		if !reflect.DeepEqual(tags, r.Tags) {
			t.Fatalf("restic recorded tags %q, want %q", r.Tags, tags)
		}
		ours = append(ours, Snapshot{ID: r.ID, Time: want[i], Host: spec[i].host, Paths: r.Paths, Tags: tags})
	}
	// Feed Apply in an order unrelated to restic's.
	sort.Slice(ours, func(i, j int) bool { return ours[i].ID < ours[j].ID })

	for _, op := range oraclePolicies(t) {
		name := strings.Join(op.flags, " ")
		// forget runs in UTC so that restic, too, does its --keep-within
		// arithmetic in each snapshot's fixed offset (see docs/retention.md).
		out, err := restic("UTC", append([]string{"forget", "--dry-run", "--json"}, op.flags...)...)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var groups []resticForgetGroup
		if err := json.Unmarshal(out, &groups); err != nil {
			t.Errorf("%s: decode restic output: %v\n%s", name, err, out)
			continue
		}
		got := verdicts(ApplyGrouped(ours, op.p))
		exp := resticVerdicts(groups)
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("policy %s (%v): Coffer and restic differ:\n%s", name, op.p, diffVerdicts(got, exp, ours))
		} else {
			t.Logf("%-100s agrees: keeps %d of %d", name, countKept(got), len(ours))
		}
	}
	t.Logf("oracle test took %v", time.Since(start).Round(time.Millisecond))
}

// verdict per snapshot ID: "keep: reason; reason" or "remove".
func verdicts(groups []Group) map[string]string {
	m := map[string]string{}
	for _, g := range groups {
		for _, d := range g.Decisions {
			if d.Keep {
				m[d.Snapshot.ID] = "keep: " + strings.Join(d.Reasons, "; ")
			} else {
				m[d.Snapshot.ID] = "remove"
			}
		}
	}
	return m
}

func resticVerdicts(groups []resticForgetGroup) map[string]string {
	m := map[string]string{}
	for _, g := range groups {
		for _, r := range g.Reasons {
			m[r.Snapshot.ID] = "keep: " + strings.Join(r.Matches, "; ")
		}
		for _, r := range g.Remove {
			m[r.ID] = "remove"
		}
	}
	return m
}

func countKept(m map[string]string) int {
	n := 0
	for _, v := range m {
		if v != "remove" {
			n++
		}
	}
	return n
}

func diffVerdicts(got, exp map[string]string, snaps []Snapshot) string {
	sorted := slices.Clone(snaps)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Time.After(sorted[j].Time) })
	var b strings.Builder
	for _, s := range sorted {
		mark := "  "
		if got[s.ID] != exp[s.ID] {
			mark = "!!"
		}
		fmt.Fprintf(&b, "%s %s %-5s %-25s coffer %-45q restic %q\n", mark, s.ID[:8], s.Host,
			s.Time.Format(time.RFC3339), got[s.ID], exp[s.ID])
	}
	return b.String()
}
