package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/reedsolomon"
	"github.com/zeebo/blake3"
)

// ErrTooFewShards reports a read for which fewer than K good shards remain.
var ErrTooFewShards = errors.New("repo: too few good shards")

// maxTamperTries bounds the shard combinations ReadRange tries when verify rejects
// bytes whose CRCs all passed: sum of C(K+M, j) for j <= M is 21 for K=4, M=2, but
// explodes for wide codes.
const maxTamperTries = 1024

// shardMeta returns the header and block table of shard i of p, from the cache or
// read from its drive, checked against p.
func (r *Repo) shardMeta(ctx context.Context, m *Member, p PackInfo, i int) (*shardMeta, string, error) {
	name := ShardName(p.Container, p.ID, i)
	key := cacheKey{m.ID, name}
	if meta := r.headers.get(key); meta != nil {
		return meta, name, nil
	}
	want := p.header(i)
	buf := make([]byte, want.DataOffset())
	if err := m.Drive.ReadAt(ctx, name, buf, 0); err != nil {
		return nil, name, fmt.Errorf("read header of %s on drive %s: %w", name, m.ID, err)
	}
	h, crcs, err := DecodeShardHeader(buf)
	if err == nil {
		err = p.matches(h, i)
	}
	if err != nil {
		return nil, name, fmt.Errorf("%s on drive %s: %w", name, m.ID, err)
	}
	meta := &shardMeta{h: h, crcs: crcs}
	r.headers.put(key, meta)
	return meta, name, nil
}

// readBlocks reads bytes [ba, bb) of shard i's data, where ba is a multiple of the
// block size and bb one too or the shard length, and checks their block CRCs.
func (r *Repo) readBlocks(ctx context.Context, p PackInfo, i int, ba, bb int64, useCache bool) ([]byte, error) {
	m, err := r.drive(p.Drives[i])
	if err != nil {
		return nil, err
	}
	meta, name, err := r.shardMeta(ctx, m, p, i)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, bb-ba)
	first := ba / int64(p.BlockSize)
	if useCache && r.blocks.copyRange(m.ID, name, first, p.BlockSize, buf) {
		return buf, nil
	}
	err = m.Drive.ReadAt(ctx, name, buf, meta.h.DataOffset()+ba)
	if err == nil {
		err = checkBlocks(buf, int(first), p.BlockSize, meta.crcs)
	}
	if err != nil {
		// The cached header may be stale (the shard was rewritten) or the file
		// damaged: read it afresh next time.
		r.evictShard(m.ID, name)
		return nil, fmt.Errorf("read %s [%d,%d) on drive %s: %w", name, ba, bb, m.ID, err)
	}
	if len(buf) <= 2*p.BlockSize {
		// Only small reads are cached: they are the ones whose neighbours
		// (small blobs of small files) read the same blocks again. A large
		// read is a large blob, read once.
		r.blocks.putRange(m.ID, name, first, p.BlockSize, buf)
	}
	return buf, nil
}

// piece is the part of a requested range that lies in one data shard.
type piece struct {
	shard  int
	ba, bb int64 // block-aligned shard-local range that is read
	lo, hi int64 // shard-local range wanted, inside [ba, bb)
	out    int64 // offset of lo in the result
}

type pieceKey struct {
	shard  int
	ba, bb int64
}

// rangeRead is the state of one ReadRange call.
type rangeRead struct {
	r     *Repo
	p     PackInfo
	enc   reedsolomon.Encoder
	fresh bool // read every block from its drive, not from the block cache

	mu    sync.Mutex
	bad   []error             // per shard: why it is unusable in this read; guarded by mu
	bytes map[pieceKey][]byte // CRC-checked shard bytes already read; guarded by mu
}

func (rr *rangeRead) isBad(i int) bool {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return rr.bad[i] != nil
}

