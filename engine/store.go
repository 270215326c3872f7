package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"

	"coffer/index"
	"coffer/repo"
)

// pendingPack is a full pack waiting to be written.
type pendingPack struct {
	data    []byte
	blobs   []packBlob
	release func()  // frees the packer's buffer slot; nil if it has none
	home    *packer // the packer with slots whose free list takes the buffer back; nil for packBuffers
}

// packer gathers sealed blobs of one tenant and one blob type into packs.
// Data and tree blobs go to separate packs, so reading trees (ls, incremental
// backups) touches few packs. It is safe for concurrent use.
type packer struct {
	size int
	grow bool // allocate small and grow (tree packs), instead of a full pack buffer
	k, m int  // the pack buffer has room for k+m shards
	// parityApart: the pack buffer has room for the k data shards only;
	// the pack writer keeps one parity buffer for every pack it writes
	// (writePackParity), so the filling pack needs no room for parity.
	parityApart bool
	// slots, if set, bounds the pack buffers alive at once (one filling, the
	// others being written): add waits for a written pack to be recycled, so
	// a slow drive slows the backup instead of growing its memory. done
	// ends the wait when the operation is cancelled.
	slots chan struct{}
	done  <-chan struct{}

	mu  sync.Mutex // guards cur
	cur pendingPack

	// A packer with slots keeps its written pack buffers for reuse here
	// (at most len(slots) of them exist): packBuffers, a sync.Pool, would
	// often miss them, since a buffer the pack writer puts lands in its P's
	// private slot, out of reach of a seal worker running on the other P,
	// which then allocates another 24 MiB.
	freeMu sync.Mutex // guards free; taken after mu (newBuffer) or alone (recycle)
	free   [][]byte
}

// packBuffers recycles the pack buffers of packers without slots (a pack is
// written, then its buffer is reused); one of a different size is dropped.
var packBuffers sync.Pool

func (p *packer) newBuffer() []byte {
	want := p.size
	switch {
	case p.k > 0 && p.parityApart:
		want = repo.DataShardsCap(p.k, want) // room for the padding of the last data shard
	case p.k > 0:
		want = repo.EncodedCap(p.k, p.m, want) // room for the parity: encoded in place
	}
	if p.grow {
		return make([]byte, 0, 1<<20) // tree packs are small: grow as needed
	}
	if p.slots != nil {
		select {
		case p.slots <- struct{}{}:
			slots := p.slots
			var once sync.Once
			p.cur.release = func() { once.Do(func() { <-slots }) }
			p.cur.home = p
		case <-p.done:
			return nil
		}
		p.freeMu.Lock()
		defer p.freeMu.Unlock()
		for n := len(p.free); n > 0; n = len(p.free) {
			b := p.free[n-1]
			p.free = p.free[:n-1]
			if cap(b) == want {
				return b[:0]
			}
		}
		return make([]byte, 0, want)
	}
	if b, ok := packBuffers.Get().(*[]byte); ok && cap(*b) == want {
		return (*b)[:0]
	}
	return make([]byte, 0, want)
}

// recycle returns a written pack's buffer for reuse.
func (pp *pendingPack) recycle() {
	b := pp.data[:0]
	pp.data = nil
	if h := pp.home; h != nil {
		h.freeMu.Lock()
		h.free = append(h.free, b)
		h.freeMu.Unlock()
	} else {
		packBuffers.Put(&b) // newBuffer drops it if its capacity does not fit
	}
	if pp.release != nil {
		pp.release()
	}
}

// add appends a sealed blob (copying it) and returns a full pack to write, or
// nil. A blob that would take the open pack past its size closes it first,
// so a pack holds at most size bytes (or one blob larger than that) and its
// buffer never grows.
func (p *packer) add(t BlobType, id [32]byte, sealed []byte, raw int) *pendingPack {
	return p.addFunc(t, id, len(sealed), raw, func(dst []byte) []byte { return append(dst, sealed...) })
}

