package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newRewriteCmd(g *globals) *cobra.Command {
	var excludes []string
	var forget, dryRun bool
	c := &cobra.Command{
		Use:   "rewrite [SNAPSHOT...] --exclude PATTERN [--forget]",
		Short: "Write snapshots again without the entries that match --exclude (for erasure requests)",
		Long: `Write new snapshots without the entries (and what is below them) that an
--exclude PATTERN matches: a glob on names, or, when it starts with "/", on full
paths from the snapshot root. All snapshots, or those given. A new snapshot keeps
the time, host, paths and tags of the old one and records its ID ("original");
snapshots in which nothing matches stay as they are. With --forget the old
snapshots are forgotten; a prune then removes the data only the excluded
entries used from the drives. Audited with counts only. With --remote it
needs an admin key.`,
		RunE: func(cmd *cobra.Command, a []string) error {
			if len(excludes) == 0 {
				return usagef("rewrite needs at least one --exclude PATTERN")
			}
			o := engine.RewriteOptions{Forget: forget, DryRun: dryRun}
			for _, x := range excludes {
				p, err := engine.ParsePattern(x, false)
				if err != nil {
					return err
				}
				o.Exclude = append(o.Exclude, p)
			}
			s, err := g.session(cmd, false)
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := s.Rewrite(cmd.Context(), a, o)
			if rep == nil {
				return err
			}
			if g.json {
				if perr := g.printJSON(rep); err == nil {
					err = perr
				}
				return err
			}
			for _, it := range rep.Snapshots {
				switch {
				case it.Removed == 0:
					fmt.Fprintf(g.stdout, "%s  unchanged\n", it.ID[:8])
				case it.New == "":
					fmt.Fprintf(g.stdout, "%s  %d entries to remove\n", it.ID[:8], it.Removed)
				default:
					line := fmt.Sprintf("%s  %d entries removed: new snapshot %s", it.ID[:8], it.Removed, it.New[:8])
					if it.Forgotten {
						line += ", old one forgotten"
					}
					fmt.Fprintln(g.stdout, line)
				}
			}
			verb := "rewritten"
			if rep.DryRun {
				verb = "to rewrite (dry run)"
			}
			fmt.Fprintf(g.stdout, "%d snapshots %s, %d unchanged, %d forgotten\n", rep.Rewritten, verb, rep.Unchanged, rep.Forgotten)
			if rep.Forgotten > 0 {
				fmt.Fprintln(g.stdout, "run coffer prune to remove their data from the drives")
			}
			return err
		},
	}
	c.Flags().StringArrayVar(&excludes, "exclude", nil, "leave out entries matching this pattern (repeatable)")
	c.Flags().BoolVar(&forget, "forget", false, "forget the rewritten snapshots")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "count what would be left out; write nothing")
	return c
}
