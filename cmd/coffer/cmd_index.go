package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newIndexCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "index",
		Short: "Rebuild the index database from the drives and the master key",
	}
	c.AddCommand(newIndexRebuildCmd(g))
	return c
}

func newIndexRebuildCmd(g *globals) *cobra.Command {
	var drives string
	c := &cobra.Command{
		Use:   "rebuild [--drives RACK:PATH,...]",
		Short: "Recreate the index from the drives and the master key alone",
		Long: `Recreate the index database of --repo from the drives and the master key alone:
the repository config, tenants, packs (from the sealed header every shard carries)
and snapshots. The highest valid version of every replicated record wins, and a
tombstone means deleted, so a drive that was offline cannot bring anything back.
The previous index folder, if any, is kept as REPO/index.broken-TIME.

Without --drives the drives are found through REPO/config.json (or REPO/drives/*).
With --drives (when the head node is lost and only the drives and the master key
remain) REPO is created if needed; the racks given are informational, each
drive's identity file says which drive it is. Give the key with --master-key-file.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runIndexRebuild(cmd, g, drives)
		},
	}
	c.Flags().StringVar(&drives, "drives", "", "drive folders as RACK:PATH,... (default: those of REPO/config.json)")
	return c
}

func runIndexRebuild(cmd *cobra.Command, g *globals, drives string) error {
	dir, err := g.repoDir()
	if err != nil {
		return err
	}
	o := engine.RebuildOptions{MasterKeyFile: g.keyFile, RetryLock: g.retryLock, Command: "coffer index rebuild", Warn: g.stderr,
		S3CAFile: g.s3CA, S3AllowVersioning: g.s3AllowVersioning}
	if drives != "" {
		if o.Drives, err = parseDrives(drives); err != nil {
			return err
		}
	}
	rep, err := engine.Rebuild(cmd.Context(), dir, o)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(rep)
	}
	fmt.Fprintf(g.stdout, "rebuilt the index of %s from %d drives: %s\n", dir, rep.Drives, rebuildSummary(rep))
	printRebuildNotes(g.stdout, rep)
	return nil
}

// rebuildSummary is the one-line account of what a rebuild recovered.
func rebuildSummary(rep *engine.RebuildReport) string {
	s := fmt.Sprintf("%d tenants, %d snapshots, %d packs, %d blobs", rep.Tenants, rep.Snapshots, rep.Packs, rep.Blobs)
	if rep.Forgotten > 0 || rep.Shredded > 0 {
		s += fmt.Sprintf("; %d forgotten snapshots and %d deleted tenants stay deleted", rep.Forgotten, rep.Shredded)
	}
	if rep.Ignored > 0 {
		s += fmt.Sprintf("; %d record copies failed authentication and were ignored", rep.Ignored)
	}
	return s
}

func printRebuildNotes(w io.Writer, rep *engine.RebuildReport) {
	if len(rep.Missing) > 0 {
		fmt.Fprintf(w, "drives not found: %d (reads reconstruct from the others; see coffer drive list)\n", len(rep.Missing))
	}
	if rep.Unreadable > 0 {
		fmt.Fprintf(w, "unreadable shards skipped: %d (run coffer scrub)\n", rep.Unreadable)
	}
	if rep.MovedAside != "" {
		fmt.Fprintf(w, "the previous index was kept in %s\n", rep.MovedAside)
	}
}

// openTenantRebuilding opens the repository and the --tenant tenant like
// g.openTenant, for the restore side (snapshots, ls, restore, dump), which
// must work from the drives and the master key alone. When the index is
// missing, damaged or behind the drives (the drives hold a snapshot or
// tenant record it lacks), REPO/config.json or REPO/drives exist and the
// master key file exists, it rebuilds the index first, says so on stderr,
// and then opens again. Other errors are returned as they are.
func (g *globals) openTenantRebuilding(cmd *cobra.Command) (*engine.Engine, *engine.Tenant, error) {
	e, t, err := g.openTenant(cmd) // a tenant the index lost: ErrIndexBehind
	if err == nil {
		if err = t.CheckSnapshotRecords(cmd.Context()); err == nil {
			return e, t, nil
		}
		e.Close()
	}
	if err := g.rebuildFor(cmd, err); err != nil {
		return nil, nil, err
	}
	return g.openTenant(cmd)
}

// rebuildFor rebuilds the index when cause says it is missing, damaged or
// behind the drives and the repository folder has what a rebuild needs; it
// returns cause itself otherwise.
func (g *globals) rebuildFor(cmd *cobra.Command, cause error) error {
	behind := errors.Is(cause, engine.ErrIndexBehind)
	if !behind && !engine.IndexLost(cause) {
		return cause
	}
	if g.lent != nil {
		return fmt.Errorf("%w (coffer serve holds the repository: stop it first)", cause)
	}
	dir, derr := g.repoDir()
	if derr != nil || !engine.CanRebuild(dir) {
		return cause
	}
	keyFile := g.keyFile
	if keyFile == "" {
		keyFile = filepath.Join(dir, "master.key")
	}
	if _, serr := os.Stat(keyFile); serr != nil {
		return cause
	}
	state := "missing"
	switch {
	case behind:
		state = "behind the drives"
	case fileExists(filepath.Join(dir, "index")):
		state = "unreadable"
	}
	g.releaseHolder(cmd.Context()) // the open that found the index lacking
	rep, rerr := engine.Rebuild(cmd.Context(), dir, engine.RebuildOptions{
		MasterKeyFile: g.keyFile, RetryLock: g.retryLock, Command: "coffer " + cmd.Name() + " (index rebuild)", Warn: g.stderr,
		S3CAFile: g.s3CA, S3AllowVersioning: g.s3AllowVersioning,
	})
	if rerr != nil {
		return fmt.Errorf("the index of %s is %s and could not be rebuilt from the drives: %w", dir, state, rerr)
	}
	fmt.Fprintf(g.stderr, "the index of %s is %s; rebuilt it from %d drives: %s\n", dir, state, rep.Drives, rebuildSummary(rep))
	printRebuildNotes(g.stderr, rep)
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
