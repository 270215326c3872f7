package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newScrubCmd(g *globals) *cobra.Command {
	var repair bool
	c := &cobra.Command{
		Use:   "scrub [--repair]",
		Short: "Verify every shard and replicated record in full and find what is missing, corrupt, misplaced or orphaned (--repair heals it)",
		Long: `Read every shard of every pack in full and verify its header, its block
checksums and its hash against the index and the tenant's sealed pack header (so
a shard rewritten together with fresh checksums is caught). List every drive for
shards on a drive the index does not record (misplaced), shards of packs the
index does not know or of containers of no live tenant (orphaned), and
temporary files of interrupted writes older than an hour. Read every copy of
every replicated record (config, tenants, snapshots, client keys, audit log):
a record needs its newest valid version on each drive of its placement.

With --repair: rebuild missing and corrupt shards from the others onto healthy
drives keeping racks spread, move shards off drives marked failed, correct the
index, rewrite missing and stale record copies where they belong (from the
drives or the index), and remove orphans, misplaced copies, record copies off
their placement and stale temporary files. A second scrub after a repair is
clean unless a pack lost more than its parity shards or a drive refuses writes
(suspect: fix it, or run coffer drive fail and replace it).

Problems are listed by pack, shard, drive and tenant ID only. Built to run
nightly: progress on a terminal, bounded memory, --json for monitoring.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runScrub(cmd, g, repair)
		},
	}
	c.Flags().BoolVar(&repair, "repair", false, "rebuild, re-home and remove what the scrub finds")
	return c
}

func runScrub(cmd *cobra.Command, g *globals, repair bool) error {
	e, err := g.open(cmd)
	if err != nil {
		return indexDamage(err)
	}
	defer e.Close()
	pl := startProgress(g.stderr, "scrubbed")
	rep, err := e.Scrub(cmd.Context(), engine.ScrubOptions{Repair: repair, Progress: pl.p})
	pl.done()
	err = indexDamage(err)
	if rep == nil {
		return err // the scrub could not run: exit 1 (130 when interrupted)
	}
	if err != nil && !repair && errors.Is(err, engine.ErrCheckFailed) {
		err = fmt.Errorf("%w; coffer scrub --repair heals what can be healed", err)
	}
	if g.json {
		if jerr := g.printJSON(rep); jerr != nil {
			return jerr
		}
		return err
	}
	printScrubReport(g.stdout, rep)
	return err
}

// indexDamage makes a damaged index a finding of check and scrub (exit 14):
// the message names coffer index rebuild.
func indexDamage(err error) error {
	if engine.IndexDamaged(err) && !errors.Is(err, engine.ErrCheckFailed) {
		return fmt.Errorf("%w: %w", engine.ErrCheckFailed, err)
	}
	return err
}

// printScrubReport writes the summary and one line per problem. Problems
// carry IDs only (pack, shard, drive, tenant), never names or content.
func printScrubReport(w io.Writer, rep *engine.ScrubReport) {
	el := time.Duration(rep.Seconds * float64(time.Second)).Round(time.Millisecond)
	fmt.Fprintf(w, "scrubbed %s, %s, %s, %s in %s: %s, %s, %s, %s, %s, %s\n",
		plural(rep.Packs, "pack", "packs"), plural(rep.Shards, "shard", "shards"), formatBytes(rep.Bytes),
		plural(rep.RecordsChecked, "record", "records"), el,
		scrubCount(rep.Missing, rep.Repair, "missing", "missing"),
		scrubCount(rep.Corrupt, rep.Repair, "corrupt", "corrupt"),
		scrubCount(rep.Misplaced, rep.Repair, "misplaced", "misplaced"),
		scrubCount(rep.Orphaned, rep.Repair, "orphaned", "orphaned"),
		scrubCount(rep.StaleTemp, rep.Repair, "stale temporary file", "stale temporary files"),
		scrubCount(rep.Records, rep.Repair, "record not whole", "records not whole"))
	below := plural(rep.BelowFull, "pack", "packs") + " below full redundancy"
	if rep.Repair && rep.BelowFull > 0 {
		below += fmt.Sprintf(" (%d after repair)", rep.StillBelowFull)
	}
	if rep.Unreadable > 0 {
		below += fmt.Sprintf(", %d unreadable (fewer than k good shards)", rep.Unreadable)
	}
	if rep.Errors > 0 {
		below += fmt.Sprintf(", %d could not be checked", rep.Errors)
	}
	if rep.SuspectDrives > 0 {
		below += ", " + plural(rep.SuspectDrives, "drive refuses", "drives refuse") + " writes"
	}
	fmt.Fprintln(w, below)
	for _, p := range rep.Problems {
		fmt.Fprintln(w, scrubLine(p, rep.Repair))
	}
	if rep.ProblemsOmitted > 0 {
		fmt.Fprintf(w, "… and %d more problems not listed\n", rep.ProblemsOmitted)
	}
	switch n := rep.Unrepaired(); {
	case n == 0 && len(rep.Problems) == 0:
		fmt.Fprintln(w, "no damage found")
	case n == 0:
		fmt.Fprintln(w, "everything found was repaired")
	}
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func scrubCount(c engine.ScrubCount, repair bool, one, many string) string {
	s := plural(c.Found, one, many)
	if repair && c.Found > 0 {
		if c.Repaired == c.Found {
			s += " (repaired)"
		} else {
			s += fmt.Sprintf(" (%d repaired)", c.Repaired)
		}
	}
	return s
}

// scrubLine renders one problem: "corrupt: tenant T pack P shard 3 on drive
// D: detail [repaired]", or "record: r/tenants/T: detail [repaired]".
func scrubLine(p engine.ScrubProblem, repair bool) string {
	var b strings.Builder
	b.WriteString(p.Kind + ":")
	if p.Tenant != "" {
		b.WriteString(" tenant " + p.Tenant)
	}
	if p.Pack != "" {
		b.WriteString(" pack " + p.Pack)
	}
	if p.Shard != nil {
		fmt.Fprintf(&b, " shard %d", *p.Shard)
	}
	if p.Record != "" {
		b.WriteString(" " + p.Record)
	}
	if p.Drive != "" {
		b.WriteString(" on drive " + p.Drive)
	}
	b.WriteString(": " + p.Detail)
	switch {
	case p.Repaired && p.RepairError != "":
		b.WriteString(" [repaired; " + p.RepairError + "]")
	case p.Repaired:
		b.WriteString(" [repaired]")
	case p.RepairError != "":
		b.WriteString(" [" + p.RepairError + "]")
	case repair:
		b.WriteString(" [not repaired]")
	}
	return strings.Join(strings.Fields(b.String()), " ")
}
