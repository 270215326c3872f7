package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"coffer/chunk"
	"coffer/engine/tree"
	"coffer/index"
	"coffer/repo"
)

// This file holds what the remote server (engine/remote) needs from a tenant
// beyond the local API: the read side of a remote restore (TreeBlob, Reader, RemoteRestore) and the upload side
// of a remote backup (IngestParams, BeginIngest and the Ingest session), see
// docs/design.md chapter 15.

// ErrBlobNotFound: the tenant has no blob of that ID and type.
var ErrBlobNotFound = errors.New("engine: blob not found")

// ErrBlobMismatch: an uploaded blob's content does not hash to the ID it was
// sent under (errors also wrap ErrInvalid).
var ErrBlobMismatch = errors.New("engine: blob content does not match its ID")

// ErrIngestBroken: the ingest session failed earlier (a pack could not be
// written, the quota ran out) and takes no more calls; the error of every
// later call also wraps the first failure.
var ErrIngestBroken = errors.New("engine: ingest session failed")

// RemoteRestore records in the audit log that a remote client starts to
// restore snapshot s (action "restore", detail "snapshot=ID remote=1"). The
// client restores with RestoreFrom over the wire, reading trees (TreeBlob)
// and data blobs (Reader) one request at a time; the server cannot tell
// when it ends, so only the start is recorded. When the entry cannot be
// written, the restore must not start (as a dump's).
func (t *Tenant) RemoteRestore(ctx context.Context, s *Snapshot) error {
	if err := t.e.logAudit(ctx, "restore", t.id, nil, fmt.Sprintf("snapshot=%s remote=1", s.ID)); err != nil {
		return fmt.Errorf("the audit entry of the restore could not be written: %w", err)
	}
	return nil
}

// RemoteOpen audits the start of a remote client's random access to the
// tenant's snapshots (a mount): action "open", detail "remote=1".
func (t *Tenant) RemoteOpen(ctx context.Context) error {
	if err := t.e.logAudit(ctx, "open", t.id, nil, "remote=1"); err != nil {
		return fmt.Errorf("the audit entry of the open could not be written: %w", err)
	}
	return nil
}

// IngestParams is what a remote backup client needs to cut and name chunks
// exactly as a local backup of the same tenant would: the chunker polynomial
// and the content-ID key. It never includes the data or metadata key, so a
// client that has it can name blobs but not read or forge sealed ones.
type IngestParams struct {
	Pol   chunk.Pol
	IDKey [KeySize]byte
}

// IngestParams returns the tenant's chunking parameters (see the type).
func (t *Tenant) IngestParams() IngestParams {
	return IngestParams{Pol: t.keys.pol, IDKey: t.keys.idKey}
}

// TreeBlob returns the plaintext (the encoding of package tree) of the
// tenant's tree blob id, verified against id. A blob that is not one of this
// tenant's tree blobs gives ErrBlobNotFound, whatever other tenants hold.
// The caller owns the result.
func (t *Tenant) TreeBlob(ctx context.Context, id [32]byte) ([]byte, error) {
	loc, ok, err := t.e.db.Blob(t.id, index.BlobID(id))
	if err != nil {
		return nil, fmt.Errorf("look up tree %x: %w", id[:8], err)
	}
	if !ok || BlobType(loc.Type) != TreeBlob {
		return nil, fmt.Errorf("%w: tree %x", ErrBlobNotFound, id[:8])
	}
	return t.readBlob(ctx, TreeBlob, id)
}

// IngestBlob is one uploaded blob.
type IngestBlob struct {
	Type BlobType
	ID   [32]byte
	Data []byte // plaintext; Put does not retain it
}

// maxIngestTree bounds an uploaded tree blob (a folder of some hundred
// thousand entries); data blobs are bounded by chunk.MaxSize.
const maxIngestTree = 32 << 20

// Ingest is a remote backup in progress for one tenant: the client names
// blobs, the session stores the ones the tenant lacks through the same
// packer and writePack path as a local backup, and Commit records the
// snapshot. The tenant lock is held from BeginIngest until Commit or Abort,
// as a local backup holds it, so forget and prune of the tenant wait.
//
// Write order, as in a local backup: every pack is durable on its drives and
// then indexed; data packs are written before the tree packs whose trees
// reference them; the snapshot record comes last, after Commit has checked
// that every blob its root tree reaches is indexed. A session that ends
// without Commit (a dropped connection) records no snapshot; the packs it
// wrote stay indexed, so a rerun is told the tenant has those blobs and does
// not send them again. Blobs still in an unwritten pack are lost and resent.
//
// An Ingest is not safe for concurrent use: one connection drives it.
type Ingest struct {
	t      *Tenant
	unlock func() // nil once the session ended
	start  int64

	data, trees packer
	pending     map[[32]byte]BlobType // in a packer, not yet indexed

	quota, used int64
	written     []repo.PackInfo
	wblobs      [][]packBlob

	blobs, added, stored int64
	err                  error // first failure; the session is broken
}

