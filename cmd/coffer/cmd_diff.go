package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newDiffCmd(g *globals) *cobra.Command {
	var metadata bool
	c := &cobra.Command{
		Use:   "diff SNAPSHOT1 SNAPSHOT2",
		Short: "Show what changed between two snapshots",
		Long: `Show what changed from SNAPSHOT1 to SNAPSHOT2, one line per entry:
"+ path" added, "- path" removed, "M path" content changed, and with --metadata
"U path" for metadata only (mode, owner, modification time, xattrs). A folder's
path ends in "/"; an entry whose type changed is removed and added. Folders
whose contents are identical are not read. A summary follows.`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			src, err := g.openSnapshots(cmd)
			if err != nil {
				return err
			}
			defer src.close()
			var pair [2]*engine.Snapshot
			for i, ref := range a {
				ss, err := engine.SelectSnapshots(src.all, []string{ref})
				if err != nil {
					return err
				}
				pair[i] = ss[0]
			}
			sel := pair[:]
			if pair[0] == pair[1] {
				sel = pair[:1]
			}
			r, err := src.reader(ctx, sel)
			if err != nil {
				return err
			}
			if len(sel) == 1 {
				pair[1] = pair[0]
			}
			changes := []engine.DiffChange{}
			st, err := engine.Diff(ctx, r, pair[0], pair[1], engine.DiffOptions{Metadata: metadata}, func(c engine.DiffChange) error {
				if g.json {
					changes = append(changes, c)
					return nil
				}
				_, err := fmt.Fprintf(g.stdout, "%s %s\n", c.Kind, c.Path)
				return err
			})
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"from": pair[0].ID, "to": pair[1].ID, "changes": changes, "summary": st})
			}
			fmt.Fprintf(g.stdout, "\n%s → %s: %d added (%s), %d removed (%s), %d changed", pair[0].ID[:8], pair[1].ID[:8],
				st.Added, formatBytes(int64(st.AddedBytes)), st.Removed, formatBytes(int64(st.RemovedBytes)), st.Modified)
			if metadata {
				fmt.Fprintf(g.stdout, ", %d metadata only", st.Metadata)
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	}
	c.Flags().BoolVar(&metadata, "metadata", false, "also list entries whose metadata alone changed (U)")
	return c
}
