package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
)

// snapshotSource is what the browsing commands (find, diff, stats, dump)
// read: the tenant's snapshots and a reader of their trees and blobs,
// through the command's session (local, the holder's data socket, or
// --remote with a restore or admin key).
type snapshotSource struct {
	all []*engine.Snapshot // oldest first
	s   session
	r   engine.SnapshotReader
}

// openSnapshots opens the --tenant tenant's session (as ls does:
// rebuilding a lost index) and lists its snapshots.
func (g *globals) openSnapshots(cmd *cobra.Command) (*snapshotSource, error) {
	s, err := g.session(cmd, true)
	if err != nil {
		return nil, err
	}
	all, err := s.Snapshots(cmd.Context())
	if err != nil {
		s.Close()
		return nil, err
	}
	return &snapshotSource{all: all, s: s}, nil
}

// close releases the session.
func (src *snapshotSource) close() { src.s.Close() }

// tenant is the local tenant, or nil for a remote session.
func (src *snapshotSource) tenant() *engine.Tenant {
	if l, ok := src.s.(*localSession); ok {
		return l.t
	}
	return nil
}

// reader returns the reader for the snapshots sel, each opened through the
// session (remotely the server records in its audit log that it is read);
// the snapshots as opened replace those of sel.
func (src *snapshotSource) reader(ctx context.Context, sel []*engine.Snapshot) (engine.SnapshotReader, error) {
	for i, s := range sel {
		ss, r, err := src.s.OpenSnapshot(ctx, s.ID)
		if err != nil {
			return nil, err
		}
		sel[i] = ss
		if src.r == nil {
			src.r = r
		}
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
