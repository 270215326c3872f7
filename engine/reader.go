package engine

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"coffer/engine/tree"
	"coffer/index"
	"coffer/repo"
)

// SnapshotReader is what a restore reads of a tenant's snapshots: tree
// blobs by ID, and data blobs by ID, located first and then read in groups
// of blobs that lie close together. The local implementation (Tenant.Reader)
// reads the index and the packs; engine/remote's reads them from a server
// over the wire. Both return only blobs checked against their content IDs.
// Methods may be called from many goroutines at once.
type SnapshotReader interface {
	// Tree returns tree blob id, decoded (package tree) after its
	// plaintext was checked against id.
	Tree(ctx context.Context, id tree.ID) (*tree.Tree, error)
	// Locate returns where each data blob of ids lies, in order: its
	// plaintext length, and a place by which nearby blobs are grouped. A
	// blob the tenant does not have as a data blob is ErrBlobNotFound.
	Locate(ctx context.Context, ids []tree.ID) ([]BlobPlace, error)
	// ReadGroup reads the data blobs of grp (places from Locate, usually of
	// one pack and close together) and calls fn with each one's index in
	// grp and its plaintext, checked against its ID, in grp's order. fn
	// must not retain data.
	ReadGroup(ctx context.Context, grp []BlobPlace, fn func(i int, data []byte) error) error
}

// BlobPlace is where a data blob lies: its pack, the offset and length of
// its sealed bytes in the pack's data, and its plaintext length (Size).
type BlobPlace struct {
	ID     tree.ID
	Pack   index.PackID
	Offset uint32
	Length uint32
	Size   uint32
}

func (p BlobPlace) loc() index.BlobLoc {
	return index.BlobLoc{Pack: p.Pack, Type: index.BlobType(DataBlob), Offset: p.Offset, Length: p.Length, RawLength: p.Size}
}

// MaxReadGroup bounds the blobs of one Locate or ReadGroup request of a
// remote reader, and MaxReadGroupBytes their plaintext: a restore's groups
// hold at most restoreBatch blobs (a remote reader splits a group over
// MaxReadGroupBytes), and a hostile request cannot make the server hold
// more.
const (
	MaxReadGroup      = restoreBatch
	MaxReadGroupBytes = 64 << 20
)

// Reader returns the tenant's local snapshot reader: the index and the
// packs. Each call has its own cache of pack records.
func (t *Tenant) Reader() SnapshotReader {
	return &localReader{t: t, packs: &packCache{m: map[index.PackID]repo.PackInfo{}}}
}

type localReader struct {
	t     *Tenant
	packs *packCache
}

func (r *localReader) Tree(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	return r.t.loadTree(ctx, id)
}

func (r *localReader) Locate(ctx context.Context, ids []tree.ID) ([]BlobPlace, error) {
	out := make([]BlobPlace, len(ids))
	for i, id := range ids {
		if i%1024 == 1023 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		loc, ok, err := r.t.e.db.Blob(r.t.id, index.BlobID(id))
		if err != nil {
			return nil, fmt.Errorf("look up blob %x: %w", id[:8], err)
		}
		if !ok || BlobType(loc.Type) != DataBlob {
			return nil, fmt.Errorf("%w: content blob %x is not in the index", ErrBlobNotFound, id[:8])
		}
		out[i] = BlobPlace{ID: id, Pack: loc.Pack, Offset: loc.Offset, Length: loc.Length, Size: loc.RawLength}
	}
	return out, nil
}

// ReadGroup reads a group of blobs of one pack with one read and checks
// each one (authentication and content ID). A blob that fails, or a read
// that fails, falls back to reading blob by blob, which reconstructs from
// the other shards.
func (r *localReader) ReadGroup(ctx context.Context, grp []BlobPlace, fn func(int, []byte) error) error {
	t := r.t
	var span []byte
	var start uint32
	if len(grp) > 1 {
		same := true
		for _, c := range grp[1:] {
			same = same && c.Pack == grp[0].Pack
		}
		if p, err := r.packs.get(t, grp[0].Pack); err == nil && same {
			start = grp[0].Offset
			end := start
			for _, c := range grp {
				start = min(start, c.Offset)
				end = max(end, c.Offset+c.Length)
			}
			if end-start <= MaxReadGroupBytes {
				span, _ = t.e.rp().ReadRange(ctx, p, int64(start), int64(end-start), nil)
			}
		}
	}
	for i, c := range grp {
		var data []byte
		if span != nil {
			sealed := span[c.Offset-start : c.Offset-start+c.Length]
			if b, err := openBlob(&t.keys.data, t.id, DataBlob, c.ID, sealed, int(c.Size)); err == nil && tree.ID(t.keys.ids.Sum(b)) == c.ID {
				data = b
			}
		}
		if data == nil {
			b, err := t.readBlobCached(ctx, DataBlob, c.ID, c.loc(), r.packs)
			if err != nil {
				return err
			}
			data = b
		}
		if err := fn(i, data); err != nil {
			return err
		}
	}
	return nil
}

// lookupIn finds the node at p in snapshot s through r; for the root it
// returns nil.
func lookupIn(ctx context.Context, r SnapshotReader, s *Snapshot, p string) (*tree.Node, string, error) {
	rel := strings.Trim(path.Clean("/"+p), "/")
	if rel == "" {
		return nil, "", nil
	}
	rootID, err := parseTreeID(s.Tree)
	if err != nil {
		return nil, "", err
	}
	tr, err := r.Tree(ctx, rootID)
	if err != nil {
		return nil, "", err
	}
	parts := strings.Split(rel, "/")
	if len(parts) > MaxTreeDepth {
		return nil, "", fmt.Errorf("%w: %s has more than %d levels", ErrPathNotFound, shortPath("/"+rel, 200), MaxTreeDepth)
	}
	for i, part := range parts {
		n := tr.Find(part)
		if n == nil {
			return nil, "", fmt.Errorf("%w: %s in snapshot %s", ErrPathNotFound, "/"+rel, s.ID[:8])
		}
		if i == len(parts)-1 {
			return n, rel, nil
		}
		if n.Type != tree.Dir {
			return nil, "", fmt.Errorf("%w: %s in snapshot %s", ErrPathNotFound, "/"+rel, s.ID[:8])
		}
		if tr, err = r.Tree(ctx, n.Subtree); err != nil {
			return nil, "", err
		}
	}
	return nil, "", nil // not reached
}

// readContent reads the content of file node n through r, blob by blob
// groups of the reader's choosing, and calls fn with each chunk in order.
func readContent(ctx context.Context, r SnapshotReader, n *tree.Node, fn func([]byte) error) error {
	for ids := n.Content; len(ids) > 0; {
		k := min(len(ids), MaxReadGroup)
		places, err := r.Locate(ctx, ids[:k])
		if err != nil {
			return err
		}
		for _, p := range places {
			if err := r.ReadGroup(ctx, []BlobPlace{p}, func(_ int, b []byte) error { return fn(b) }); err != nil {
				return err
			}
		}
		ids = ids[k:]
	}
	return nil
}

// errNotData turns ErrBlobNotFound from a reader into damage of the
// snapshot at p (a snapshot names a blob its tenant does not have).
func errNotData(p string, err error) error {
	if errors.Is(err, ErrBlobNotFound) {
		return fmt.Errorf("%w: %s: %v", ErrDamage, p, err)
	}
	return fmt.Errorf("%s: %w", p, err)
}
