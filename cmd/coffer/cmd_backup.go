package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"coffer/engine"
)

type backupFlags struct {
	host          string
	tags          []string
	excludes      []string
	stdin         bool
	stdinFilename string
	force         bool
}

func newBackupCmd(g *globals) *cobra.Command {
	var f backupFlags
	c := &cobra.Command{
		Use:   "backup PATH... | backup --stdin --stdin-filename NAME",
		Short: "Back up files and folders (or standard input) into a new snapshot",
		RunE: func(cmd *cobra.Command, a []string) error {
			return runBackup(cmd, g, f, a)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.host, "host", "", "host name to record (default: this machine's)")
	fl.StringArrayVar(&f.tags, "tag", nil, "tag to record (repeatable)")
	fl.StringArrayVar(&f.excludes, "exclude", nil, "skip entries matching this glob (repeatable; with a / it matches absolute paths, else base names)")
	fl.BoolVar(&f.stdin, "stdin", false, "back up standard input")
	fl.StringVar(&f.stdinFilename, "stdin-filename", "", "file name for the standard input in the snapshot")
	fl.BoolVar(&f.force, "force", false, "read every file, even those unchanged since the parent snapshot")
	return c
}

func runBackup(cmd *cobra.Command, g *globals, f backupFlags, paths []string) error {
	if f.stdin {
		if len(paths) > 0 {
			return usagef("--stdin takes no paths")
		}
		if f.stdinFilename == "" {
			return usagef("--stdin needs --stdin-filename NAME")
		}
	} else if len(paths) == 0 {
		return usagef("give at least one path to back up, or --stdin")
	}
	sess, err := g.session(cmd, false)
	if err != nil {
		return err
	}
	defer sess.Close()
	pl := startProgress(g.stderr, "backed up")
	o := engine.BackupOptions{Host: f.host, Tags: f.tags, Excludes: f.excludes, NoParent: f.force, Progress: pl.p}
	var s *engine.Snapshot
	if f.stdin {
		s, err = sess.BackupStream(cmd.Context(), g.stdin, f.stdinFilename, o)
	} else {
		s, err = sess.Backup(cmd.Context(), paths, o)
	}
	pl.done()
	if s == nil {
		return err
	}
	if g.json {
		if jerr := g.printJSON(s); jerr != nil {
			return jerr
		}
	} else {
		st := s.Stats
		on, sent := "", ""
		if srv := sess.Server(); srv != "" {
			on, sent = " on "+srv, ", "+formatBytes(sess.Sent())+" sent"
		}
		fmt.Fprintf(g.stdout, "snapshot %s saved%s\n", shortID(s.ID), on)
		fmt.Fprintf(g.stdout, "  %d files (%d unchanged), %d folders, %s processed in %s\n",
			st.Files, st.FilesUnchanged, st.Dirs, formatBytes(st.Bytes), st.End.Sub(st.Start).Round(1e6))
		fmt.Fprintf(g.stdout, "  %d new blobs, %s added, %s stored after compression%s\n",
			st.BlobsAdded, formatBytes(st.BytesAdded), formatBytes(st.BytesStored), sent)
	}
	// A snapshot was saved; err is nil or says what else happened (some
	// files unreadable: exit 3). It is never dropped: a command reports
	// success only for what it did.
	return err
}
