package remote

import (
	"context"

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
