package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newSnapshotsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "snapshots",
		Short: "List the tenant's snapshots",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.session(cmd, true)
			if err != nil {
				return err
			}
			defer s.Close()
			ss, err := s.Snapshots(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				if ss == nil {
					ss = []*engine.Snapshot{}
				}
				return g.printJSON(ss)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tTIME\tHOST\tTAGS\tPATHS")
			for _, s := range ss {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", shortID(s.ID), s.Time.Format(time.DateTime), s.Host, strings.Join(s.Tags, ","), strings.Join(s.Paths, " "))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%d snapshots\n", len(ss))
			return nil
		},
	}
}

// shortID is the first 8 hex digits of a snapshot ID (all of a shorter
// one, which only a hostile server sends).
func shortID(id string) string { return id[:min(8, len(id))] }

func newLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ls SNAPSHOT [PATH]",
		Short: "List the files of a snapshot (SNAPSHOT: ID, unique prefix of 8+ hex digits, or latest)",
		Args:  args(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			s, err := g.session(cmd, true)
			if err != nil {
				return err
			}
			defer s.Close()
			dir := "/"
			if len(a) == 2 {
				dir = a[1]
			}
			var entries []engine.Entry
			err = s.List(cmd.Context(), a[0], dir, func(en engine.Entry) error {
				if g.json {
					entries = append(entries, en)
					return nil
				}
				_, err := fmt.Fprintln(g.stdout, en.Path)
				return err
			})
			if err != nil {
				return err
			}
			if g.json {
				if entries == nil {
					entries = []engine.Entry{}
				}
				return g.printJSON(entries)
			}
			return nil
		},
	}
}

func newRestoreCmd(g *globals) *cobra.Command {
	var target string
	var includes []string
	c := &cobra.Command{
		Use:   "restore SNAPSHOT --target DIR",
		Short: "Restore a snapshot into a folder, verifying every chunk",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if target == "" {
				return usagef("restore needs --target DIR")
			}
			s, err := g.session(cmd, true)
			if err != nil {
				return err
			}
			defer s.Close()
			pl := startProgress(g.stderr, "restored")
			st, err := s.Restore(cmd.Context(), a[0], target, engine.RestoreOptions{Includes: includes, Progress: pl.p})
			pl.done()
			if err != nil {
				return err
			}
			for _, w := range st.Warnings {
				fmt.Fprintf(g.stderr, "warning: %s\n", w)
			}
			if g.json {
				return g.printJSON(st)
			}
			fmt.Fprintf(g.stdout, "restored snapshot %s to %s: %d files, %d folders, %d other, %s\n", shortID(st.Snapshot), target, st.Files, st.Dirs, st.Other, formatBytes(st.Bytes))
			return nil
		},
	}
	c.Flags().StringVar(&target, "target", "", "folder to restore into")
	c.Flags().StringArrayVar(&includes, "include", nil, "restore only this snapshot path and what is below it (repeatable)")
	return c
}

func newCheckCmd(g *globals) *cobra.Command {
	var readData bool
	c := &cobra.Command{
		Use:   "check",
		Short: "Verify that the index and the drives agree (--read-data: read and verify every byte)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.open(cmd)
			if err != nil {
				return indexDamage(err)
			}
			defer e.Close()
			pl := startProgress(g.stderr, "checked")
			rep, err := e.Check(cmd.Context(), engine.CheckOptions{ReadData: readData, Progress: pl.p})
			pl.done()
			err = indexDamage(err)
			if rep == nil {
				return err
			}
			if g.json {
				if jerr := g.printJSON(rep); jerr != nil {
					return jerr
				}
				return err
			}
			fmt.Fprintf(g.stdout, "checked %d tenants, %d snapshots, %d packs, %d shards, %d blobs\n", rep.Tenants, rep.Snapshots, rep.Packs, rep.Shards, rep.Blobs)
			for _, n := range rep.Notes {
				fmt.Fprintf(g.stdout, "note: %s\n", n)
			}
			for _, p := range rep.Problems {
				fmt.Fprintf(g.stdout, "damage: %s\n", p)
			}
			if err == nil {
				fmt.Fprintln(g.stdout, "no damage found")
			}
			return err
		},
	}
	c.Flags().BoolVar(&readData, "read-data", false, "read every shard in full and decrypt and verify every blob")
	return c
}