// BeginIngest starts a remote backup of t. It waits for the tenant lock
// (another backup, forget or prune of the tenant) until ctx ends. The
// caller must end the session with Commit or Abort.
func (t *Tenant) BeginIngest(ctx context.Context) (*Ingest, error) {
	unlock, err := t.lockCtx(ctx)
	if err != nil {
		return nil, fmt.Errorf("wait for the tenant's other operation: %w", err)
	}
	if err := t.requireInStep(ctx); err != nil {
		unlock()
		return nil, err
	}
	cfg := t.e.conf()
	in := &Ingest{
		t: t, unlock: unlock, start: t.e.now().UnixNano(),
		data:    packer{size: cfg.PackSize, k: cfg.K, m: cfg.M},
		trees:   packer{size: cfg.PackSize, k: cfg.K, m: cfg.M, grow: true},
		pending: map[[32]byte]BlobType{},
	}
	if in.quota = t.quota; in.quota > 0 {
		if in.used, err = t.storedBytes(); err != nil {
			unlock()
			return nil, err
		}
		if in.used >= in.quota {
			unlock()
			return nil, fmt.Errorf("%w: tenant %q stores %s, its quota is %s", ErrQuotaExceeded, t.name, humanBytes(in.used), humanBytes(in.quota))
		}
	}
	return in, nil
}

// lockCtx takes the tenant lock, or gives up when ctx ends (the lock is then
// released as soon as it is taken).
func (t *Tenant) lockCtx(ctx context.Context) (func(), error) {
	got := make(chan func(), 1)
	go func() { got <- t.e.lockTenant(t.id) }()
	select {
	case u := <-got:
		return u, nil
	case <-ctx.Done():
		go func() { (<-got)() }()
		return nil, ctx.Err()
	}
}

// known returns the type of blob id if the tenant has it indexed or this
// session holds it in a packer.
func (in *Ingest) known(id [32]byte) (BlobType, bool, error) {
	if typ, ok := in.pending[id]; ok {
		return typ, true, nil
	}
	loc, ok, err := in.t.e.db.Blob(in.t.id, id)
	if err != nil {
		return 0, false, fmt.Errorf("look up blob %x: %w", id[:8], err)
	}
	return BlobType(loc.Type), ok, nil
}

func (in *Ingest) usable() error {
	if in.unlock == nil {
		return fmt.Errorf("%w: the session has ended", ErrIngestBroken)
	}
	if in.err != nil {
		return fmt.Errorf("%w: %w", ErrIngestBroken, in.err)
	}
	return nil
}

// Have reports, for each ID, whether the tenant already has that blob
// (indexed, or uploaded in this session). It answers only for this
// session's tenant: other tenants' blobs count as absent.
func (in *Ingest) Have(ctx context.Context, ids [][32]byte) ([]bool, error) {
	if err := in.usable(); err != nil {
		return nil, err
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		_, ok, err := in.known(id)
		if err != nil {
			return nil, err
		}
		out[i] = ok
	}
	return out, ctx.Err()
}

// Put stores blobs the tenant lacks (blobs it has are skipped). Every
// blob's ID is recomputed with the tenant's ID key first, and a tree must
// decode and may reference only blobs of the right type that the tenant
// has or that come earlier in blobs. If any blob fails these checks, Put
// stores none of them and returns an error wrapping ErrInvalid (and
// ErrBlobMismatch for a wrong ID); the session stays usable. A failure to
// write a pack breaks the session (ErrIngestBroken).
func (in *Ingest) Put(ctx context.Context, blobs []IngestBlob) error {
	if err := in.usable(); err != nil {
		return err
	}
	// IDs are recomputed on every core first (the checks below need them).
	idOK := make([]bool, len(blobs))
	parallel(len(blobs), func(i int) { idOK[i] = in.t.keys.ids.Sum(blobs[i].Data) == blobs[i].ID })
	batch := map[[32]byte]BlobType{}
	for i, b := range blobs {
		switch b.Type {
		case DataBlob:
			if len(b.Data) > chunk.MaxSize {
				return invalidf("blob %d: a data blob of %d bytes is over the limit", i, len(b.Data))
			}
		case TreeBlob:
			if len(b.Data) > maxIngestTree {
				return invalidf("blob %d: a tree of %d bytes is over the limit", i, len(b.Data))
			}
		default:
			return invalidf("blob %d: unknown blob type %d", i, b.Type)
		}
		if !idOK[i] {
			return fmt.Errorf("%w: %w: blob %d sent as %x", ErrInvalid, ErrBlobMismatch, i, b.ID[:8])
		}
		if b.Type == TreeBlob {
			if err := in.checkTree(b.Data, batch); err != nil {
				return fmt.Errorf("%w: tree %x: %w", ErrInvalid, b.ID[:8], err)
			}
		}
		batch[b.ID] = b.Type
	}
	// The new blobs are compressed and sealed on every core, then packed
	// in order (a batch is a few MiB: the client sends at most 8 MiB).
	var todo []IngestBlob
	seen := map[[32]byte]bool{}
	for _, b := range blobs {
		if _, ok, err := in.known(b.ID); err != nil || ok || seen[b.ID] {
			if err != nil {
				return in.fail(err)
			}
			continue
		}
		seen[b.ID] = true
		todo = append(todo, b)
	}
	sealed := make([][]byte, len(todo))
	scratch := make([]*[]byte, len(todo))
	parallel(len(todo), func(i int) {
		b := todo[i]
		sealed[i], scratch[i] = sealBlobScratch(in.t.sealKey(b.Type), in.t.id, b.Type, b.ID, b.Data)
	})
	defer func() {
		for _, s := range scratch {
			putScratch(s) // the packer copied what it took
		}
	}()
	for i, b := range todo {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := in.store(ctx, b, sealed[i]); err != nil {
			return err
		}
	}
	return nil
}

