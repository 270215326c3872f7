package remote

import (
	"context"
	"encoding/hex"
	"fmt"

	"coffer/chunk"
	"coffer/engine"
	"coffer/engine/tree"
)

// maxTreeBytes bounds a tree blob a client accepts from the server (the
// server takes trees of at most 32 MiB from a backup).
const maxTreeBytes = 64 << 20

// Restore restores the snapshot (only o.Includes, if given: snapshot
// paths) below target, which is created if missing, with the engine's one restore
// pipeline (engine.RestoreFrom): everything a local restore writes (hard
// links, xattrs and ACLs, owners when run as root, devices, fifos, holes,
// times to the nanosecond) is written, and the same warnings are given.
// Trees and data blobs come from the server by ID and are checked against
// their content IDs here before anything is written; names in trees are
// checked by the tree decoder (never "/", "." or ".."), so nothing is
// written outside target. The server records the start of the restore in
// its audit log.
func (cl *Client) Restore(ctx context.Context, snapshot, target string, o engine.RestoreOptions) (*engine.RestoreStats, error) {
	s, key, err := cl.beginRestore(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	r := &remoteReader{cl: cl, hasher: chunk.NewHasher(key)}
	return engine.RestoreFrom(ctx, r, s, target, o)
}

// beginRestore finds the snapshot and gets the content-ID key.
func (cl *Client) beginRestore(ctx context.Context, snapshot string) (*engine.Snapshot, [32]byte, error) {
	var key [32]byte
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.send(ctx, request{Op: opRestore, Snapshot: snapshot}); err != nil {
		return nil, key, err
	}
	var r response
	if _, err := cl.next(&r); err != nil {
		return nil, key, err
	}
	if r.Kind != kindParams || r.Snapshot == nil || len(r.IDKey) != 32 || !isHex(r.Snapshot.ID, 32) || !isHex(r.Snapshot.Tree, 64) {
		cl.c.Close()
		return nil, key, fmt.Errorf("%w: unexpected %q frame to restore", ErrProtocol, r.Kind)
	}
	copy(key[:], r.IDKey)
	return r.Snapshot, key, cl.expectEnd()
}

// isHex reports whether s is n hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// remoteReader is the engine.SnapshotReader of a remote restore: one
// request at a time on the client's connection, each answer checked
// before it is used. Blobs are checked against their IDs outside the
// connection's lock, so the workers of a restore hash in parallel.
type remoteReader struct {
	cl     *Client
	hasher *chunk.Hasher
}

var _ engine.SnapshotReader = (*remoteReader)(nil)

func (r *remoteReader) Tree(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	r.cl.mu.Lock()
	defer r.cl.mu.Unlock()
	return r.cl.fetchTree(ctx, r.hasher, id)
}

// fetchTree reads tree blob id from the server, checks it against id and
// decodes it. The caller holds the connection.
func (cl *Client) fetchTree(ctx context.Context, h *chunk.Hasher, id tree.ID) (*tree.Tree, error) {
	if err := cl.send(ctx, request{Op: opTree, ID: hex.EncodeToString(id[:])}); err != nil {
		return nil, err
	}
	var data []byte
	for {
		var r response
		body, err := cl.next(&r)
		if err != nil {
			return nil, err
		}
		if r.Kind == kindEnd {
			break
		}
		if r.Kind != kindData || len(data)+len(body) > maxTreeBytes {
			cl.c.Close()
			return nil, fmt.Errorf("%w: tree %x: unexpected %q frame or more than %d bytes", ErrProtocol, id[:8], r.Kind, maxTreeBytes)
		}
		data = append(data, body...)
	}
	if tree.ID(h.Sum(data)) != id {
		return nil, fmt.Errorf("%w: the server sent tree %x with other content", engine.ErrAuth, id[:8])
	}
	t, err := tree.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: tree %x from the server: %v", engine.ErrDamage, id[:8], err)
	}
	return t, nil
}

func idBody(ids []tree.ID) []byte {
	b := make([]byte, 0, 32*len(ids))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

func (r *remoteReader) Locate(ctx context.Context, ids []tree.ID) ([]engine.BlobPlace, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if len(ids) > engine.MaxReadGroup {
		return nil, fmt.Errorf("locate %d blobs: at most %d at once", len(ids), engine.MaxReadGroup)
	}
	cl := r.cl
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.sendBody(ctx, request{Op: opLocate}, idBody(ids)); err != nil {
		return nil, err
	}
	var resp response
	body, err := cl.next(&resp)
	if err != nil {
		return nil, err
	}
	if resp.Kind != kindPlaces {
		cl.c.Close()
		return nil, fmt.Errorf("%w: unexpected %q frame to locate", ErrProtocol, resp.Kind)
	}
	places, err := parsePlaces(body, ids)
	if err != nil {
		cl.c.Close()
		return nil, err
	}
	return places, cl.expectEnd()
}

// ReadGroup asks for the distinct blobs of grp, in requests of at most
// engine.MaxReadGroupBytes of plaintext (a group of small sealed blobs,
// such as a sparse file's chunks of zeros, may hold much more), and checks
// each against its ID.
func (r *remoteReader) ReadGroup(ctx context.Context, grp []engine.BlobPlace, fn func(int, []byte) error) error {
	for base := 0; len(grp) > 0; {
		var ask []engine.BlobPlace
		have := map[tree.ID]int{} // ID → index in ask
		var bytes int64
		n := 0
		for ; n < len(grp) && len(ask) < engine.MaxReadGroup; n++ {
			p := grp[n]
			if _, ok := have[p.ID]; ok {
				continue
			}
			if len(ask) > 0 && bytes+int64(p.Size) > engine.MaxReadGroupBytes {
				break
			}
			have[p.ID] = len(ask)
			ask = append(ask, p)
			bytes += int64(p.Size)
		}
		blobs, err := r.receive(ctx, ask)
		if err != nil {
			return err
		}
		for i, b := range blobs {
			if tree.ID(r.hasher.Sum(b)) != ask[i].ID {
				return fmt.Errorf("%w: the server sent blob %x with other content", engine.ErrAuth, ask[i].ID[:8])
			}
		}
		for i, p := range grp[:n] {
			if err := fn(base+i, blobs[have[p.ID]]); err != nil {
				return err
			}
		}
		grp, base = grp[n:], base+n
	}
	return nil
}

// receive asks for the blobs ids and reads them; each must have its
// place's length (so a server cannot make the client hold more than the
// group's size).
func (r *remoteReader) receive(ctx context.Context, grp []engine.BlobPlace) ([][]byte, error) {
	ids := make([]tree.ID, len(grp))
	for i, p := range grp {
		ids[i] = p.ID
	}
	cl := r.cl
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.sendBody(ctx, request{Op: opBlobs}, idBody(ids)); err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(grp))
	cur := make([]byte, 0, grp[0].Size)
	for {
		var resp response
		body, err := cl.next(&resp)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.Kind == kindData && len(out) < len(grp) && len(cur)+len(body) <= int(grp[len(out)].Size):
			cur = append(cur, body...)
			continue
		case resp.Kind == kindEOF && len(out) < len(grp) && len(cur) == int(grp[len(out)].Size):
			out = append(out, cur)
			if len(out) < len(grp) {
				cur = make([]byte, 0, grp[len(out)].Size)
			}
			continue
		case resp.Kind == kindEnd && len(out) == len(grp):
			return out, nil
		}
		cl.c.Close()
		return nil, fmt.Errorf("%w: unexpected %q frame or blob length in the answer to blobs", ErrProtocol, resp.Kind)
	}
}
