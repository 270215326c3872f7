package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// MaxRecordSize bounds a replicated record.
const MaxRecordSize = 64 << 20

// recordCopies returns C, the number of drives a record is written to:
// max(M+1, 3), capped at the number of drives in service. M+1 copies survive the
// loss of any M drives, the same tolerance as a pack; at least 3 so that a small
// code (M=1) still keeps a majority when one copy is stale.
func (r *Repo) recordCopies() int { return min(max(r.opts.M+1, 3), len(r.usable)) }

// placeRecord returns the C drives of a record, chosen like the drives of a pack
// (rendezvous hashing on the name, distinct racks first; see spread).
func (r *Repo) placeRecord(name string) []*Member {
	return spread(r.usable, append([]byte("record\x00"), name...), r.recordCopies())
}

func checkRecordName(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if _, _, _, ok := ParseShardName(name); ok || name == IdentityName {
		return fmt.Errorf("%w: %q is the name of a shard or of the drive identity, not of a record", ErrInvalidName, name)
	}
	return nil
}

// PutRecord writes a small record to C = max(M+1, 3) drives (capped at the number
// of drives in service), chosen by rendezvous hashing on the name over distinct
// racks first. Every copy must be written: the error names each drive that failed.
// One exception: a copy whose drive is unreachable (the error wraps
// ErrS3Unreachable: a storage server that vanished) goes to the next drive in
// placement order, exactly as if that drive had been out of service when the
// repository was opened; GetRecord finds it there. Records carry their own
// version (the engine's business); PutRecord simply replaces the copies on the
// chosen drives. data is not retained.
func (r *Repo) PutRecord(ctx context.Context, name string, data []byte) error {
	if err := checkRecordName(name); err != nil {
		return err
	}
	if len(data) > MaxRecordSize {
		return fmt.Errorf("put record %s: %d bytes, more than %d", name, len(data), MaxRecordSize)
	}
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		errs        []error // guarded by mu
		written     int     // guarded by mu
		unreachable int     // guarded by mu
	)
	ranked := spread(r.usable, append([]byte("record\x00"), name...), len(r.usable))
	want := min(r.recordCopies(), len(ranked))
	next := ranked[:want]
	ranked = ranked[want:]
	for len(next) > 0 {
		// One goroutine per copy: each goes to a different drive.
		for _, m := range next {
			wg.Go(func() {
				err := m.Drive.Put(ctx, name, data)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("put record %s on drive %s: %w", name, m.ID, err))
					if errors.Is(err, ErrS3Unreachable) {
						unreachable++
					}
				} else {
					written++
				}
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if len(errs) > unreachable {
			return errors.Join(errs...) // a drive that answered and failed: no stand-in
		}
		n := min(want-written, len(ranked))
		next, ranked = ranked[:n], ranked[n:]
	}
	if written < want {
		return errors.Join(errs...)
	}
	return nil
}

// GetRecord returns every copy of the record found on drives in service: first on
// the drives where PutRecord places it, then, if none of them has it, on every
// other drive. The caller picks the highest valid version. It returns an error
// wrapping ErrNotFound when no drive has a copy and too few drives failed to answer
// to hide one (fewer than C); if C or more drives failed, the error says so and
// does not wrap ErrNotFound. The slices belong to the caller.
func (r *Repo) GetRecord(ctx context.Context, name string) ([][]byte, error) {
	if err := checkRecordName(name); err != nil {
		return nil, err
	}
	placed := r.placeRecord(name)
	copies, errs := r.readCopies(ctx, name, placed)
	if len(copies) == 0 {
		isPlaced := make(map[DriveID]bool, len(placed))
		for _, m := range placed {
			isPlaced[m.ID] = true
		}
		var others []*Member
		for _, m := range r.usable {
			if !isPlaced[m.ID] {
				others = append(others, m)
			}
		}
		var errs2 []error
		copies, errs2 = r.readCopies(ctx, name, others)
		errs = append(errs, errs2...)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(copies) > 0 {
		return copies, nil
	}
	if len(errs) >= r.recordCopies() {
		return nil, fmt.Errorf("get record %s: no copy found, and %d drives could not be read: %w", name, len(errs), errors.Join(errs...))
	}
	return nil, fmt.Errorf("get record %s: %w", name, ErrNotFound)
}

// readCopies reads name from each of ms in parallel. It returns the copies found
// and the errors other than "not found".
func (r *Repo) readCopies(ctx context.Context, name string, ms []*Member) ([][]byte, []error) {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		copies [][]byte // guarded by mu
		errs   []error  // guarded by mu
	)
	for _, m := range ms {
		wg.Go(func() {
			b, err := readRecord(ctx, m.Drive, name)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				copies = append(copies, b)
			case !errors.Is(err, ErrNotFound):
				errs = append(errs, fmt.Errorf("drive %s: %w", m.ID, err))
			}
		})
	}
	wg.Wait()
	return copies, errs
}

func readRecord(ctx context.Context, d Drive, name string) ([]byte, error) {
	size, err := d.Size(ctx, name)
	if err != nil {
		return nil, err
	}
	if size > MaxRecordSize {
		return nil, fmt.Errorf("record %s: %d bytes, more than %d: %w", name, size, MaxRecordSize, ErrCorrupt)
	}
	b := make([]byte, size)
	if err := d.ReadAt(ctx, name, b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// ListRecords calls fn, from one goroutine, once for every record name under
// prefix ("" or a folder prefix ending in "/") found on any drive in service.
// Shard objects and the drive identity are not records and are skipped. An error
// from fn stops the listing and is returned. Drives that fail to list are skipped;
// if C or more fail, the union may be incomplete and their errors are returned
// after the listing.
func (r *Repo) ListRecords(ctx context.Context, prefix string, fn func(name string) error) error {
	if err := ValidatePrefix(prefix); err != nil {
		return err
	}
	seen := map[string]bool{}
	var errs []error
	for _, m := range r.usable {
		var fnErr error
		err := m.Drive.List(ctx, prefix, func(name string, _ int64) error {
			if seen[name] || checkRecordName(name) != nil {
				return nil
			}
			seen[name] = true
			if err := fn(name); err != nil {
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
			errs = append(errs, fmt.Errorf("list records on drive %s: %w", m.ID, err))
		}
	}
	if len(errs) >= r.recordCopies() {
		return fmt.Errorf("list records %q: %d drives could not be listed: %w", prefix, len(errs), errors.Join(errs...))
	}
	return nil
}

// DeleteRecord removes the record from every drive in service (physical clean-up;
// the engine deletes logically with tombstones). Missing copies are not an error;
// the errors of drives that failed are joined.
func (r *Repo) DeleteRecord(ctx context.Context, name string) error {
	if err := checkRecordName(name); err != nil {
		return err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error // guarded by mu
	)
	// One goroutine per drive: the record may be on any of them.
	for _, m := range r.usable {
		wg.Go(func() {
			if err := m.Drive.Delete(ctx, name); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("delete record %s on drive %s: %w", name, m.ID, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