// get returns shard i's bytes [ba, bb), read at most once per call of ReadRange.
func (rr *rangeRead) get(ctx context.Context, i int, ba, bb int64) ([]byte, error) {
	k := pieceKey{i, ba, bb}
	rr.mu.Lock()
	if b, ok := rr.bytes[k]; ok {
		rr.mu.Unlock()
		return b, nil
	}
	if err := rr.bad[i]; err != nil {
		rr.mu.Unlock()
		return nil, err
	}
	rr.mu.Unlock()
	b, err := rr.r.readBlocks(ctx, rr.p, i, ba, bb, !rr.fresh)
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil && rr.bad[i] == nil {
			rr.bad[i] = err
		}
		return nil, err
	}
	rr.bytes[k] = b
	return b, nil
}

// getAll reads the given shards' bytes [ba, bb) in parallel (one goroutine per
// shard, each on its own drive) and returns the ones that read and checked well.
func (rr *rangeRead) getAll(ctx context.Context, shards []int, ba, bb int64) map[int][]byte {
	out := make(map[int][]byte, len(shards))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, i := range shards {
		wg.Go(func() {
			if b, err := rr.get(ctx, i, ba, bb); err == nil {
				mu.Lock()
				out[i] = b
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// reconstruct rebuilds shard i's bytes [ba, bb) from K other shards that are
// neither bad nor in exclude.
func (rr *rangeRead) reconstruct(ctx context.Context, i int, ba, bb int64, exclude []bool) ([]byte, error) {
	n := rr.p.K + rr.p.M
	shards := make([][]byte, n)
	have := 0
	tried := make([]bool, n)
	for have < rr.p.K {
		// Ask for exactly as many shards as are still missing, data shards first
		// (they are read anyway by neighbouring requests), then parity.
		var batch []int
		for j := 0; j < n && len(batch) < rr.p.K-have; j++ {
			if j != i && !tried[j] && !exclude[j] && !rr.isBad(j) {
				batch = append(batch, j)
				tried[j] = true
			}
		}
		if len(batch) == 0 {
			break
		}
		for j, b := range rr.getAll(ctx, batch, ba, bb) {
			shards[j] = b
			have++
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	if have < rr.p.K {
		return nil, rr.tooFew(have)
	}
	shards[i] = make([]byte, 0, bb-ba) // ReconstructSome fills a zero-length shard in place
	required := make([]bool, rr.p.K+rr.p.M)
	required[i] = true
	if err := rr.enc.ReconstructSome(shards, required); err != nil {
		return nil, fmt.Errorf("reconstruct pack %s shard %d: %w", rr.p.ID, i, err)
	}
	return shards[i], nil
}

func (rr *rangeRead) tooFew(have int) error {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	var bad []string
	for i, err := range rr.bad {
		if err != nil {
			bad = append(bad, fmt.Sprintf("shard %d on drive %s: %v", i, rr.p.Drives[i], err))
		}
	}
	return fmt.Errorf("read pack %s: %d usable shards, need %d; bad: %s: %w",
		rr.p.ID, have, rr.p.K, strings.Join(bad, "; "), ErrTooFewShards)
}

// assemble builds the requested bytes, reading each piece from its data shard
// unless that shard is bad or excluded, in which case it is reconstructed.
func (rr *rangeRead) assemble(ctx context.Context, pieces []piece, n int64, exclude []bool) ([]byte, error) {
	out := make([]byte, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error // guarded by mu
	)
	// One goroutine per piece (at most K, each in its own data shard), so the
	// pieces' direct reads, and any reconstruction, go out together.
	for _, pc := range pieces {
		wg.Go(func() {
			var b []byte
			var err error
			if !exclude[pc.shard] && !rr.isBad(pc.shard) {
				b, err = rr.get(ctx, pc.shard, pc.ba, pc.bb)
			}
			if b == nil {
				b, err = rr.reconstruct(ctx, pc.shard, pc.ba, pc.bb, exclude)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			copy(out[pc.out:], b[pc.lo-pc.ba:pc.hi-pc.ba])
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return out, nil
}

// ReadRange returns pack bytes [off, off+n).
//
// It reads only the data shard bytes that hold the range, widened to whole blocks
// so that their CRCs can be checked (each shard's header and block table are read
// once and cached). A data shard that is missing, unreadable, or fails its header
// or block CRC checks is replaced by reconstruction: the same block range is read
// from K other shards and Reed-Solomon rebuilds the missing bytes (it works
// position by position, so a sub-range reconstructs on its own).
//
// verify, if not nil, is called with the assembled bytes (it must not retain
// them); when it returns an error although every CRC passed (a shard was rewritten
// together with its CRCs), ReadRange tries reconstructions that leave out each
// shard, then each pair, up to M shards, until verify accepts. verify may be called
// several times, from one goroutine at a time.
//
// Up to M bad shards are never an error. With fewer than K good shards the error
// wraps ErrTooFewShards and names the pack and the bad drives; when no combination
// passes verify, it wraps ErrCorrupt and verify's first error. The returned slice
// belongs to the caller.
func (r *Repo) ReadRange(ctx context.Context, p PackInfo, off, n int64, verify func([]byte) error) ([]byte, error) {
	return r.readRange(ctx, p, off, n, verify, false)
}

// ReadRangeFresh is ReadRange reading every block from its drive, never from
// the cache of recently read blocks: for checks that must see what is on the
// drives now.
func (r *Repo) ReadRangeFresh(ctx context.Context, p PackInfo, off, n int64, verify func([]byte) error) ([]byte, error) {
	return r.readRange(ctx, p, off, n, verify, true)
}

func (r *Repo) readRange(ctx context.Context, p PackInfo, off, n int64, verify func([]byte) error, fresh bool) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	if off < 0 || n < 0 || off > p.DataLen || n > p.DataLen-off {
		return nil, fmt.Errorf("repo: read pack %s: range [%d,%d) outside its %d bytes", p.ID, off, off+n, p.DataLen)
	}
	if n == 0 {
		out := []byte{}
		if verify != nil {
			if err := verify(out); err != nil {
				return nil, fmt.Errorf("read pack %s: %w", p.ID, errors.Join(ErrCorrupt, err))
			}
		}
		return out, nil
	}
	enc, err := encoderFor(p.K, p.M)
	if err != nil {
		return nil, err
	}
	pieces := p.pieces(off, n)
	rr := &rangeRead{r: r, p: p, enc: enc, fresh: fresh, bad: make([]error, p.K+p.M), bytes: map[pieceKey][]byte{}}
	none := make([]bool, p.K+p.M)
	out, err := rr.assemble(ctx, pieces, n, none)
	if err != nil {
		return nil, err
	}
	if verify == nil {
		return out, nil
	}
	firstErr := verify(out)
	if firstErr == nil {
		return out, nil
	}
	// Verification failed although every CRC passed: some shard was rewritten
	// along with its CRCs. Leave out shards, fewest first, until verify accepts.
	seen := map[Hash]bool{blake3.Sum256(out): true}
	tries := 0
	n0 := p.K + p.M
	for size := 1; size <= p.M; size++ {
		for _, excl := range combinations(n0, size) {
			if tries >= maxTamperTries {
				break
			}
			exclude := make([]bool, n0)
			skip := false
			for _, i := range excl {
				exclude[i] = true
				if rr.isBad(i) {
					skip = true // already unused; this combination adds nothing
				}
			}
			if skip {
				continue
			}
			tries++
			cand, err := rr.assemble(ctx, pieces, n, exclude)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				continue // too few shards left with these excluded
			}
			h := blake3.Sum256(cand)
			if seen[h] {
				continue
			}
			seen[h] = true
			if verify(cand) == nil {
				return cand, nil
			}
		}
	}
	return nil, fmt.Errorf("read pack %s [%d,%d): no combination of shards passes verification: %w",
		p.ID, off, off+n, errors.Join(ErrCorrupt, firstErr))
}

// pieces splits pack range [off, off+n) (n > 0) by data shard.
func (p PackInfo) pieces(off, n int64) []piece {
	var out []piece
	s, b := p.ShardLen, int64(p.BlockSize)
	for pos, end := off, off+n; pos < end; {
		i := pos / s
		lo := pos - i*s
		hi := min(end-i*s, s)
		out = append(out, piece{
			shard: int(i),
			ba:    lo / b * b,
			bb:    min((hi+b-1)/b*b, s),
			lo:    lo, hi: hi,
			out: pos - off,
		})
		pos = i*s + hi
	}
	return out
}

// combinations returns every k-element subset of 0..n-1 in lexicographic order.
func combinations(n, k int) [][]int {
	var out [][]int
	cur := make([]int, 0, k)
	var rec func(start int)
	rec = func(start int) {
		if len(cur) == k {
			out = append(out, slices.Clone(cur))
			return
		}
		for i := start; i <= n-(k-len(cur)); i++ {
			cur = append(cur, i)
			rec(i + 1)
			cur = cur[:len(cur)-1]
		}
	}
	rec(0)
	return out
}

// ReadTrailer returns the trailer of the first shard of p that reads and passes its
// header check (the trailer is the engine's sealed pack header and carries its own
// authentication). Use ReadTrailerVerified to fall back to other shards when the
// trailer itself fails the caller's check.
func (r *Repo) ReadTrailer(ctx context.Context, p PackInfo) ([]byte, error) {
	return r.ReadTrailerVerified(ctx, p, nil)
}

// ReadTrailerVerified is ReadTrailer that also skips shards whose trailer verify
// (if not nil) rejects. verify must not retain its argument.
func (r *Repo) ReadTrailerVerified(ctx context.Context, p PackInfo, verify func([]byte) error) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	var errs []error
	for i, d := range p.Drives {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t, err := r.readTrailer(ctx, p, i, d)
		if err == nil && verify != nil {
			if verr := verify(t); verr != nil {
				err = fmt.Errorf("trailer of pack %s shard %d on drive %s: %w", p.ID, i, d, errors.Join(ErrCorrupt, verr))
			}
		}
		if err == nil {
			return t, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("read trailer of pack %s: no shard has a good one: %w", p.ID, errors.Join(errs...))
}

func (r *Repo) readTrailer(ctx context.Context, p PackInfo, i int, d DriveID) ([]byte, error) {
	m, err := r.drive(d)
	if err != nil {
		return nil, err
	}
	meta, name, err := r.shardMeta(ctx, m, p, i)
	if err != nil {
		return nil, err
	}
	t := make([]byte, meta.h.TrailerLen)
	if err := m.Drive.ReadAt(ctx, name, t, meta.h.TrailerOffset()); err != nil {
		r.evictShard(m.ID, name)
		return nil, fmt.Errorf("read trailer of %s on drive %s: %w", name, d, err)
	}
	return t, nil
}

// ReadShardTrailer reads the header and trailer of one shard file without knowing
// its PackInfo (to rebuild the index from the drives). The header and block table
// are checked; the shard data is not read.
func (r *Repo) ReadShardTrailer(ctx context.Context, d DriveID, container string, id PackID, index int) (hdr ShardHeader, trailer []byte, err error) {
	if err := validContainer(container); err != nil {
		return ShardHeader{}, nil, err
	}
	m, err := r.drive(d)
	if err != nil {
		return ShardHeader{}, nil, err
	}
	name := ShardName(container, id, index)
	fixed := make([]byte, FixedHeaderLen)
	if err := m.Drive.ReadAt(ctx, name, fixed, 0); err != nil {
		return ShardHeader{}, nil, fmt.Errorf("read header of %s on drive %s: %w", name, d, err)
	}
	h, err := decodeFixedHeader(fixed)
	if err != nil {
		return ShardHeader{}, nil, fmt.Errorf("%s on drive %s: %w", name, d, err)
	}
	prefix := make([]byte, h.DataOffset())
	copy(prefix, fixed)
	if err := m.Drive.ReadAt(ctx, name, prefix[FixedHeaderLen:], FixedHeaderLen); err != nil {
		return ShardHeader{}, nil, fmt.Errorf("read block table of %s on drive %s: %w", name, d, err)
	}
	if _, _, err := DecodeShardHeader(prefix); err != nil {
		return ShardHeader{}, nil, fmt.Errorf("%s on drive %s: %w", name, d, err)
	}
	if h.Index != index || h.Pack != id {
		return ShardHeader{}, nil, fmt.Errorf("%s on drive %s: header says pack %s shard %d: %w", name, d, h.Pack, h.Index, ErrCorrupt)
	}
	t := make([]byte, h.TrailerLen)
	if err := m.Drive.ReadAt(ctx, name, t, h.TrailerOffset()); err != nil {
		return ShardHeader{}, nil, fmt.Errorf("read trailer of %s on drive %s: %w", name, d, err)
	}
	return h, t, nil
}

// verifyChunk is how much of a shard VerifyShard reads at a time (a multiple of
// every block size up to 1 MiB; larger blocks are read one at a time).
const verifyChunk = 1 << 20

// VerifyShard reads the whole of shard i of p and checks its size, header, block
// CRCs and BLAKE3 hash against p.Hashes[i]. Errors wrap ErrNotFound (no such shard,
// or its drive is out of service) or ErrCorrupt.
func (r *Repo) VerifyShard(ctx context.Context, p PackInfo, i int) error {
	_, err := r.scanShard(ctx, p, i, false)
	return err
}

// ReadShardVerified reads the whole of shard i of p, checks it as VerifyShard
// does, and returns its data (ShardLen bytes).
func (r *Repo) ReadShardVerified(ctx context.Context, p PackInfo, i int) ([]byte, error) {
	return r.scanShard(ctx, p, i, true)
}

// scanShard checks shard i of p as VerifyShard does, returning its data if keep.
func (r *Repo) scanShard(ctx context.Context, p PackInfo, i int, keep bool) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	if i < 0 || i >= p.K+p.M {
		return nil, fmt.Errorf("repo: pack %s has no shard %d", p.ID, i)
	}
	m, err := r.drive(p.Drives[i])
	if err != nil {
		return nil, fmt.Errorf("verify pack %s shard %d: %w", p.ID, i, err)
	}
	name := ShardName(p.Container, p.ID, i)
	r.evictShard(m.ID, name) // read the header from the drive, not the cache
	meta, _, err := r.shardMeta(ctx, m, p, i)
	if err != nil {
		return nil, fmt.Errorf("verify pack %s shard %d: %w", p.ID, i, err)
	}
	size, err := m.Drive.Size(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("verify %s on drive %s: %w", name, m.ID, err)
	}
	if size != meta.h.FileSize() {
		return nil, fmt.Errorf("verify %s on drive %s: %d bytes, header says %d: %w", name, m.ID, size, meta.h.FileSize(), ErrCorrupt)
	}
	chunk := max(int64(verifyChunk)/int64(p.BlockSize)*int64(p.BlockSize), int64(p.BlockSize))
	var data []byte
	if keep {
		data = make([]byte, 0, p.ShardLen)
	}
	buf := make([]byte, min(chunk, p.ShardLen))
	hasher := blake3.New()
	for pos := int64(0); pos < p.ShardLen; pos += chunk {
		b := buf[:min(chunk, p.ShardLen-pos)]
		if err := m.Drive.ReadAt(ctx, name, b, meta.h.DataOffset()+pos); err != nil {
			return nil, fmt.Errorf("verify %s on drive %s: %w", name, m.ID, err)
		}
		if err := checkBlocks(b, int(pos/int64(p.BlockSize)), p.BlockSize, meta.crcs); err != nil {
			return nil, fmt.Errorf("verify %s on drive %s: %w", name, m.ID, err)
		}
		hasher.Write(b)
		if keep {
			data = append(data, b...)
		}
	}
	var got Hash
	hasher.Sum(got[:0])
	if got != p.Hashes[i] {
		return nil, fmt.Errorf("verify %s on drive %s: hash %s, index says %s: %w", name, m.ID, got, p.Hashes[i], ErrCorrupt)
	}
	return data, nil
}

// RewriteShard rebuilds shard i of p from K other shards, each read whole and
// checked against p.Hashes, checks the result against p.Hashes[i], and puts it on
// drive to (which must be in service) under the same name. trailer is the pack's
// trailer; if nil, the trailer of another shard is copied. The caller records the
// new drive of shard i in its PackInfo.
func (r *Repo) RewriteShard(ctx context.Context, p PackInfo, i int, to DriveID, trailer []byte) error {
	if err := p.check(); err != nil {
		return err
	}
	if i < 0 || i >= p.K+p.M {
		return fmt.Errorf("repo: pack %s has no shard %d", p.ID, i)
	}
	dst, err := r.drive(to)
	if err != nil {
		return fmt.Errorf("rewrite pack %s shard %d: %w", p.ID, i, err)
	}
	enc, err := encoderFor(p.K, p.M)
	if err != nil {
		return err
	}
	if trailer == nil {
		var errs []error
		for j, d := range p.Drives {
			if j == i {
				continue
			}
			if trailer, err = r.readTrailer(ctx, p, j, d); err == nil {
				break
			}
			errs = append(errs, err)
		}
		if trailer == nil {
			return fmt.Errorf("rewrite pack %s shard %d: no trailer to copy: %w", p.ID, i, errors.Join(errs...))
		}
	}
	shards := make([][]byte, p.K+p.M)
	have := 0
	var errs []error
	for j := 0; j < p.K+p.M && have < p.K; j++ {
		if j == i {
			continue
		}
		data, err := r.scanShard(ctx, p, j, true)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, err)
			continue
		}
		shards[j] = data
		have++
	}
	if have < p.K {
		return fmt.Errorf("rewrite pack %s shard %d: %d good shards, need %d: %w", p.ID, i, have, p.K,
			errors.Join(append([]error{ErrTooFewShards}, errs...)...))
	}
	shards[i] = make([]byte, 0, p.ShardLen)
	required := make([]bool, p.K+p.M)
	required[i] = true
	if err := enc.ReconstructSome(shards, required); err != nil {
		return fmt.Errorf("rewrite pack %s shard %d: reconstruct: %w", p.ID, i, err)
	}
	if got := Hash(blake3.Sum256(shards[i])); got != p.Hashes[i] {
		return fmt.Errorf("rewrite pack %s shard %d: rebuilt shard hashes to %s, index says %s: %w", p.ID, i, got, p.Hashes[i], ErrCorrupt)
	}
	h := p.header(i)
	h.TrailerLen = len(trailer)
	file, err := EncodeShardFile(h, shards[i], trailer)
	if err != nil {
		return err
	}
	name := ShardName(p.Container, p.ID, i)
	r.evictShard(to, name)
	if err := r.noted(ctx, to, dst.Drive.Put(ctx, name, file)); err != nil {
		return fmt.Errorf("rewrite pack %s shard %d to drive %s: %w", p.ID, i, to, err)
	}
	return nil
}

// ListShards calls fn for every shard object on every drive in service, one drive
// after another, from one goroutine, without collecting them in memory. An error
// from fn stops the listing and is returned. A drive that fails to list does not
// stop the others; its error, naming it, is returned (joined) at the end.
func (r *Repo) ListShards(ctx context.Context, fn func(d DriveID, container string, id PackID, index int, size int64) error) error {
	var errs []error
	for _, m := range r.usable {
		var fnErr error
		err := m.Drive.List(ctx, "t/", func(name string, size int64) error {
			c, id, idx, ok := ParseShardName(name)
			if !ok {
				return nil
			}
			if err := fn(m.ID, c, id, idx, size); err != nil {
				fnErr = err
				return err
			}
			return nil
		})
		if fnErr != nil {
			return fnErr
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, fmt.Errorf("list shards on drive %s: %w", m.ID, err))
		}
	}
	return errors.Join(errs...)
}