// addSealed is add for a blob sealed (XChaCha20-Poly1305 under key, with
// ad) straight from comp, its compression code and payload, into the open
// pack: no scratch buffer for the sealed blob and no copy of it. The seal
// runs under the packer's lock; it is short next to the compression before
// it. It returns the full pack to write, or nil, and the sealed length.
func (p *packer) addSealed(t BlobType, id [32]byte, key *[KeySize]byte, ad, comp []byte, raw int) (*pendingPack, int) {
	n := chacha20poly1305.NonceSizeX + len(comp) + chacha20poly1305.Overhead // as sealRaw writes it
	return p.addFunc(t, id, n, raw, func(dst []byte) []byte { return sealRawTo(dst, key, ad, comp) }), n
}

// addFunc is add for a blob of n bytes that fill appends to the pack data.
func (p *packer) addFunc(t BlobType, id [32]byte, n, raw int, fill func(dst []byte) []byte) *pendingPack {
	p.mu.Lock()
	defer p.mu.Unlock()
	var full *pendingPack
	if len(p.cur.blobs) > 0 && len(p.cur.data)+n > p.size {
		done := p.cur
		full = &done
		p.cur = pendingPack{}
	}
	if p.cur.data == nil {
		if p.cur.data = p.newBuffer(); p.cur.data == nil {
			return full // cancelled: the blob is dropped with the operation
		}
	}
	off := len(p.cur.data)
	p.cur.data = fill(p.cur.data)
	if len(p.cur.data)-off != n {
		panic("engine: packer: blob length differs from the one announced")
	}
	p.cur.blobs = append(p.cur.blobs, packBlob{Type: t, ID: id, Offset: uint32(off), Length: uint32(n), Raw: uint32(raw)})
	if full == nil && len(p.cur.data) >= p.size {
		done := p.cur
		full = &done
		p.cur = pendingPack{}
	}
	return full
}

// take returns the partly filled pack, or nil if it is empty.
func (p *packer) take() *pendingPack {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cur.blobs) == 0 {
		return nil
	}
	full := p.cur
	p.cur = pendingPack{}
	return &full
}

// writePack stores a pack and then indexes it. Write order (docs/design.md):
// all k+m shards durable on their drives, then one synced index batch with
// the pack record and every blob location. A crash in between leaves
// unindexed shards that check reports as orphans and scrub --repair removes.
func (t *Tenant) writePack(ctx context.Context, pp *pendingPack) (repo.PackInfo, error) {
	// Backups leave every drive's reserve for prune, repair and shred.
	return t.writePackOpts(ctx, pp, repo.WriteOptions{ReservePercent: t.e.reservePercent()})
}

// writePackOpts is writePack with the drive write options given: prune's
// repack passes a zero reserve (it may use the reserve it frees).
func (t *Tenant) writePackOpts(ctx context.Context, pp *pendingPack, wo repo.WriteOptions) (repo.PackInfo, error) {
	return t.writePackParity(ctx, pp, wo, nil)
}

// writePackParity is writePackOpts for a pack whose buffer may have no room
// for its parity (packer.parityApart): the parity shards then go to
// *parity, a buffer the caller keeps from pack to pack (grown as needed).
// With parity nil, or room in the pack buffer, the pack is encoded in place.
func (t *Tenant) writePackParity(ctx context.Context, pp *pendingPack, wo repo.WriteOptions, parity *[]byte) (repo.PackInfo, error) {
	// pp.data (and *parity) are not touched again until the pack is written.
	cfg := t.e.conf()
	k, m := cfg.K, cfg.M
	var enc *repo.Encoded
	var err error
	if parity == nil || cap(pp.data) >= repo.EncodedCap(k, m, len(pp.data)) {
		enc, err = repo.EncodeInPlace(k, m, pp.data)
	} else {
		enc, *parity, err = repo.EncodeWithParity(k, m, pp.data, *parity)
	}
	if err != nil {
		return repo.PackInfo{}, fmt.Errorf("encode pack: %w", err)
	}
	return t.writeEncoded(ctx, pp, enc, wo)
}

