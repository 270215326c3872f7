package repo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
// file carrying trailer (the engine's sealed pack header), in parallel. It
// returns once every shard it could place has been attempted and at least
// Options.WriteQuorum (default K+1) of them are durable. Shards that could not
// be written (too few drives in service, or a failed put) have a zero DriveID
// in the returned PackInfo: the pack is below full redundancy and scrub
// --repair writes them later. With fewer than the quorum durable, it deletes
// (best effort) the shards it wrote and returns an error naming the drives: the
// index must not learn of such a pack. enc and trailer are not retained.
//
// Why K+1: with K shards the pack is readable but any one further loss
// destroys it; one extra shard keeps a margin of one failure until repair,
// while a backup still succeeds with up to M-1 drives down or failing.
func (r *Repo) WritePack(ctx context.Context, container string, id PackID, enc *Encoded, trailer []byte) (PackInfo, error) {
	return r.WritePackWith(ctx, container, id, enc, trailer, WriteOptions{})
}

// WriteOptions adjust WritePackWith.
type WriteOptions struct {
	// ReservePercent is the share of a drive's size that must stay free
	// after the shard is written; a drive with less is skipped as if it were
	// out of service. Backups set it; prune, repair and shred do not, so a
	// full drive never stops the clean-up that would free it. Drives that
	// cannot report their space (no SpaceReporter) are not skipped.
	ReservePercent int
}

// SpaceReporter is an optional ability of a Drive, found by type assertion:
// Free returns the bytes available to new objects and the drive's size.
type SpaceReporter interface {
	Free(ctx context.Context) (avail, total int64, err error)
}

// InodeReporter is an optional ability of a Drive, found by type assertion:
// FreeInodes returns the files that can still be created and the file
// system's total (0 when it has no fixed number, like btrfs).
type InodeReporter interface {
	FreeInodes(ctx context.Context) (avail, total int64, err error)
}

// belowReserve reports whether writing an object of size bytes would leave
// drive d with less than pct percent of its bytes or of its inodes free.
// A drive that cannot tell (no such ability, or an error) is not below.
func belowReserve(ctx context.Context, d Drive, size int64, pct int) bool {
	if sr, ok := d.(SpaceReporter); ok {
		if avail, total, err := sr.Free(ctx); err == nil && avail-size < total/100*int64(pct) {
			return true
		}
	}
	if ir, ok := d.(InodeReporter); ok {
		// A put takes one inode, plus a few folders the first time.
		if avail, total, err := ir.FreeInodes(ctx); err == nil && total > 0 && avail-8 < total/100*int64(pct) {
			return true
		}
	}
	return false
}

// healthyCount returns how many of ms writes do not avoid.
func (r *Repo) healthyCount(ms []*Member) int {
	n := 0
	for _, m := range ms {
		if !r.health.avoid(m.ID) {
			n++
		}
	}
	return n
}

// ErrDriveFull reports that too few drives have room outside their reserve.
var ErrDriveFull = errors.New("repo: drives are full")