// parallel runs f(0..n-1) on up to GOMAXPROCS goroutines.
func parallel(n int, f func(i int)) {
	workers := min(n, runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// checkTree decodes a tree and checks that every blob it references is
// known to the tenant (or earlier in the batch) with the right type.
func (in *Ingest) checkTree(data []byte, batch map[[32]byte]BlobType) error {
	tr, err := tree.Decode(data)
	if err != nil {
		return err
	}
	need := func(id tree.ID, want BlobType) error {
		typ, ok := batch[id]
		if !ok {
			var err error
			if typ, ok, err = in.known(id); err != nil {
				return err
			}
		}
		if !ok || typ != want {
			return fmt.Errorf("references %s blob %x, which the server does not have", want, id[:8])
		}
		return nil
	}
	for i := range tr.Nodes {
		n := &tr.Nodes[i]
		if len(n.Name) > MaxNameLen {
			return fmt.Errorf("%w: entry %d has a name of %d bytes, over the limit of %d", ErrTreeLimit, i, len(n.Name), MaxNameLen)
		}
		for _, id := range n.Content {
			if err := need(id, DataBlob); err != nil {
				return fmt.Errorf("%q %w", n.Name, err)
			}
		}
		if n.Type == tree.Dir {
			if err := need(n.Subtree, TreeBlob); err != nil {
				return fmt.Errorf("%q %w", n.Name, err)
			}
		}
	}
	return nil
}

// store puts one sealed blob into its packer and writes the pack when
// full.
func (in *Ingest) store(ctx context.Context, b IngestBlob, sealed []byte) error {
	p := &in.data
	if b.Type == TreeBlob {
		p = &in.trees
	}
	full := p.add(b.Type, b.ID, sealed, len(b.Data))
	in.pending[b.ID] = b.Type
	in.blobs++
	in.added += int64(len(b.Data))
	in.stored += int64(len(sealed))
	if full == nil {
		return nil
	}
	if b.Type == TreeBlob {
		// Trees only after the data they reference is indexed.
		if err := in.flush(ctx, &in.data); err != nil {
			return err
		}
	}
	return in.write(ctx, full)
}

// flush writes p's partly filled pack, if any.
func (in *Ingest) flush(ctx context.Context, p *packer) error {
	if pp := p.take(); pp != nil {
		return in.write(ctx, pp)
	}
	return nil
}

// write writes and indexes one pack, within the tenant's quota.
func (in *Ingest) write(ctx context.Context, pp *pendingPack) error {
	if in.quota > 0 && in.used+int64(len(pp.data)) > in.quota {
		return in.fail(fmt.Errorf("%w: tenant %q stores %s of its %s quota and this backup needs more; nothing of it was kept",
			ErrQuotaExceeded, in.t.name, humanBytes(in.used), humanBytes(in.quota)))
	}
	info, err := in.t.writePack(ctx, pp)
	if err != nil {
		return in.fail(err)
	}
	in.used += int64(len(pp.data))
	in.written = append(in.written, info)
	in.wblobs = append(in.wblobs, pp.blobs)
	for _, bl := range pp.blobs {
		delete(in.pending, bl.ID)
	}
	pp.recycle()
	return nil
}

// fail breaks the session with err. Over quota, the packs the session wrote
// are dropped, as a local backup does.
func (in *Ingest) fail(err error) error {
	if in.err == nil {
		in.err = err
		if errors.Is(err, ErrQuotaExceeded) && len(in.written) > 0 {
			if derr := in.t.dropPacks(context.Background(), in.written, in.wblobs); derr != nil {
				in.err = fmt.Errorf("%w (removing its partial packs failed: %v; scrub --repair removes them)", err, derr)
			}
			in.written, in.wblobs = nil, nil
		}
	}
	return fmt.Errorf("%w: %w", ErrIngestBroken, in.err)
}

// Commit writes the session's last packs, checks that every blob reachable
// from desc.Tree is indexed for the tenant (refusing with ErrInvalid
// otherwise, and recording nothing), and records the snapshot desc
// describes: Time, Host, Paths, Tags, Excludes, Username, Tree, Parent (a
// snapshot of this tenant, or empty), Program, and the file counts and
// times of Stats. The blob counts of Stats are the server's. The session
// ends whatever the outcome, and is audited as "backup" with "remote=1".
func (in *Ingest) Commit(ctx context.Context, desc *Snapshot) (s *Snapshot, err error) {
	if err := in.usable(); err != nil {
		return nil, err
	}
	t := in.t
	defer func() { t.emitBackup(s, err, in.usedAfter()) }()
	audited := false // commitAudited wrote the entries
	defer func() {
		if !audited {
			err = t.e.audited(ctx, "backup", t.id, "remote=1", err)
		}
		in.end()
	}()
	if desc == nil || len(desc.Paths) == 0 || desc.Time.IsZero() {
		return nil, invalidf("a snapshot needs a time and at least one path")
	}
	root, err := parseTreeID(desc.Tree)
	if err != nil {
		return nil, invalidf("snapshot tree %q is not a tree ID", desc.Tree)
	}
	if err := in.flush(ctx, &in.data); err != nil {
		return nil, err
	}
	if err := in.flush(ctx, &in.trees); err != nil {
		return nil, err
	}
	if err := t.reachable(ctx, root); err != nil {
		return nil, err
	}
	s = &Snapshot{
		Time: desc.Time, Host: desc.Host, Paths: desc.Paths, Tags: desc.Tags, Excludes: desc.Excludes,
		Username: desc.Username, Tree: desc.Tree, Program: desc.Program,
	}
	if s.Program == "" {
		s.Program = ProgramVersion
	}
	if desc.Parent != "" {
		p, err := t.FindSnapshot(ctx, desc.Parent)
		if err != nil {
			return nil, invalidf("parent snapshot %q is not one of the tenant's", desc.Parent)
		}
		s.Parent = p.ID
	}
	st := desc.Stats
	s.Stats = SnapshotStats{
		Start: st.Start, End: st.End, Files: st.Files, Dirs: st.Dirs, Bytes: st.Bytes,
		FilesUnchanged: st.FilesUnchanged, FilesFailed: st.FilesFailed,
		BlobsAdded: in.blobs, BytesAdded: in.added, BytesStored: in.stored,
	}
	if audited, err = t.commitAudited(ctx, s, nil, " remote=1"); err != nil {
		return nil, err
	}
	return s, nil
}

// reachable checks that tree root and every blob it reaches are indexed
// for the tenant with the right types, and that the tree keeps within the
// limits of docs/design.md §6 (depth, path length, entries counted per
// path). Each distinct tree is read once; nothing is expanded into paths.
func (t *Tenant) reachable(ctx context.Context, root tree.ID) error {
	sh, err := t.treeShape(ctx, root, true)
	if err != nil {
		return err
	}
	if err := sh.check("the snapshot's tree"); err != nil {
		return fmt.Errorf("%w: %w; nothing was recorded", ErrInvalid, err)
	}
	return nil
}

// Abort ends a session without a snapshot, if Commit has not ended it:
// blobs in unwritten packs are dropped, packs already written stay indexed
// (a rerun need not resend them). cause is recorded in the audit trail.
// Abort after Commit or Abort does nothing.
func (in *Ingest) Abort(ctx context.Context, cause error) {
	if in.unlock == nil {
		return
	}
	if cause == nil {
		cause = errors.New("ended without commit")
	}
	_ = in.t.e.audited(ctx, "backup", in.t.id, fmt.Sprintf("remote=1 committed=0 blobs=%d", in.blobs), cause)
	if in.err != nil {
		cause = in.err // the session's own failure (its quota ran out, ...) says more
	}
	in.t.emitBackup(nil, cause, -1)
	in.end()
}

// usedAfter is the tenant's stored bytes with the session's packs, or -1
// when they are not counted (the tenant has no quota).
func (in *Ingest) usedAfter() int64 {
	if in.quota > 0 {
		return in.used
	}
	return -1
}

// end drops unwritten packs and releases the tenant lock.
func (in *Ingest) end() {
	for _, p := range []*packer{&in.data, &in.trees} {
		if pp := p.take(); pp != nil {
			pp.recycle()
		}
	}
	in.pending = map[[32]byte]BlobType{}
	if in.unlock != nil {
		in.unlock()
		in.unlock = nil
	}
}
