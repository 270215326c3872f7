package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// MaxRecordSize bounds a replicated record.
const MaxRecordSize = 64 << 20

// recordCopies returns C, the number of drives a record is written to:
// max(M+1, 3), capped at the number of drives in service. M+1 copies survive the
// loss of any M drives, the same tolerance as a pack; at least 3 so that a small
// code (M=1) still keeps a majority when one copy is stale.
func (r *Repo) recordCopies() int { return min(max(r.opts.M+1, 3), len(r.usable)) }

// recordQuorum is how many copies of a record must be durable for a write to
// succeed: M+1 (at most C), the copies that survive the loss of any M drives,
// the tolerance the failure model promises for everything it stores. With the
// default M=2 it is C itself; a write that reaches the quorum but not C leaves
// the record below its full count for scrub --repair.
func (r *Repo) recordQuorum() int { return min(r.opts.M+1, r.recordCopies()) }

// RecordReplicas returns C, the number of copies every record should have.
func (r *Repo) RecordReplicas() int { return r.recordCopies() }

func recordKey(name string) []byte { return append([]byte("record\x00"), name...) }

// placeRecord returns the C drives of a record, chosen like the drives of a pack
// (rendezvous hashing on the name, distinct racks first; see spread).
func (r *Repo) placeRecord(name string) []*Member {
	return spread(r.usable, recordKey(name), r.recordCopies())
}

// recordOrder returns every drive in service in the order the copies of a
// record go to them: its placement order (spread over all drives), with the
// drives that writes avoid (suspect; see Health) moved to the end. The first
// C are where the copies belong now; the others are spares, in order.
func (r *Repo) recordOrder(name string) []*Member {
	return r.health.healthyFirst(spread(r.usable, recordKey(name), len(r.usable)))
}

