package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newStatsCmd(g *globals) *cobra.Command {
	var mode string
	c := &cobra.Command{
		Use:   "stats [SNAPSHOT...]",
		Short: "Count the files and bytes of snapshots, and the distinct data they store",
		Long: `Count snapshots (all of them, or those given): with --mode restore-size the
files, folders and bytes a restore of each writes, summed; with --mode raw-data
the distinct data blobs they use, their bytes and their stored (sealed) bytes,
and the dedup ratio (bytes to restore per distinct byte). Without --mode, both.
Each distinct folder is read once.`,
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			src, err := g.openSnapshots(cmd)
			if err != nil {
				return err
			}
			defer src.close()
			sel, err := engine.SelectSnapshots(src.all, a)
			if err != nil {
				return err
			}
			r, err := src.reader(ctx, sel)
			if err != nil {
				return err
			}
			st := &engine.SnapshotsStats{Mode: mode}
			if len(sel) > 0 {
				if st, err = engine.Stats(ctx, r, sel, mode); err != nil {
					return err
				}
			} else if mode != "" && mode != engine.StatsRestoreSize && mode != engine.StatsRawData {
				return usagef("--mode %q: use %s or %s", mode, engine.StatsRestoreSize, engine.StatsRawData)
			}
			if g.json {
				return g.printJSON(st)
			}
			fmt.Fprintf(g.stdout, "snapshots:         %d\n", st.Snapshots)
			if mode != engine.StatsRawData {
				fmt.Fprintf(g.stdout, "files:             %d\n", st.Files)
				fmt.Fprintf(g.stdout, "folders:           %d\n", st.Dirs)
				fmt.Fprintf(g.stdout, "other entries:     %d\n", st.Other)
				fmt.Fprintf(g.stdout, "bytes to restore:  %d (%s)\n", st.RestoreBytes, formatBytes(int64(min(st.RestoreBytes, 1<<62))))
			}
			if mode != engine.StatsRestoreSize {
				if mode == engine.StatsRawData {
					fmt.Fprintf(g.stdout, "bytes to restore:  %d (%s)\n", st.RestoreBytes, formatBytes(int64(min(st.RestoreBytes, 1<<62))))
				}
				fmt.Fprintf(g.stdout, "distinct blobs:    %d\n", st.Blobs)
				fmt.Fprintf(g.stdout, "distinct bytes:    %d (%s)\n", st.UniqueBytes, formatBytes(int64(st.UniqueBytes)))
				fmt.Fprintf(g.stdout, "stored bytes:      %d (%s)\n", st.StoredBytes, formatBytes(int64(st.StoredBytes)))
				fmt.Fprintf(g.stdout, "dedup ratio:       %.2f\n", st.DedupRatio)
			}
			return nil
		},
	}
	c.Flags().StringVar(&mode, "mode", "", "restore-size or raw-data (default: both)")
	return c
}
