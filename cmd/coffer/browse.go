package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
	"coffer/engine/remote"
)

// snapshotSource is what the browsing commands (find, diff, stats, dump)
// read: the tenant's snapshots and a reader of their trees and blobs,
// from the local repository or, with --remote, from the server (a
// restore or admin key).
type snapshotSource struct {
	all []*engine.Snapshot // oldest first
	t   *engine.Tenant     // local only
	cl  *remote.Client     // remote only
	r   engine.SnapshotReader
	// close releases the repository or the connection.
	close func()
}

// openSnapshots opens the --tenant tenant of the local repository (as
// ls does: rebuilding a lost index), or connects to --remote.
func (g *globals) openSnapshots(cmd *cobra.Command) (*snapshotSource, error) {
	ctx := cmd.Context()
	if g.remote != "" {
		cl, err := g.dialRemote(ctx)
		if err != nil {
			return nil, err
		}
		all, err := cl.Snapshots(ctx)
		if err != nil {
			cl.Close()
			return nil, err
		}
		return &snapshotSource{all: all, cl: cl, close: func() { cl.Close() }}, nil
	}
	e, t, err := g.openTenantRebuilding(cmd)
	if err != nil {
		return nil, err
	}
	all, err := t.Snapshots(ctx)
	if err != nil {
		e.Close()
		return nil, err
	}
	return &snapshotSource{all: all, t: t, r: t.Reader(), close: func() { e.Close() }}, nil
}

// reader returns the reader for the snapshots sel. Remotely each one is
// opened on the server, which records in its audit log that it is read;
// the snapshots as the server gives them replace those of sel.
func (src *snapshotSource) reader(ctx context.Context, sel []*engine.Snapshot) (engine.SnapshotReader, error) {
	if src.cl == nil {
		return src.r, nil
	}
	for i, s := range sel {
		ss, r, err := src.cl.OpenSnapshot(ctx, s.ID)
		if err != nil {
			return nil, err
		}
		sel[i] = ss
		if src.r == nil {
			src.r = r
		}
	}
	if src.r == nil { // nothing selected: a reader is not needed
		return nil, nil
	}
	return src.r, nil
}

// parseWhen reads a time bound: RFC 3339, or "2006-01-02", "2006-01-02
// 15:04" or "2006-01-02 15:04:05" in the local time zone.
func parseWhen(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{time.DateOnly, "2006-01-02 15:04", time.DateTime} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usagef("--%s %q: give a time as 2006-01-02, 2006-01-02 15:04[:05] or RFC 3339", flag, s)
}