// WritePackWith is WritePack with options.
func (r *Repo) WritePackWith(ctx context.Context, container string, id PackID, enc *Encoded, trailer []byte, o WriteOptions) (PackInfo, error) {
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
	quorum := r.quorum(enc.K, enc.M)
	if len(r.usable) < quorum {
		return PackInfo{}, fmt.Errorf("place pack %s: %w: %d drives in service, a pack needs at least %d of its %d shards written",
			id, ErrTooFewDrives, len(r.usable), quorum, n)
	}
	candidates := r.usable
	if o.ReservePercent > 0 {
		var full []string
		candidates = nil
		size := enc.ShardLen + int64(len(trailer)) + FixedHeaderLen
		for _, m := range r.usable {
			if belowReserve(ctx, m.Drive, size, o.ReservePercent) {
				full = append(full, m.ID.String())
				continue
			}
			candidates = append(candidates, m)
		}
		if len(candidates) < quorum {
			return PackInfo{}, fmt.Errorf("place pack %s: %w: drive %s keep less free space (or fewer free inodes) than their %d%% reserve, which only prune, repair and shred may use",
				id, ErrDriveFull, strings.Join(full, ", "), o.ReservePercent)
		}
	}
	// Suspect drives come last: while enough others reach the quorum they
	// are not written (their shards stay unwritten, for scrub --repair);
	// with too few others they are tried like any drive.
	ranked := r.health.healthyFirst(spread(candidates, append([]byte("pack\x00"), id[:]...), len(candidates)))
	usable := len(ranked)
	if healthy := r.healthyCount(ranked); healthy >= quorum {
		usable = healthy
	}
	placed := ranked[:min(n, usable)]
	spares := ranked[len(placed):]
	p := PackInfo{
		ID: id, Container: container, K: enc.K, M: enc.M, BlockSize: r.opts.BlockSize,
		DataLen: enc.DataLen, ShardLen: enc.ShardLen,
		Drives: make([]DriveID, n), Hashes: append([]Hash(nil), enc.Hashes...),
	}
	errs := make([]error, len(placed))
	var wg sync.WaitGroup
	// One goroutine per shard: each shard goes to a different drive, so the
	// number of goroutines is the number of drives written; running them
	// together makes a pack take as long as its slowest drive rather than the
	// sum of all.
	for i, m := range placed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.putShard(ctx, p, i, m, enc.Shards[i], trailer)
		}()
	}
	wg.Wait()
	var failed []error
	for i, m := range placed {
		if errs[i] == nil {
			p.Drives[i] = m.ID
		} else {
			failed = append(failed, errs[i])
		}
	}
	// Below the quorum, failed shards (lowest index first) move to drives in
	// service that hold no shard of the pack, in placement order (racks
	// round-robin), until the quorum is met or no such drive is left: a
	// whole server or rack that vanished mid-backup does not stop it while
	// the other racks have spare drives. Shards beyond the quorum stay
	// unwritten for scrub --repair, which puts them in the emptiest rack.
	for len(placed)-len(failed) < quorum && len(spares) > 0 && ctx.Err() == nil {
		var moved []int
		for i := range placed {
			if errs[i] != nil && len(moved) < min(quorum-(len(placed)-len(failed)), len(spares)) {
				moved = append(moved, i)
			}
		}
		for j, i := range moved {
			m := spares[j]
			wg.Go(func() {
				if err := r.putShard(ctx, p, i, m, enc.Shards[i], trailer); err != nil {
					errs[i] = errors.Join(errs[i], err)
				} else {
					errs[i] = nil
					p.Drives[i] = m.ID
				}
			})
		}
		wg.Wait()
		spares = spares[len(moved):]
		failed = failed[:0]
		for i := range placed {
			if errs[i] != nil {
				failed = append(failed, errs[i])
			}
		}
	}
	if err := ctx.Err(); err != nil || len(placed)-len(failed) < quorum {
		// Clean up with a context that outlives a cancelled ctx; a drive that
		// failed may refuse, which leaves an orphan shard for scrub to find.
		r.deleteShards(context.WithoutCancel(ctx), p)
		if err != nil {
			return PackInfo{}, err
		}
		return PackInfo{}, fmt.Errorf("write pack %s: only %d of %d shards durable, need %d: %w",
			id, len(placed)-len(failed), n, quorum, errors.Join(failed...))
	}
	return p, nil
}

// quorum is how many shards of a pack must be durable for WritePack to succeed.
func (r *Repo) quorum(k, m int) int {
	if r.opts.WriteQuorum > 0 {
		return min(max(r.opts.WriteQuorum, k), k+m)
	}
	return min(k+1, k+m)
}

// putShard writes shard i of p to member m.
func (r *Repo) putShard(ctx context.Context, p PackInfo, i int, m *Member, data, trailer []byte) error {
	h := p.header(i)
	h.TrailerLen = len(trailer)
	name := ShardName(p.Container, p.ID, i)
	r.evictShard(m.ID, name)
	var err error
	if pp, ok := m.Drive.(PartsPutter); ok {
		// Header and block table, then the shard data and the trailer as
		// they are: no copy of the shard into a file buffer.
		var head []byte
		if head, err = appendShardHead(nil, h, data, trailer); err == nil {
			err = pp.PutParts(ctx, name, head, data, trailer)
		}
	} else {
		buf := getBuffer()
		defer putBuffer(buf)
		var file []byte
		if file, err = appendShardFile((*buf)[:0], h, data, trailer); err == nil {
			*buf = file
			err = m.Drive.Put(ctx, name, file)
		}
	}
	if err := r.noted(ctx, m.ID, err); err != nil {
		return fmt.Errorf("write pack %s shard %d to drive %s: %w", p.ID, i, m.ID, err)
	}
	return nil
}

// Degraded reports the shard indices of p that have no drive (never written)
// or whose drive is out of service: the shards scrub --repair must rewrite.
func (r *Repo) Degraded(p PackInfo) []int {
	var out []int
	for i, d := range p.Drives {
		if m, ok := r.byID[d]; d == (DriveID{}) || !ok || m.Failed {
			out = append(out, i)
		}
	}
	return out
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
			r.evictShard(d, name)
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
