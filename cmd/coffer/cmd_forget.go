package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
	"coffer/engine/policy"
)

// countValue is a --keep-* count: a non-negative number or "unlimited".
type countValue struct{ n *int }

func (c countValue) String() string {
	if c.n == nil || *c.n == 0 {
		return "0"
	}
	if *c.n == policy.Unlimited {
		return "unlimited"
	}
	return strconv.Itoa(*c.n)
}

func (c countValue) Set(s string) error {
	if strings.EqualFold(strings.TrimSpace(s), "unlimited") {
		*c.n = policy.Unlimited
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a count (a number of 0 or more, or unlimited)", s)
	}
	*c.n = n
	return nil
}

func (c countValue) Type() string { return "N" }

// forgetFlags are the flags of coffer forget.
type forgetFlags struct {
	p         policy.Policy
	within    string
	tags      []string
	dryRun    bool
	prune     bool
	maxUnused string
}

func newForgetCmd(g *globals) *cobra.Command {
	var f forgetFlags
	c := &cobra.Command{
		Use:   "forget [SNAPSHOT...] [--keep-last N] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--keep-yearly N] [--keep-within DURATION] [--keep-tag T]... [--dry-run] [--prune]",
		Short: "Remove snapshots by ID or by a retention policy (--prune also frees their data)",
		Long: `Remove the named snapshots (ID, unique prefix of 8+ hex digits, or latest), or,
without names, every snapshot the retention policy does not keep. The policy is
applied separately to each group of snapshots with the same host and paths, with
restic's rules: --keep-daily N keeps the newest snapshot of each of the N newest
days that have snapshots; the oldest snapshot is kept when a count cannot be
filled; --keep-within DURATION (like 1y5m7d2h) counts back from the newest
snapshot, not from now; days and weeks use the time zone offset recorded with
each snapshot. Counts take a number or "unlimited". The clock is never used.

Forgetting writes a tombstone to the drives before the index forgets the
snapshot, so an index rebuild or a drive that was offline cannot bring it back.
The data stays until prune: --prune runs it right after (with --max-unused).
--dry-run shows what would be removed and why each kept snapshot is kept.
--json prints the report (with --prune: {"forget": ..., "prune": ...}).`,
		RunE: func(cmd *cobra.Command, a []string) error {
			return runForget(cmd, g, a, &f)
		},
	}
	fl := c.Flags()
	fl.Var(countValue{&f.p.Last}, "keep-last", "keep the N newest snapshots")
	fl.Var(countValue{&f.p.Hourly}, "keep-hourly", "keep the newest snapshot of each of the N newest hours with snapshots")
	fl.Var(countValue{&f.p.Daily}, "keep-daily", "keep the newest snapshot of each of the N newest days with snapshots")
	fl.Var(countValue{&f.p.Weekly}, "keep-weekly", "keep the newest snapshot of each of the N newest ISO weeks with snapshots")
	fl.Var(countValue{&f.p.Monthly}, "keep-monthly", "keep the newest snapshot of each of the N newest months with snapshots")
	fl.Var(countValue{&f.p.Yearly}, "keep-yearly", "keep the newest snapshot of each of the N newest years with snapshots")
	fl.StringVar(&f.within, "keep-within", "", "keep every snapshot within DURATION (e.g. 1y5m7d2h) of the group's newest snapshot")
	fl.StringArrayVar(&f.tags, "keep-tag", nil, "keep snapshots that have all of these comma-separated tags (repeatable)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "show what would be removed and why the rest is kept; change nothing")
	fl.BoolVar(&f.prune, "prune", false, "run prune after forgetting")
	fl.StringVar(&f.maxUnused, "max-unused", "10", "with --prune: repack packs with more than this percentage unused")
	return c
}

func runForget(cmd *cobra.Command, g *globals, ids []string, f *forgetFlags) error {
	p := f.p
	if f.within != "" {
		d, err := policy.ParseDuration(f.within)
		if err != nil {
			return usagef("--keep-within: %v", err)
		}
		p.Within = d
	}
	for _, t := range f.tags {
		p.Tags = append(p.Tags, policy.ParseTagList(t))
	}
	if len(ids) == 0 && p.Empty() {
		return usagef("give snapshots to forget, or a policy (--keep-last, --keep-daily, ...)")
	}
	if len(ids) > 0 && !p.Empty() {
		return usagef("give snapshots to forget or a policy, not both")
	}
	if err := p.Validate(); err != nil {
		return usageError{err}
	}
	maxUnused, err := parseMaxUnused(f.maxUnused)
	if err != nil {
		return err
	}
	s, err := g.session(cmd, false)
	if err != nil {
		return err
	}
	defer s.Close()
	rep, err := s.Forget(cmd.Context(), ids, engine.ForgetOptions{Policy: p, DryRun: f.dryRun})
	if err != nil && rep == nil {
		return err
	}
	var prep *engine.PruneReport
	if err == nil && f.prune && !f.dryRun {
		prep, err = s.Prune(cmd.Context(), engine.PruneOptions{MaxUnusedPercent: maxUnused})
	}
	return printForgetResult(g, rep, prep, f.prune, s.Tenant(), err)
}

// printForgetResult prints a forget report and, with --prune, the prune that
// followed (tenant names it), as text or JSON, and returns err.
func printForgetResult(g *globals, rep *engine.ForgetReport, prep *engine.PruneReport, prune bool, tenant string, err error) error {
	if g.json {
		var v any = rep
		if prune {
			v = struct {
				Forget *engine.ForgetReport `json:"forget"`
				Prune  *engine.PruneReport  `json:"prune"`
			}{rep, prep}
		}
		if jerr := g.printJSON(v); jerr != nil {
			return jerr
		}
		return err
	}
	printForgetReport(g.stdout, rep)
	if prep != nil {
		printPruneSummary(g.stdout, tenant, prep, err)
	}
	return err
}

// printForgetReport prints restic-style tables: per group the kept
// snapshots with their reasons and the removed ones, then a summary.
func printForgetReport(w io.Writer, rep *engine.ForgetReport) {
	if rep.Policy != "" {
		fmt.Fprintf(w, "Applying policy: %s\n", rep.Policy)
		for _, gr := range rep.Groups {
			fmt.Fprintf(w, "\nsnapshots for host %s, paths %s:\n", gr.Host, strings.Join(gr.Paths, " "))
			fmt.Fprintf(w, "\nkeep %s:\n", plural(int64(len(gr.Keep)), "snapshot", "snapshots"))
			printForgetItems(w, gr.Keep, true)
			if len(gr.Remove) > 0 {
				fmt.Fprintf(w, "\nremove %s:\n", plural(int64(len(gr.Remove)), "snapshot", "snapshots"))
				printForgetItems(w, gr.Remove, false)
			}
		}
		fmt.Fprintln(w)
	} else if len(rep.Removed) > 0 {
		printForgetItems(w, rep.Removed, false)
	}
	verb := "forgot"
	if rep.DryRun {
		verb = "would forget"
	}
	fmt.Fprintf(w, "%s %s, %d kept\n", verb, plural(int64(len(rep.Removed)), "snapshot", "snapshots"), rep.Kept)
	if !rep.DryRun && len(rep.Removed) > 0 {
		fmt.Fprintln(w, "their data stays on the drives until coffer prune")
	}
}

func printForgetItems(w io.Writer, items []engine.ForgetItem, reasons bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if reasons {
		fmt.Fprintln(tw, "ID\tTIME\tHOST\tTAGS\tREASONS")
	} else {
		fmt.Fprintln(tw, "ID\tTIME\tHOST\tTAGS")
	}
	for _, it := range items {
		line := fmt.Sprintf("%s\t%s\t%s\t%s", it.ID[:8], it.Time.Format("2006-01-02 15:04:05 -07:00"), it.Host, strings.Join(it.Tags, ","))
		if reasons {
			line += "\t" + strings.Join(it.Reasons, ", ")
		}
		fmt.Fprintln(tw, line)
	}
	_ = tw.Flush()
}

// parseMaxUnused reads --max-unused: a percentage from 0 to 100, with or
// without "%". 0 repacks every pack that holds any unused byte.
func parseMaxUnused(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 || v > 100 || math.IsNaN(v) {
		return 0, usagef("--max-unused %q is not a percentage from 0 to 100", s)
	}
	if v == 0 {
		// The engine reads 0 as "the default"; the smallest positive share
		// means "repack any pack with unused bytes".
		v = math.SmallestNonzeroFloat64
	}
	return v, nil
}

func newPruneCmd(g *globals) *cobra.Command {
	var maxUnused string
	var dryRun bool
	c := &cobra.Command{
		Use:   "prune [--max-unused PERCENT] [--dry-run]",
		Short: "Free the space of data no snapshot needs (one tenant with --tenant, else all tenants)",
		Long: `Find the blobs no remaining snapshot references, delete packs that hold only
such blobs, and repack packs whose unused share is over --max-unused (default
10%) into new packs. New packs are durable and indexed before old ones are
removed, so an interruption at any moment loses nothing a snapshot needs (run
prune again, or scrub --repair to remove leftover shards).

With --tenant (or COFFER_TENANT) one tenant is pruned; a locked tenant exits 13.
Without it the operator prunes every tenant, locked ones included, and removes
what a shred left of shredded tenants on drives that were away. A backup of the
tenant being pruned waits for the prune; other tenants are never blocked.
Prints the bytes freed and the time taken (--json: the full report).`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			mu, err := parseMaxUnused(maxUnused)
			if err != nil {
				return err
			}
			o := engine.PruneOptions{MaxUnusedPercent: mu, DryRun: dryRun}
			var rep *engine.PruneReport
			name := ""
			if g.tenant != "" || g.remote != "" {
				s, err := g.session(cmd, false)
				if err != nil {
					return err
				}
				defer s.Close()
				rep, err = s.Prune(cmd.Context(), o)
				if rep == nil {
					return err
				}
				return printPruneResult(g, s.Tenant(), rep, err)
			}
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			rep, err = e.Prune(cmd.Context(), o)
			if rep == nil {
				return err
			}
			return printPruneResult(g, name, rep, err)
		},
	}
	c.Flags().StringVar(&maxUnused, "max-unused", "10", "repack packs with more than this percentage of unused bytes (0: any)")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be deleted and repacked; change nothing")
	return c
}

