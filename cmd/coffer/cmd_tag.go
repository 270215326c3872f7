package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newTagCmd(g *globals) *cobra.Command {
	var add, remove, set []string
	c := &cobra.Command{
		Use:   "tag SNAPSHOT... [--add TAG] [--remove TAG] [--set TAG]",
		Short: "Change the tags of snapshots (audited)",
		Long: `Change the tags of the snapshots given: --set replaces them all (--set ""
removes every tag), then --remove takes tags away and --add adds them. Each flag
takes a comma-separated list and may be repeated. A snapshot keeps its ID; its
sealed record is written again. With --remote it needs an admin key. The audit entry "tag" counts the snapshots
changed and names them by ID, never by tag.`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			o := engine.TagOptions{Add: add, Remove: remove, Replace: cmd.Flags().Changed("set")}
			for _, t := range set {
				if t != "" {
					o.Set = append(o.Set, t)
				}
			}
			s, err := g.session(cmd, false)
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := s.Tag(cmd.Context(), a, o)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(rep)
			}
			for _, it := range rep.Snapshots {
				state := "unchanged"
				if it.Changed {
					state = "changed"
				}
				fmt.Fprintf(g.stdout, "%s  %-9s  %s\n", it.ID[:8], state, strings.Join(it.Tags, ","))
			}
			fmt.Fprintf(g.stdout, "%d of %d snapshots changed\n", rep.Changed, len(rep.Snapshots))
			return nil
		},
	}
	c.Flags().StringSliceVar(&add, "add", nil, "add these tags")
	c.Flags().StringSliceVar(&remove, "remove", nil, "remove these tags")
	c.Flags().StringSliceVar(&set, "set", nil, "replace all tags with these")
	return c
}
