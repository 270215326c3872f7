package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newDriveCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "drive",
		Short: "List, fail and add drives",
	}
	c.AddCommand(newDriveListCmd(g), newDriveFailCmd(g), newDriveAddCmd(g))
	return c
}

func newDriveListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List drives with state (active, suspect, unavailable, failed), shard count and used bytes, and the packs below full redundancy",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			rep, err := e.DriveReport(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(rep)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tRACK\tSTATE\tSHARDS\tUSED\tPATH")
			for _, d := range rep.Drives {
				state := d.State
				switch {
				case d.State == "active" && !d.Available:
					state = "unavailable"
				case d.Suspect != "":
					state = "suspect"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Rack, state, d.Shards, formatBytes(d.UsedBytes), d.Path)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%d packs, %d below full redundancy", rep.Packs, rep.Degraded)
			if rep.Degraded > 0 {
				fmt.Fprint(g.stdout, " (coffer scrub --repair restores it)")
			}
			fmt.Fprintln(g.stdout)
			for _, d := range rep.Drives {
				if d.Problem != "" && d.State == "active" {
					fmt.Fprintf(g.stderr, "warning: drive %s: %s\n", d.ID, d.Problem)
				}
				if d.Suspect != "" {
					fmt.Fprintf(g.stderr, "warning: drive %s refused writes (%s) since %s; writes place around it: fix it, or run coffer drive fail %s and replace it\n",
						d.ID, d.Suspect, d.SuspectSince.Format(time.RFC3339), d.ID)
				}
			}
			if rep.Warning != "" {
				fmt.Fprintf(g.stderr, "warning: %s\n", rep.Warning)
			}
			return nil
		},
	}
}

func newDriveFailCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "fail ID",
		Short: "Mark a drive out of service: nothing is written to it, reads avoid it, and its records are re-placed at once",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			d, err := e.FailDrive(cmd.Context(), a[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(d)
			}
			fmt.Fprintf(g.stdout, "drive %s (rack %s, %s) is marked failed; %s re-placed on the other drives; run coffer scrub --repair to re-home its shards\n",
				d.ID, d.Rack, d.Path, plural(d.RecordsReplaced, "record", "records"))
			return nil
		},
	}
}

func newDriveAddCmd(g *globals) *cobra.Command {
	var rack string
	c := &cobra.Command{
		Use:   "add --rack R PATH",
		Short: "Add a drive folder in rack R",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if rack == "" {
				return usagef("drive add needs --rack R")
			}
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			d, warning, err := e.AddDrive(cmd.Context(), rack, g.path(a[0]))
			if err != nil {
				return err
			}
			if warning != "" {
				fmt.Fprintf(g.stderr, "warning: %s\n", warning)
			}
			if g.json {
				return g.printJSON(d)
			}
			fmt.Fprintf(g.stdout, "added drive %s in rack %s at %s; %s re-placed\n", d.ID, d.Rack, d.Path, plural(d.RecordsReplaced, "record", "records"))
			return nil
		},
	}
	c.Flags().StringVar(&rack, "rack", "", "rack label of the new drive")
	return c
}
