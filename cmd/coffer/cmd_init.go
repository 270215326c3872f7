package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"coffer/engine"
)

type initFlags struct {
	drives       string
	dataShards   int
	parityShards int
	packSize     string
}

func newInitCmd(g *globals) *cobra.Command {
	var f initFlags
	c := &cobra.Command{
		Use:   "init",
		Short: "Create a repository (default: 6 drives in REPO/drives over racks r1..r3, k=4, m=2)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInit(cmd, g, f)
		},
	}
	c.Flags().StringVar(&f.drives, "drives", "", "drives as RACK:PATH,... (default: 6 folders in REPO/drives)")
	c.Flags().IntVar(&f.dataShards, "data-shards", engine.DefaultDataShards, "data shards per pack (k)")
	c.Flags().IntVar(&f.parityShards, "parity-shards", engine.DefaultParityShards, "parity shards per pack (m)")
	c.Flags().StringVar(&f.packSize, "pack-size", "16MiB", "target pack size")
	return c
}

func runInit(cmd *cobra.Command, g *globals, f initFlags) error {
	dir, err := g.repoDir()
	if err != nil {
		return err
	}
	o := engine.InitOptions{DataShards: f.dataShards, ParityShards: f.parityShards, MasterKeyFile: g.keyFile,
		S3CAFile: g.s3CA, S3AllowVersioning: g.s3AllowVersioning}
	if o.DataShards < 1 {
		return usagef("--data-shards must be at least 1")
	}
	if o.ParityShards < 1 {
		return usagef("--parity-shards must be at least 1: without parity a single lost drive loses data")
	}
	size, err := parseSize(f.packSize)
	if err != nil {
		return err
	}
	o.PackSize = int(size)
	if f.drives != "" {
		if o.Drives, err = parseDrives(f.drives); err != nil {
			return err
		}
	}
	res, err := engine.Init(cmd.Context(), dir, o)
	if err != nil {
		return err
	}
	if g.json {
		if err := g.printJSON(res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(g.stdout, "created repository %s in %s with %d drives\n", res.Repository[:8], dir, len(res.Drives))
		for _, d := range res.Drives {
			fmt.Fprintf(g.stdout, "  drive %s  rack %-4s %s\n", d.ID, d.Rack, d.Path)
		}
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(g.stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(g.stderr, "warning: the master key was written to %s; without it no data can be read.\n"+
		"         In production keep it off the backup server's drives (and escrow a copy), then pass --master-key-file.\n", res.MasterKeyFile)
	return nil
}
