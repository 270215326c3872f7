package remote

import (
	"context"
	"fmt"

	"coffer/chunk"
	"coffer/engine"
)

// OpenSnapshot finds the snapshot ref on the server (an ID, a unique
// prefix of 8+ hex digits, or "latest") and returns it with a reader of
// the key's tenant's trees and data blobs, for the engine's browsing
// functions (engine.Find, Diff, Stats, WriteArchive) and RestoreFrom. It
// needs a restore or admin key; the server records in its audit log that
// the snapshot is read ("restore", "remote=1"), as for a restore. Every
// tree and blob the reader returns is checked against its ID here. The
// reader uses the client's connection, one request at a time; it stays
// usable for other snapshots of the same tenant.
func (cl *Client) OpenSnapshot(ctx context.Context, ref string) (*engine.Snapshot, engine.SnapshotReader, error) {
	s, key, err := cl.beginRestore(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	return s, &remoteReader{cl: cl, hasher: chunk.NewHasher(key)}, nil
}

// Tag changes the tags of snapshots of the key's tenant on the server, as
// engine.Tenant.Tag does locally. It needs an admin key. On an error after
// part of the work, the report lists what was done.
func (cl *Client) Tag(ctx context.Context, ids []string, o engine.TagOptions) (*engine.TagReport, error) {
	rep, err := cl.admin(ctx, request{Op: opTag, IDs: ids, Tag: &o})
	if rep == nil || rep.Tag == nil {
		if err == nil {
			err = fmt.Errorf("%w: tag answered without a report", ErrProtocol)
		}
		return nil, err
	}
	return rep.Tag, err
}

// Rewrite writes snapshots of the key's tenant again without the entries
// o.Exclude matches, on the server, as engine.Tenant.Rewrite does locally.
// It needs an admin key. On an error after part of the work, the report
// says what was done.
func (cl *Client) Rewrite(ctx context.Context, ids []string, o engine.RewriteOptions) (*engine.RewriteReport, error) {
	req := request{Op: opRewrite, IDs: ids, Forget: o.Forget, DryRun: o.DryRun}
	for _, p := range o.Exclude {
		req.Excludes = append(req.Excludes, p.Glob) // a full-path pattern starts with "/"
	}
	rep, err := cl.admin(ctx, req)
	if rep == nil || rep.Rewrite == nil {
		if err == nil {
			err = fmt.Errorf("%w: rewrite answered without a report", ErrProtocol)
		}
		return nil, err
	}
	return rep.Rewrite, err
}
