package main

import (
	"bufio"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newDumpCmd(g *globals) *cobra.Command {
	var archive string
	c := &cobra.Command{
		Use:   "dump SNAPSHOT PATH",
		Short: "Write a file's content, or a folder as a tar or zip archive, from a snapshot to standard output",
		Long: `Write the content of the file at PATH in SNAPSHOT to standard output. A folder
(or, with --archive, a file) is written as an archive: tar (the default for a
folder) keeps modes, times to the nanosecond, owners by number and name, xattrs,
symlinks, hard links, devices and fifos; zip keeps modes, times and symlinks
(hard links become copies; devices, fifos and sockets are left out). Entries
are named from PATH's own name down ("www/index.html" for /srv/www).`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if archive != "" && archive != engine.ArchiveTar && archive != engine.ArchiveZip {
				return usagef("--archive %q: use tar or zip", archive)
			}
			ctx := cmd.Context()
			src, err := g.openSnapshots(cmd)
			if err != nil {
				return err
			}
			defer src.close()
			sel, err := engine.SelectSnapshots(src.all, a[:1])
			if err != nil {
				return err
			}
			r, err := src.reader(ctx, sel)
			if err != nil {
				return err
			}
			s := sel[0]
			format := archive
			if format == "" {
				en, err := engine.StatPath(ctx, r, s, a[1])
				if err != nil {
					return err
				}
				if en.Type == "dir" {
					format = engine.ArchiveTar
				}
			}
			t := src.tenant() // local: the tenant's own dump, audited here
			if format == "" {
				if t != nil {
					return t.Dump(ctx, s, a[1], g.stdout)
				}
				_, err := engine.DumpFrom(ctx, r, s, a[1], g.stdout)
				return err
			}
			if isTerminal(g.stdout) {
				return usagef("dump of a folder writes a %s archive: redirect standard output to a file or a pipe", format)
			}
			// Archive headers are many small writes: buffered.
			bw := bufio.NewWriterSize(g.stdout, 256<<10)
			if t != nil {
				_, err = t.DumpArchive(ctx, s, a[1], format, bw)
			} else {
				_, err = engine.WriteArchive(ctx, r, s, a[1], format, bw)
			}
			if ferr := bw.Flush(); err == nil {
				err = ferr
			}
			return err
		},
	}
	c.Flags().StringVar(&archive, "archive", "", "write an archive: tar or zip (default: tar for a folder, the content for a file)")
	return c
}
