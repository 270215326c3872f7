package repo

// Scrub and repair support: where a rebuilt shard goes, removing single shard
// copies and whole containers, and finding and removing stale temporary files.
// The policy (what is damage, what is removed, in which order) belongs to the
// engine; see docs/design.md.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/zeebo/blake3"
)

// PlaceRepair chooses the drive that shard i of p is rebuilt on (with
// RewriteShard). p.Drives is the current placement; a zero entry is a shard
// that was never written.
//
// The candidates are the drives in service that hold no other shard of p
// (shard i's own drive is a candidate when it is in service: rewriting in
// place needs no index change). Among them it prefers, in this order:
//
//  0. a drive that writes do not avoid (not suspect; see Health);
//  1. the rack that holds the fewest shards of p, counting only shards other
//     than i on drives in service, so no rack holds more than m shards of a
//     pack when the drives allow it (adding to the emptiest rack never raises
//     the fullest one);
//  2. shard i's own drive, if it is in that rack;
//  3. the least-loaded drive by load (bytes or shards held; nil: all equal);
//  4. the lowest BLAKE3-256("repair" 0x00 pack ID 0x00 drive ID), so the choice
//     is deterministic and repairs of different packs spread over drives.
//
// It fails with ErrTooFewDrives when every drive in service already holds a
// shard of p. load is called from the calling goroutine only.
func (r *Repo) PlaceRepair(p PackInfo, i int, load func(DriveID) int64) (DriveID, error) {
	if len(p.Drives) != p.K+p.M || p.K < 1 {
		return DriveID{}, fmt.Errorf("repo: place repair of pack %s: %d drives for %d+%d shards", p.ID, len(p.Drives), p.K, p.M)
	}
	if i < 0 || i >= len(p.Drives) {
		return DriveID{}, fmt.Errorf("repo: pack %s has no shard %d", p.ID, i)
	}
	holds := map[DriveID]bool{}
	perRack := map[string]int{}
	for j, d := range p.Drives {
		if j == i || d == (DriveID{}) {
			continue
		}
		holds[d] = true
		if m, ok := r.byID[d]; ok && !m.Failed {
			perRack[m.Rack]++
		}
	}
	type cand struct {
		m     *Member
		avoid bool
		rack  int
		own   bool
		load  int64
		score Hash
	}
	var cands []cand
	for _, m := range r.usable {
		if holds[m.ID] {
			continue
		}
		c := cand{m: m, avoid: r.health.avoid(m.ID), rack: perRack[m.Rack], own: m.ID == p.Drives[i]}
		if load != nil {
			c.load = load(m.ID)
		}
		c.score = blake3.Sum256(slices.Concat([]byte("repair\x00"), p.ID[:], []byte{0}, m.ID[:]))
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		return DriveID{}, fmt.Errorf("place repair of pack %s shard %d: %w: each of the %d drives in service holds another shard of the pack",
			p.ID, i, ErrTooFewDrives, len(r.usable))
	}
	best := slices.MinFunc(cands, func(a, b cand) int {
		switch {
		case a.avoid != b.avoid:
			if b.avoid {
				return -1
			}
			return 1
		case a.rack != b.rack:
			return a.rack - b.rack
		case a.own != b.own:
			if a.own {
				return -1
			}
			return 1
		case a.load != b.load:
			if a.load < b.load {
				return -1
			}
			return 1
		}
		return bytes.Compare(a.score[:], b.score[:])
	})
	return best.m.ID, nil
}

// DeleteShardCopy removes shard i of pack id in container from drive d, which
// must be in service. It is used to drop a copy the index no longer points to
// (a corrupt copy after its rebuild went elsewhere, a misplaced duplicate, a
// shard of a pack that was never indexed). A missing copy is not an error.
func (r *Repo) DeleteShardCopy(ctx context.Context, d DriveID, container string, id PackID, i int) error {
	if err := validContainer(container); err != nil {
		return err
	}
	if i < 0 || i >= MaxShards {
		return fmt.Errorf("repo: shard index %d out of range", i)
	}
	m, err := r.drive(d)
	if err != nil {
		return fmt.Errorf("delete pack %s shard %d: %w", id, i, err)
	}
	name := ShardName(container, id, i)
	r.evictShard(d, name)
	if err := m.Drive.Delete(ctx, name); err != nil {
		return fmt.Errorf("delete %s on drive %s: %w", name, d, err)
	}
	return nil
}