// writeEncoded writes the shards of an encoded pack under a new pack ID and
// then indexes it (the part of writePackOpts after the Reed-Solomon encoding).
func (t *Tenant) writeEncoded(ctx context.Context, pp *pendingPack, enc *repo.Encoded, wo repo.WriteOptions) (repo.PackInfo, error) {
	e := t.e
	cfg := e.conf()
	var id repo.PackID
	randomBytes(id[:])
	hdr := &packHeader{
		Tenant: t.id, Pack: id, K: cfg.K, M: cfg.M, BlockSize: uint32(cfg.BlockSize),
		DataLen: uint64(enc.DataLen), ShardLen: uint64(enc.ShardLen), Created: e.now().Unix(), Blobs: pp.blobs,
	}
	for _, h := range enc.Hashes {
		hdr.Hashes = append(hdr.Hashes, h)
	}
	trailer := sealRaw(&t.keys.meta, headerAD(t.id, id), compress(hdr.encode()))
	info, err := e.rp().WritePackWith(ctx, t.container(), id, enc, trailer, wo)
	if err != nil {
		return repo.PackInfo{}, fmt.Errorf("write pack: %w", err)
	}
	rec := index.PackRec{
		ID: index.PackID(id), K: uint8(info.K), M: uint8(info.M), BlockSize: uint32(info.BlockSize),
		DataLen: uint64(info.DataLen), ShardLen: uint64(info.ShardLen), Blobs: uint32(len(pp.blobs)),
		Created: hdr.Created,
	}
	for i := range info.Drives {
		rec.Drives = append(rec.Drives, index.DriveID(info.Drives[i]))
		rec.Hashes = append(rec.Hashes, index.Hash(info.Hashes[i]))
	}
	b := e.db.NewBatch()
	defer b.Close()
	b.PutPack(t.id, rec)
	for _, bl := range pp.blobs {
		b.PutBlob(t.id, bl.ID, index.BlobLoc{Pack: rec.ID, Type: index.BlobType(bl.Type), Offset: bl.Offset, Length: bl.Length, RawLength: bl.Raw})
	}
	if err := b.Commit(); err != nil {
		return repo.PackInfo{}, fmt.Errorf("index pack %s: %w", id, err)
	}
	return info, nil
}

