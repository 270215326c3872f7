package remote

import (
	"context"
	"errors"
	"fmt"

	"coffer/chunk"
	"coffer/engine"
)

// Opener returns an engine.Opener of the key's tenant's snapshots that
// reads through the server (a restore or admin key): random access with the
// same checks as a remote restore (every tree and blob against its content
// ID, here). The server audits it as "open". Reads fail once the server
// refuses the key (a locked tenant, a removed key, a cut session): the
// opener asks the server at most every o.CheckEvery, unless o.Check is set.
// The caller closes the opener, then the client.
func (cl *Client) Opener(ctx context.Context, o engine.OpenerOptions) (*engine.Opener, error) {
	key, err := cl.beginOpen(ctx)
	if err != nil {
		return nil, err
	}
	if o.Check == nil {
		o.Check = func(ctx context.Context) error {
			_, err := cl.Snapshots(ctx)
			if err == nil || ctx.Err() != nil {
				return err
			}
			if errors.Is(err, ErrBusy) {
				return err
			}
			return fmt.Errorf("%w: %v", engine.ErrClientRefused, err)
		}
	}
	return engine.NewOpener(&remoteReader{cl: cl, hasher: chunk.NewHasher(key)}, o)
}

// beginOpen asks for the content-ID key with an open request.
func (cl *Client) beginOpen(ctx context.Context) ([32]byte, error) {
	var key [32]byte
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.send(ctx, request{Op: opOpen}); err != nil {
		return key, err
	}
	var r response
	if _, err := cl.next(&r); err != nil {
		return key, err
	}
	if r.Kind != kindParams || len(r.IDKey) != 32 {
		cl.c.Close()
		return key, fmt.Errorf("%w: unexpected %q frame to open", ErrProtocol, r.Kind)
	}
	copy(key[:], r.IDKey)
	return key, cl.expectEnd()
}