// RecordPlacement returns the C drives where the copies of record name belong
// now: its placement, with suspect drives replaced by the next drives in
// placement order.
func (r *Repo) RecordPlacement(name string) []DriveID {
	order := r.recordOrder(name)[:r.recordCopies()]
	ids := make([]DriveID, len(order))
	for i, m := range order {
		ids[i] = m.ID
	}
	return ids
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

func checkRecord(name string, data []byte) error {
	if err := checkRecordName(name); err != nil {
		return err
	}
	if len(data) > MaxRecordSize {
		return fmt.Errorf("put record %s: %d bytes, more than %d", name, len(data), MaxRecordSize)
	}
	return nil
}

// PutRecord writes a small record to C = max(M+1, 3) drives (capped at the
// number of drives in service), chosen by rendezvous hashing on the name over
// distinct racks first, suspect drives last (RecordPlacement). A copy whose
// put fails, whatever the error, goes to the next drive in placement order (a
// spare), as the shards of a pack do, until C copies are durable or no drive
// is left; GetRecord finds copies there. The write succeeds when at least
// M+1 copies (at most C) are durable; below that it returns an error naming
// each drive that failed, and the copies it did write stay (the caller's
// record version decides; a new record's caller may delete them). Records
// carry their own version (the engine's business); PutRecord simply replaces
// the copies on the drives it writes. data is not retained.
func (r *Repo) PutRecord(ctx context.Context, name string, data []byte) error {
	if err := checkRecord(name, data); err != nil {
		return err
	}
	held, errs := r.putCopies(ctx, name, data, nil)
	if err := ctx.Err(); err != nil {
		return err
	}
	if q := r.recordQuorum(); len(held) < q {
		return fmt.Errorf("put record %s: only %d copies durable, need %d: %w", name, len(held), q, errors.Join(errs...))
	}
	return nil
}

// RepairRecord makes the drives of RecordPlacement(name) hold data, as
// PutRecord writes it (a drive that fails is replaced by the next in
// placement order), without writing to drives for which good returns true:
// their copy is data already. It returns the drives that hold data among
// those it walked, and an error unless there are C of them. good is called
// from the calling goroutine only.
func (r *Repo) RepairRecord(ctx context.Context, name string, data []byte, good func(DriveID) bool) ([]DriveID, error) {
	if err := checkRecord(name, data); err != nil {
		return nil, err
	}
	held, errs := r.putCopies(ctx, name, data, good)
	if err := ctx.Err(); err != nil {
		return held, err
	}
	if len(held) < r.recordCopies() {
		return held, fmt.Errorf("repair record %s: %d of %d copies durable: %w", name, len(held), r.recordCopies(), errors.Join(errs...))
	}
	return held, nil
}

// putCopies writes data as record name until C copies are durable: first to
// the first C drives of recordOrder, then, for each put that failed, to the
// next drive in that order. A drive for which has returns true holds data
// already and counts without a write. It returns the drives that hold data
// and the errors of the puts that failed.
func (r *Repo) putCopies(ctx context.Context, name string, data []byte, has func(DriveID) bool) ([]DriveID, []error) {
	order := r.recordOrder(name)
	want := r.recordCopies()
	var held []DriveID
	var errs []error
	for len(held) < want && len(order) > 0 && ctx.Err() == nil {
		wave := order[:min(want-len(held), len(order))]
		order = order[len(wave):]
		done := make([]bool, len(wave))
		for i, m := range wave {
			done[i] = has != nil && has(m.ID)
		}
		results := make([]error, len(wave))
		var wg sync.WaitGroup
		// One goroutine per copy: each goes to a different drive.
		for i, m := range wave {
			if !done[i] {
				wg.Go(func() { results[i] = r.noted(ctx, m.ID, m.Drive.Put(ctx, name, data)) })
			}
		}
		wg.Wait()
		for i, m := range wave {
			if results[i] != nil {
				errs = append(errs, fmt.Errorf("put record %s on drive %s: %w", name, m.ID, results[i]))
			} else {
				held = append(held, m.ID)
			}
		}
	}
	return held, errs
}

// GetRecord returns every copy of the record found on drives in service. It
// reads the C drives of its placement (without regard to suspects); when
// every one of them has a copy, the copies are byte for byte the same and
// none of the drives is suspect, that is the answer. Otherwise (a copy is
// missing, differs or sits on a suspect drive: a write may have gone to a
// spare) it reads every other drive in service too. The caller picks the
// highest valid version. It returns an error wrapping ErrNotFound when no drive
// has a copy and too few drives failed to answer to hide one (fewer than C);
// if C or more drives failed, the error says so and does not wrap
// ErrNotFound. The slices belong to the caller.
func (r *Repo) GetRecord(ctx context.Context, name string) ([][]byte, error) {
	if err := checkRecordName(name); err != nil {
		return nil, err
	}
	placed := r.placeRecord(name)
	copies, errs := r.readCopies(ctx, name, placed)
	if !r.settled(placed, copies, errs) {
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
		more, errs2 := r.readCopies(ctx, name, others)
		copies = append(copies, more...)
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

// settled reports whether the copies read from the placed drives are the
// whole answer: one from each, all the same, and no placed drive suspect.
func (r *Repo) settled(placed []*Member, copies [][]byte, errs []error) bool {
	if len(errs) > 0 || len(copies) != len(placed) {
		return false
	}
	for _, m := range placed {
		if _, bad := r.health.Suspect(m.ID); bad {
			return false
		}
	}
	for _, c := range copies[1:] {
		if !bytes.Equal(c, copies[0]) {
			return false
		}
	}
	return true
}

// RecordCopy is what one drive in service holds of a record: a copy (Data),
// or the error that kept it from being read (Err; never "not found").
type RecordCopy struct {
	Drive DriveID
	Data  []byte
	Err   error
}

// ReadRecordCopies reads record name from every drive in service, for scrub:
// one RecordCopy per drive that holds a copy or could not be read, in drive
// ID order; drives without a copy are left out. The slice belongs to the
// caller.
func (r *Repo) ReadRecordCopies(ctx context.Context, name string) ([]RecordCopy, error) {
	if err := checkRecordName(name); err != nil {
		return nil, err
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		out []RecordCopy // guarded by mu
	)
	// One goroutine per drive: records are small, drives independent.
	for _, m := range r.usable {
		wg.Go(func() {
			b, err := readRecord(ctx, m.Drive, name)
			if errors.Is(err, ErrNotFound) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			out = append(out, RecordCopy{Drive: m.ID, Data: b, Err: err})
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b RecordCopy) int { return bytes.Compare(a.Drive[:], b.Drive[:]) })
	return out, nil
}

// DeleteRecordCopy removes the copy of record name on drive d, which must be
// in service (scrub removes a copy off the record's placement once the
// placement holds every copy). A missing copy is not an error.
func (r *Repo) DeleteRecordCopy(ctx context.Context, d DriveID, name string) error {
	if err := checkRecordName(name); err != nil {
		return err
	}
	m, err := r.drive(d)
	if err != nil {
		return fmt.Errorf("delete record %s: %w", name, err)
	}
	if err := m.Drive.Delete(ctx, name); err != nil {
		return fmt.Errorf("delete record %s on drive %s: %w", name, d, err)
	}
	return nil
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