// dropPacks removes packs this process just wrote and indexed, that nothing
// references yet (a backup rolled back): index entries first, then shards, so
// a crash in between leaves only unindexed shards (notes for check, removed
// by scrub --repair).
func (t *Tenant) dropPacks(ctx context.Context, packs []repo.PackInfo, blobs [][]packBlob) error {
	b := t.e.db.NewBatch()
	defer b.Close()
	for i, p := range packs {
		b.DeletePack(t.id, index.PackID(p.ID))
		for _, bl := range blobs[i] {
			b.DeleteBlob(t.id, bl.ID)
		}
	}
	if err := b.Commit(); err != nil {
		return err
	}
	var errs []error
	for _, p := range packs {
		if err := t.e.rp().DeletePack(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// storedBytes is the tenant's stored data before parity: the sum of its
// packs' lengths.
func (t *Tenant) storedBytes() (int64, error) {
	var n int64
	err := t.e.db.Packs(t.id, func(rec index.PackRec) error {
		n += int64(rec.DataLen)
		return nil
	})
	return n, err
}

func packInfo(container string, rec index.PackRec) repo.PackInfo {
	p := repo.PackInfo{
		ID: repo.PackID(rec.ID), Container: container, K: int(rec.K), M: int(rec.M), BlockSize: int(rec.BlockSize),
		DataLen: int64(rec.DataLen), ShardLen: int64(rec.ShardLen),
	}
	for i := range rec.Drives {
		p.Drives = append(p.Drives, repo.DriveID(rec.Drives[i]))
		p.Hashes = append(p.Hashes, repo.Hash(rec.Hashes[i]))
	}
	return p
}

// readBlob reads, authenticates, decompresses and verifies one blob: its
// plaintext must hash to id under the tenant's ID key. Damaged shards are
// routed around by repo (reconstruction); the caller sees only good bytes.
func (t *Tenant) readBlob(ctx context.Context, typ BlobType, id [32]byte) ([]byte, error) {
	loc, ok, err := t.e.db.Blob(t.id, id)
	if err != nil {
		return nil, fmt.Errorf("look up %s blob %x: %w", typ, id[:8], err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s blob %x is not in the index", ErrDamage, typ, id[:8])
	}
	if BlobType(loc.Type) != typ {
		return nil, fmt.Errorf("%w: blob %x is a %s blob, expected %s", ErrDamage, id[:8], BlobType(loc.Type), typ)
	}
	rec, err := t.e.db.Pack(t.id, loc.Pack)
	if err != nil {
		return nil, fmt.Errorf("%w: pack %s of blob %x: %v", ErrDamage, loc.Pack, id[:8], err)
	}
	return t.readBlobAt(ctx, packInfo(t.container(), rec), typ, id, loc)
}

func (t *Tenant) readBlobAt(ctx context.Context, p repo.PackInfo, typ BlobType, id [32]byte, loc index.BlobLoc) ([]byte, error) {
	return t.readBlobFrom(ctx, p, typ, id, loc, t.e.rp().ReadRange)
}

// readBlobFresh is readBlobAt bypassing the cache of recently read blocks
// (check --read-data verifies what is on the drives now).
func (t *Tenant) readBlobFresh(ctx context.Context, p repo.PackInfo, typ BlobType, id [32]byte, loc index.BlobLoc) ([]byte, error) {
	return t.readBlobFrom(ctx, p, typ, id, loc, t.e.rp().ReadRangeFresh)
}

type rangeReader func(ctx context.Context, p repo.PackInfo, off, n int64, verify func([]byte) error) ([]byte, error)

func (t *Tenant) readBlobFrom(ctx context.Context, p repo.PackInfo, typ BlobType, id [32]byte, loc index.BlobLoc, read rangeReader) ([]byte, error) {
	var plain []byte
	verify := func(sealed []byte) error {
		b, err := openBlob(t.sealKey(typ), t.id, typ, id, sealed, int(loc.RawLength))
		if err != nil {
			return err
		}
		if t.keys.ids.Sum(b) != id {
			return fmt.Errorf("%w: content ID mismatch", ErrAuth)
		}
		plain = b
		return nil
	}
	if _, err := read(ctx, p, int64(loc.Offset), int64(loc.Length), verify); err != nil {
		if errors.Is(err, repo.ErrTooFewShards) {
			return nil, fmt.Errorf("%w: %s blob %x: %v", ErrDamage, typ, id[:8], err)
		}
		return nil, fmt.Errorf("read %s blob %x from pack %s: %w", typ, id[:8], p.ID, err)
	}
	return plain, nil
}

// sealKey returns the key that seals blobs of type t: data blobs under the
// data key, trees under the metadata key.
func (t *Tenant) sealKey(typ BlobType) *[KeySize]byte {
	if typ == TreeBlob {
		return &t.keys.meta
	}
	return &t.keys.data
}

// packCache keeps the pack records a restore has looked up. It holds one
// small entry per pack the snapshot touches.
type packCache struct {
	mu sync.Mutex // guards m
	m  map[index.PackID]repo.PackInfo
}

// get returns the pack record of id, from the cache or the index.
func (c *packCache) get(t *Tenant, id index.PackID) (repo.PackInfo, error) {
	c.mu.Lock()
	p, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return p, nil
	}
	rec, err := t.e.db.Pack(t.id, id)
	if err != nil {
		return repo.PackInfo{}, err
	}
	p = packInfo(t.container(), rec)
	c.mu.Lock()
	c.m[id] = p
	c.mu.Unlock()
	return p, nil
}

// readBlobCached is readBlob for a blob whose location is known, with pack
// records cached in c.
func (t *Tenant) readBlobCached(ctx context.Context, typ BlobType, id [32]byte, loc index.BlobLoc, c *packCache) ([]byte, error) {
	p, err := c.get(t, loc.Pack)
	if errors.Is(err, index.ErrNotFound) {
		// A prune may have repacked the blob since its location was read:
		// look it up again once.
		if fresh, found, lerr := t.e.db.Blob(t.id, id); lerr == nil && found && fresh.Pack != loc.Pack {
			return t.readBlobCached(ctx, typ, id, fresh, c)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: pack %s of blob %x: %v", ErrDamage, loc.Pack, id[:8], err)
	}
	return t.readBlobAt(ctx, p, typ, id, loc)
}
