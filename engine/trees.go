package engine

import (
	"context"
	"fmt"

	"coffer/engine/tree"
)

func parseTreeID(s string) (tree.ID, error) {
	var id tree.ID
	if err := decodeHexInto(id[:], s); err != nil {
		return id, fmt.Errorf("%w: tree ID %q: %v", ErrCorrupt, s, err)
	}
	return id, nil
}

// loadTree reads and decodes one tree blob.
func (t *Tenant) loadTree(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	b, err := t.readBlob(ctx, TreeBlob, id)
	if err != nil {
		return nil, err
	}
	tr, err := tree.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%w: tree %x: %v", ErrDamage, id[:8], err)
	}
	return tr, nil
}

// rootTree loads a snapshot's root tree.
func (t *Tenant) rootTree(ctx context.Context, s *Snapshot) (*tree.Tree, error) {
	id, err := parseTreeID(s.Tree)
	if err != nil {
		return nil, err
	}
	return t.loadTree(ctx, id)
}