// PurgeContainer removes everything under container's folder (t/<container>/)
// on every drive in service: with DeletePrefix where the drive has it,
// otherwise object by object. The errors of the drives that failed are joined.
// It is for a container the engine has established belongs to no tenant.
func (r *Repo) PurgeContainer(ctx context.Context, container string) error {
	if err := validContainer(container); err != nil {
		return err
	}
	prefix := "t/" + container + "/"
	var errs []error
	for _, m := range r.usable {
		if pd, ok := m.Drive.(PrefixDeleter); ok {
			err := pd.DeletePrefix(ctx, prefix)
			if !errors.Is(err, errors.ErrUnsupported) { // a wrapper may lack it after all
				if err != nil {
					errs = append(errs, fmt.Errorf("remove container %s on drive %s: %w", container, m.ID, err))
				}
				continue
			}
		}
		// Collect the names first: deleting while listing is not part of the
		// Drive contract. A container of an unknown tenant is small in the
		// cases this serves (leftovers of interrupted writes or shreds).
		var names []string
		err := m.Drive.List(ctx, prefix, func(name string, _ int64) error {
			names = append(names, name)
			return nil
		})
		for _, name := range names {
			if err == nil {
				err = m.Drive.Delete(ctx, name)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove container %s on drive %s: %w", container, m.ID, err))
		}
	}
	return errors.Join(errs...)
}

// TempCleaner is an optional ability of a Drive that keeps temporary files of
// puts in progress (DirDrive keeps them in <root>/tmp). A crash leaves such
// files behind; nothing refers to them.
type TempCleaner interface {
	// ListStaleTemp calls fn for every temporary file last modified before
	// the given time, with its name relative to the drive root and its size.
	ListStaleTemp(ctx context.Context, before time.Time, fn func(name string, size int64) error) error
	// RemoveStaleTemp removes the temporary files last modified before the
	// given time.
	RemoveStaleTemp(ctx context.Context, before time.Time) error
}

var _ TempCleaner = (*DirDrive)(nil)

// ListStaleTemp implements TempCleaner: it lists <root>/tmp.
func (d *DirDrive) ListStaleTemp(ctx context.Context, before time.Time, fn func(name string, size int64) error) error {
	dir := filepath.Join(d.root, tmpFolder)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("list temporary files: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || !info.ModTime().Before(before) {
			continue
		}
		if err := fn(tmpFolder+"/"+e.Name(), info.Size()); err != nil {
			return err
		}
	}
	return nil
}

// tempCleaner finds the TempCleaner of a drive, looking through wrappers that
// expose the drive they wrap with an Inner() Drive method (test drives that
// inject faults do); nil if there is none.
func tempCleaner(d Drive) TempCleaner {
	for range 8 { // wrappers do not nest deeply; the bound guards against a cycle
		if tc, ok := d.(TempCleaner); ok {
			return tc
		}
		w, ok := d.(interface{ Inner() Drive })
		if !ok {
			return nil
		}
		d = w.Inner()
	}
	return nil
}

// ListStaleTemp calls fn, from one goroutine, for every temporary file last
// modified before the given time on every drive in service that keeps them
// (see TempCleaner). A drive that fails to list does not stop the others; the
// errors are joined. An error from fn stops the listing and is returned.
func (r *Repo) ListStaleTemp(ctx context.Context, before time.Time, fn func(d DriveID, name string, size int64) error) error {
	var errs []error
	for _, m := range r.usable {
		tc := tempCleaner(m.Drive)
		if tc == nil {
			continue
		}
		var fnErr error
		err := tc.ListStaleTemp(ctx, before, func(name string, size int64) error {
			if err := fn(m.ID, name, size); err != nil {
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
			errs = append(errs, fmt.Errorf("list temporary files on drive %s: %w", m.ID, err))
		}
	}
	return errors.Join(errs...)
}

// CleanStaleTemp removes the temporary files last modified before the given
// time from every drive in service that keeps them. Only a time old enough
// that no put can still be writing such a file is safe (an hour, say).
func (r *Repo) CleanStaleTemp(ctx context.Context, before time.Time) error {
	var errs []error
	for _, m := range r.usable {
		if tc := tempCleaner(m.Drive); tc != nil {
			if err := tc.RemoveStaleTemp(ctx, before); err != nil {
				errs = append(errs, fmt.Errorf("drive %s: %w", m.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}
