package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"
)

// PackInfo is what the index keeps about a pack so that it can be read back.
type PackInfo struct {
	ID        PackID
	Container string
	K, M      int
	BlockSize int
	DataLen   int64
	ShardLen  int64
	Drives    []DriveID // drive of shard i
	Hashes    []Hash    // expected BLAKE3-256 of shard i's data
}

// check validates p's fields against each other.
func (p PackInfo) check() error {
	h := ShardHeader{K: p.K, M: p.M, BlockSize: p.BlockSize, DataLen: p.DataLen, ShardLen: p.ShardLen}
	if err := h.check(); err != nil {
		return fmt.Errorf("repo: pack %s: %v", p.ID, err)
	}
	if len(p.Drives) != p.K+p.M || len(p.Hashes) != p.K+p.M {
		return fmt.Errorf("repo: pack %s: %d drives and %d hashes for %d shards", p.ID, len(p.Drives), len(p.Hashes), p.K+p.M)
	}
	return validContainer(p.Container)
}

// header returns the header that shard i of p must carry, except TrailerLen.
func (p PackInfo) header(i int) ShardHeader {
	return ShardHeader{Index: i, K: p.K, M: p.M, Pack: p.ID, BlockSize: p.BlockSize, DataLen: p.DataLen, ShardLen: p.ShardLen}
}

// matches reports whether header h, read from shard i, belongs to p.
func (p PackInfo) matches(h ShardHeader, i int) error {
	want := p.header(i)
	want.TrailerLen = h.TrailerLen
	if h != want {
		return corruptf("shard header %+v does not match pack %s shard %d (%+v)", h, p.ID, i, want)
	}
	return nil
}

// maxPooledBuffer bounds the buffers kept for reuse: a default 16 MiB pack has
// 4 MiB shard files; much larger buffers are left to the garbage collector so that
// one huge pack does not pin memory.
const maxPooledBuffer = 64 << 20

var shardBuffers = sync.Pool{New: func() any { return new([]byte) }}

func getBuffer() *[]byte { return shardBuffers.Get().(*[]byte) }

func putBuffer(b *[]byte) {
	if cap(*b) > maxPooledBuffer {
		return
	}
	*b = (*b)[:0]
	shardBuffers.Put(b)
}

// WritePack writes the K+M shards of enc to the drives chosen by placement, each
// file carrying trailer (the engine's sealed pack header). It returns only when
// every shard is durable, with the PackInfo the index must record. If any shard
// fails, it deletes (best effort) the shards it wrote and returns an error naming
// the drive: the index must not learn of a pack until all its shards are durable.
// enc and trailer are not retained.
func (r *Repo) WritePack(ctx context.Context, container string, id PackID, enc *Encoded, trailer []byte) (PackInfo, error) {
	if err := validContainer(container); err != nil {
		return PackInfo{}, err
	}
	if err := checkEncoded(enc); err != nil {
		return PackInfo{}, fmt.Errorf("write pack %s: %w", id, err)
	}
	if len(trailer) > MaxTrailerLen {
		return PackInfo{}, fmt.Errorf("write pack %s: trailer of %d bytes is longer than %d", id, len(trailer), MaxTrailerLen)
	}
	n := enc.K + enc.M
	placed, err := r.place(id, n)
	if err != nil {
		return PackInfo{}, err
	}
	p := PackInfo{
		ID: id, Container: container, K: enc.K, M: enc.M, BlockSize: r.opts.BlockSize,
		DataLen: enc.DataLen, ShardLen: enc.ShardLen,
		Drives: make([]DriveID, n), Hashes: append([]Hash(nil), enc.Hashes...),
	}
	for i, m := range placed {
		p.Drives[i] = m.ID
	}
	g, gctx := errgroup.WithContext(ctx)
	// One goroutine per shard: each shard goes to a different drive, so the limit
	// is the number of drives written, and all of them must be durable before
	// WritePack returns; running them together makes a pack take as long as its
	// slowest drive rather than the sum of all.
	g.SetLimit(n)
	for i, m := range placed {
		g.Go(func() error {
			h := p.header(i)
			h.TrailerLen = len(trailer)
			buf := getBuffer()
			defer putBuffer(buf)
			file, err := appendShardFile((*buf)[:0], h, enc.Shards[i], trailer)
			if err != nil {
				return err
			}
			*buf = file
			name := ShardName(container, id, i)
			r.headers.evict(cacheKey{m.ID, name})
			if err := m.Drive.Put(gctx, name, file); err != nil {
				return fmt.Errorf("write pack %s shard %d to drive %s: %w", id, i, m.ID, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		// Clean up with a context that outlives a cancelled ctx; a drive that
		// failed may refuse, which leaves an orphan shard for scrub to find.
		r.deleteShards(context.WithoutCancel(ctx), p)
		return PackInfo{}, err
	}
	return p, nil
}

func checkEncoded(enc *Encoded) error {
	if enc == nil {
		return errors.New("repo: nil Encoded")
	}
	if err := checkKM(enc.K, enc.M); err != nil {
		return err
	}
	h := ShardHeader{K: enc.K, M: enc.M, BlockSize: MinBlockSize, DataLen: enc.DataLen, ShardLen: enc.ShardLen}
	if err := h.check(); err != nil {
		return fmt.Errorf("repo: encoded pack: %v", err)
	}
	if len(enc.Shards) != enc.K+enc.M || len(enc.Hashes) != enc.K+enc.M {
		return fmt.Errorf("repo: encoded pack: %d shards and %d hashes, want %d", len(enc.Shards), len(enc.Hashes), enc.K+enc.M)
	}
	for i, s := range enc.Shards {
		if int64(len(s)) != enc.ShardLen {
			return fmt.Errorf("repo: encoded pack: shard %d has %d bytes, want %d", i, len(s), enc.ShardLen)
		}
	}
	return nil
}

// DeletePack removes the shards of p from their drives. Shards on drives out of
// service are skipped. A shard already gone is not an error; the errors of the
// others are joined.
func (r *Repo) DeletePack(ctx context.Context, p PackInfo) error {
	if err := p.check(); err != nil {
		return err
	}
	return r.deleteShards(ctx, p)
}

func (r *Repo) deleteShards(ctx context.Context, p PackInfo) error {
	var (
		mu   sync.Mutex
		errs []error // guarded by mu
		wg   sync.WaitGroup
	)
	// One goroutine per shard, as in WritePack: each is on its own drive.
	for i, d := range p.Drives {
		m, err := r.drive(d)
		if err != nil {
			continue
		}
		wg.Go(func() {
			name := ShardName(p.Container, p.ID, i)
			r.headers.evict(cacheKey{d, name})
			if err := m.Drive.Delete(ctx, name); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("delete pack %s shard %d on drive %s: %w", p.ID, i, d, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
