package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newFindCmd(g *globals) *cobra.Command {
	var snaps []string
	var full bool
	var newest, oldest string
	c := &cobra.Command{
		Use:   "find PATTERN...",
		Short: "Find files by name (or with --path, by full path) in every snapshot or in --snapshot ones",
		Long: `Find files by name in the tenant's snapshots: a PATTERN is a glob (* ? [...])
matched against each entry's name; with --path, or when it starts with "/",
against its full path from the snapshot root. Prints the snapshot, the time
the entry was last modified, its size and its path; --newest and --oldest bound
that modification time. Each distinct folder is read once however many
snapshots hold it.`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			o := engine.FindOptions{}
			for _, glob := range a {
				p, err := engine.ParsePattern(glob, full)
				if err != nil {
					return err
				}
				o.Patterns = append(o.Patterns, p)
			}
			var err error
			if o.Newest, err = parseWhen("newest", newest); err != nil {
				return err
			}
			if o.Oldest, err = parseWhen("oldest", oldest); err != nil {
				return err
			}
			ctx := cmd.Context()
			src, err := g.openSnapshots(cmd)
			if err != nil {
				return err
			}
			defer src.close()
			sel, err := engine.SelectSnapshots(src.all, snaps)
			if err != nil {
				return err
			}
			r, err := src.reader(ctx, sel)
			if err != nil {
				return err
			}
			matches := []engine.FindMatch{}
			in := map[string]bool{}
			n := 0
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			if !g.json {
				fmt.Fprintln(w, "SNAPSHOT\tMODIFIED\tSIZE\tPATH")
			}
			if len(sel) > 0 {
				err = engine.Find(ctx, r, sel, o, func(m engine.FindMatch) error {
					in[m.Snapshot] = true
					n++
					if g.json {
						matches = append(matches, m)
						return nil
					}
					_, err := fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", m.Snapshot[:8], m.MTime.Format(time.DateTime), m.Size, m.Path)
					return err
				})
			}
			if err != nil {
				w.Flush()
				return err
			}
			if g.json {
				return g.printJSON(matches)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%d matches in %d of %d snapshots\n", n, len(in), len(sel))
			return nil
		},
	}
	c.Flags().StringArrayVar(&snaps, "snapshot", nil, "search only this snapshot (ID, prefix of 8+ hex digits, or latest; repeatable)")
	c.Flags().BoolVar(&full, "path", false, "match the patterns against full paths, not names")
	c.Flags().StringVar(&newest, "newest", "", "only entries modified at or before this time")
	c.Flags().StringVar(&oldest, "oldest", "", "only entries modified at or after this time")
	return c
}