func printPruneResult(g *globals, name string, rep *engine.PruneReport, err error) error {
	if g.json {
		if jerr := g.printJSON(rep); jerr != nil {
			return jerr
		}
		return err
	}
	printPruneSummary(g.stdout, name, rep, err)
	return err
}

// printPruneSummary prints what a prune did: the summary when it finished,
// and when it stopped with err (which the caller prints), only what it had
// done by then, if anything.
func printPruneSummary(w io.Writer, name string, r *engine.PruneReport, err error) {
	if err == nil {
		printPruneReport(w, name, r)
		return
	}
	if r.PacksDeleted+r.PacksRepacked+r.PacksWritten == 0 && r.ShreddedContainers == 0 {
		return
	}
	what := "all tenants"
	if name != "" {
		what = "tenant " + name
	}
	fmt.Fprintf(w, "prune of %s stopped after deleting %s and repacking %s into %s",
		what, plural(r.PacksDeleted, "pack", "packs"), plural(r.PacksRepacked, "pack", "packs"), plural(r.PacksWritten, "new pack", "new packs"))
	if r.ShreddedContainers > 0 {
		fmt.Fprintf(w, ", removing what was left of %s", plural(int64(r.ShreddedContainers), "shredded tenant", "shredded tenants"))
	}
	if r.BytesFreed >= 0 {
		fmt.Fprintf(w, "; %s freed on the drives\n", formatBytes(r.BytesFreed))
	} else {
		fmt.Fprintf(w, "; the new packs take %s more on the drives until a prune deletes the old ones\n", formatBytes(-r.BytesFreed))
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
}

// printPruneReport prints the summary of a prune: counts, bytes freed and
// time taken. name is the tenant's name, or "" for all tenants.
func printPruneReport(w io.Writer, name string, r *engine.PruneReport) {
	what := "all tenants (" + plural(int64(r.Tenants), "tenant", "tenants") + ")"
	if name != "" {
		what = "tenant " + name
	}
	prefix := "pruned"
	if r.DryRun {
		prefix = "would prune (dry run)"
	}
	el := time.Duration(r.Seconds * float64(time.Second)).Round(time.Millisecond)
	fmt.Fprintf(w, "%s %s: %s examined, %s deleted, %s repacked into %s, %s kept\n",
		prefix, what, plural(r.Packs, "pack", "packs"), plural(r.PacksDeleted, "pack", "packs"),
		plural(r.PacksRepacked, "pack", "packs"), plural(r.PacksWritten, "new pack", "new packs"), plural(r.PacksKept, "pack", "packs"))
	fmt.Fprintf(w, "  used: %s, %s; unused: %s, %s\n",
		plural(r.BlobsUsed, "blob", "blobs"), formatBytes(r.BytesUsed), plural(r.BlobsUnused, "blob", "blobs"), formatBytes(r.BytesUnused))
	if r.ShreddedContainers > 0 {
		fmt.Fprintf(w, "  removed what was left of %s\n", plural(int64(r.ShreddedContainers), "shredded tenant", "shredded tenants"))
	}
	freed := "freed"
	if r.DryRun {
		freed = "would free"
	}
	fmt.Fprintf(w, "  %s %s on the drives (packs: %s before, %s after) in %s\n",
		freed, formatBytes(r.BytesFreed), formatBytes(r.PhysicalBefore), formatBytes(r.PhysicalAfter), el)
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
}
