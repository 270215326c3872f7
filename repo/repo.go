package repo

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/zeebo/blake3"
)

// Member is one drive of the repository.
type Member struct {
	ID    DriveID
	Rack  string
	Drive Drive // may be nil when Failed
	// Failed marks a drive out of service: it is never written and never read.
	// Its shards count as missing and are reconstructed from the others.
	Failed bool
}

// Options configure a Repo. Zero fields take their defaults.
type Options struct {
	K         int // data shards per pack; default 4
	M         int // parity shards per pack; default 2; at least 1
	BlockSize int // bytes per checksummed block of a shard; default 65536
	// WriteQuorum is how many shards of a pack must be durable for a write to
	// succeed; default K+1, bounded to K..K+M.
	WriteQuorum int
	// Health remembers suspect drives across Repos of the same drive set;
	// nil means a new one for this Repo only.
	Health *Health
}

// Defaults for Options.K and Options.M.
const (
	DefaultK = 4
	DefaultM = 2
)

// withDefaults returns o with zero fields replaced by their defaults.
func (o Options) withDefaults() Options {
	if o.K == 0 {
		o.K = DefaultK
	}
	if o.M == 0 {
		o.M = DefaultM
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	return o
}

// Validate checks the options after defaults are filled in. M must be at least 1:
// a repository without parity could not survive one lost drive, which every
// promise built on it (scrub and repair, replicated records) assumes.
func (o Options) Validate() error {
	o = o.withDefaults()
	switch {
	case o.K < 1:
		return fmt.Errorf("repo: options: K = %d data shards, want at least 1", o.K)
	case o.M < 1:
		return fmt.Errorf("repo: options: M = %d parity shards, want at least 1", o.M)
	case o.K+o.M > MaxShards:
		return fmt.Errorf("repo: options: K+M = %d shards, want at most %d", o.K+o.M, MaxShards)
	case !validBlockSize(o.BlockSize):
		return fmt.Errorf("repo: options: block size %d, want a power of two from %d to %d", o.BlockSize, MinBlockSize, MaxBlockSize)
	}
	return nil
}

// ErrTooFewDrives reports fewer usable drives than an operation needs.
var ErrTooFewDrives = errors.New("repo: too few usable drives")

// Repo is a repository's set of drives: it places, writes, reads and reconstructs
// the shards of packs, and replicates small records. The member list is fixed at
// New; to change it (a drive failed or was added), build a new Repo. All methods
// are safe for concurrent use.
type Repo struct {
	opts    Options
	members []Member            // as given to New; immutable
	byID    map[DriveID]*Member // every member, failed or not; immutable
	usable  []*Member           // non-failed members, in the order given; immutable
	headers *headerCache        // shard headers and block tables recently read
	blocks  *blockCache         // shard blocks recently read and checked
	health  *Health             // suspect drives; safe for concurrent use
}

// New returns a Repo over members. It needs at least K members that are not
// Failed (enough to read; Place and WritePack need K+M), distinct drive IDs, a valid rack label on each member and a Drive on each
// one in service.
func New(members []Member, opts Options) (*Repo, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	r := &Repo{
		opts:    opts,
		members: slices.Clone(members),
		byID:    make(map[DriveID]*Member, len(members)),
		headers: newHeaderCache(headerCacheEntries),
		blocks:  newBlockCache(blockCacheEntries),
		health:  opts.Health,
	}
	if r.health == nil {
		r.health = NewHealth(nil)
	}
	for i := range r.members {
		m := &r.members[i]
		if _, dup := r.byID[m.ID]; dup {
			return nil, fmt.Errorf("repo: drive %s is listed twice", m.ID)
		}
		if err := ValidateRack(m.Rack); err != nil {
			return nil, fmt.Errorf("repo: drive %s: %w", m.ID, err)
		}
		r.byID[m.ID] = m
		if m.Failed {
			continue
		}
		if m.Drive == nil {
			return nil, fmt.Errorf("repo: drive %s is in service but has no Drive", m.ID)
		}
		r.usable = append(r.usable, m)
	}
	// Reading needs K drives; writing a pack needs K+M (Place says so). A
	// repository with lost drives must still open so that it can be read.
	if len(r.usable) < opts.K {
		return nil, fmt.Errorf("%w: %d drives in service, reading needs at least K = %d",
			ErrTooFewDrives, len(r.usable), opts.K)
	}
	return r, nil
}

// Health returns the tracker of suspect drives that r writes to.
func (r *Repo) Health() *Health { return r.health }

// Options returns the options in use, with defaults filled in.
func (r *Repo) Options() Options { return r.opts }

// Members returns a copy of the member list given to New.
func (r *Repo) Members() []Member { return slices.Clone(r.members) }

// Encode encodes a pack with the repository's K and M (see Encode).
func (r *Repo) Encode(data []byte) (*Encoded, error) { return Encode(r.opts.K, r.opts.M, data) }

// drive returns the member d if it is in service.
func (r *Repo) drive(d DriveID) (*Member, error) {
	m, ok := r.byID[d]
	switch {
	case !ok:
		return nil, fmt.Errorf("drive %s is not a member of the repository: %w", d, ErrNotFound)
	case m.Failed:
		return nil, fmt.Errorf("drive %s is out of service: %w", d, ErrNotFound)
	}
	return m, nil
}

// Place returns the K+M drives that the shards of pack id go to, shard i to
// element i. See spread for the rule.
func (r *Repo) Place(id PackID) ([]DriveID, error) {
	ms, err := r.place(id, r.opts.K+r.opts.M)
	if err != nil {
		return nil, err
	}
	ids := make([]DriveID, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids, nil
}

func (r *Repo) place(id PackID, n int) ([]*Member, error) {
	if n > len(r.usable) {
		return nil, fmt.Errorf("place pack %s: %w: %d shards, %d drives in service", id, ErrTooFewDrives, n, len(r.usable))
	}
	return spread(r.usable, append([]byte("pack\x00"), id[:]...), n), nil
}

// spread picks n distinct drives of ms for a key (a pack ID or a record name):
//
//   - drives are grouped by rack; within a rack they are ordered by
//     BLAKE3(key || 0x00 || drive ID), racks by BLAKE3(key || 0x01 || rack label)
//     (rendezvous hashing: deterministic per key, even over keys, and a change of
//     membership moves only the keys that involved the changed drive);
//   - then drives are taken round-robin over the racks in that order: the first
//     drive of every rack, then the second of every rack that has one, and so on.
//
// So no rack holds more than ceil(n/racks) of the n drives unless the other racks
// run out of drives, in which case the racks that still have drives take the rest
// as evenly as they can. n must not exceed len(ms).
func spread(ms []*Member, key []byte, n int) []*Member {
	type scored struct {
		m     *Member
		score Hash
	}
	type rack struct {
		label  string
		score  Hash
		drives []scored
	}
	var racks []*rack
	byLabel := map[string]*rack{}
	for _, m := range ms {
		rk := byLabel[m.Rack]
		if rk == nil {
			rk = &rack{label: m.Rack, score: blake3.Sum256(slices.Concat(key, []byte{1}, []byte(m.Rack)))}
			byLabel[m.Rack] = rk
			racks = append(racks, rk)
		}
		rk.drives = append(rk.drives, scored{m, blake3.Sum256(slices.Concat(key, []byte{0}, m.ID[:]))})
	}
	slices.SortFunc(racks, func(a, b *rack) int {
		return cmp.Or(bytes.Compare(a.score[:], b.score[:]), strings.Compare(a.label, b.label))
	})
	for _, rk := range racks {
		slices.SortFunc(rk.drives, func(a, b scored) int {
			return cmp.Or(bytes.Compare(a.score[:], b.score[:]), bytes.Compare(a.m.ID[:], b.m.ID[:]))
		})
	}
	out := make([]*Member, 0, n)
	for round := 0; len(out) < n; round++ {
		for _, rk := range racks {
			if round < len(rk.drives) && len(out) < n {
				out = append(out, rk.drives[round].m)
			}
		}
	}
	return out
}

// ShardName returns the object name of shard index of pack id in container:
// t/<container>/p/<first 2 hex digits of id>/<id hex>.<index>.
func ShardName(container string, id PackID, index int) string {
	h := id.String()
	return "t/" + container + "/p/" + h[:2] + "/" + h + "." + strconv.Itoa(index)
}

// ParseShardName is the inverse of ShardName; ok is false for any other name.
func ParseShardName(name string) (container string, id PackID, index int, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 5 || parts[0] != "t" || parts[2] != "p" || validComponent(parts[1]) != nil {
		return "", PackID{}, 0, false
	}
	base, idx, found := strings.Cut(parts[4], ".")
	if !found || len(base) != 32 || base[:2] != parts[3] {
		return "", PackID{}, 0, false
	}
	id, err := ParsePackID(base)
	if err != nil {
		return "", PackID{}, 0, false
	}
	index, err = strconv.Atoi(idx)
	if err != nil || index < 0 || index >= MaxShards || strconv.Itoa(index) != idx {
		return "", PackID{}, 0, false
	}
	return parts[1], id, index, true
}

// validContainer checks a container name (one name component, like a tenant ID in hex).
func validContainer(c string) error {
	if err := validComponent(c); err != nil {
		return fmt.Errorf("%w: container %q: %v", ErrInvalidName, c, err)
	}
	return nil
}

// evictShard forgets what the caches hold of one shard file.
func (r *Repo) evictShard(d DriveID, name string) {
	r.headers.evict(cacheKey{d, name})
	r.blocks.evictShard(d, name)
}
