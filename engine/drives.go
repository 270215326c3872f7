package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"coffer/index"
	"coffer/repo"
)

// DriveStatus is a drive with what it holds.
type DriveStatus struct {
	DriveInfo
	Available bool   `json:"available"`         // the folder is there and carries this drive's identity
	Problem   string `json:"problem,omitempty"` // why it is not available
	// Suspect is the drive fault with which the drive last refused a write
	// ("read-only file system", "no space left on device", ...), since
	// SuspectSince; writes place around it. Empty for a healthy drive.
	Suspect      string     `json:"suspect,omitempty"`
	SuspectSince *time.Time `json:"suspect_since,omitempty"`
	Shards       int64      `json:"shards"`
	UsedBytes    int64      `json:"used_bytes"`
	// FreeBytes is the space left on a folder drive's file system (0 when
	// unknown: S3 drives, or the drive is unavailable).
	FreeBytes int64 `json:"free_bytes,omitempty"`
}

// DriveReport is the state of every drive and of the packs' redundancy.
type DriveReport struct {
	Drives []DriveStatus `json:"drives"`
	// Packs counts every indexed pack; Degraded those with a shard that was
	// never written or sits on a drive that is out of service or unavailable.
	Packs    int64  `json:"packs"`
	Degraded int64  `json:"packs_below_full_redundancy"`
	Warning  string `json:"warning,omitempty"` // the layout cannot survive the loss of a rack
}

// DriveReport lists the drives with their shard counts, used bytes and
// suspect marks, and counts the packs below full redundancy. It reads every drive's listing and
// every pack record, streaming both.
func (e *Engine) DriveReport(ctx context.Context) (*DriveReport, error) {
	r := e.rp()
	rep := &DriveReport{}
	byID := map[repo.DriveID]repo.Member{}
	for _, m := range r.Members() {
		byID[m.ID] = m
	}
	for _, d := range e.Drives() {
		st := DriveStatus{DriveInfo: d}
		id, _ := repo.ParseDriveID(d.ID)
		m := byID[id]
		if sp, ok := r.Health().Suspect(id); ok && d.State == driveActive {
			since := sp.Since.UTC()
			st.Suspect, st.SuspectSince = sp.Reason, &since
		}
		if u, ok := m.Drive.(unavailableDrive); ok {
			st.Problem = strings.TrimPrefix(u.err.Error(), "repo: ")
		} else if m.Drive != nil {
			st.Available = true
			err := m.Drive.List(ctx, "", func(name string, size int64) error {
				st.UsedBytes += size
				if _, _, _, ok := repo.ParseShardName(name); ok {
					st.Shards++
				}
				return nil
			})
			if err != nil {
				st.Available = false
				st.Problem = fmt.Sprintf("listing failed: %v", err)
			}
			// A folder drive whose folder is gone lists as empty: its
			// identity says whether it is really there.
			if err == nil {
				if ident, ierr := repo.ReadIdentity(ctx, m.Drive); ierr != nil || ident.Drive != id {
					st.Available = false
					st.Problem = "its identity cannot be read (removed or replaced?)"
				}
			}
			if sr, ok := m.Drive.(repo.SpaceReporter); ok && st.Available {
				st.FreeBytes, _, _ = sr.Free(ctx)
			}
		}
		rep.Drives = append(rep.Drives, st)
	}
	entries, err := e.tenantEntries()
	if err != nil {
		return nil, err
	}
	down := map[repo.DriveID]bool{} // found unavailable now (a folder removed under a running server)
	for _, st := range rep.Drives {
		if id, err := repo.ParseDriveID(st.ID); err == nil && !st.Available {
			down[id] = true
		}
	}
	for _, te := range entries {
		container := fmt.Sprintf("%x", te.rec.ID[:])
		err := e.db.Packs(te.rec.ID, func(rec index.PackRec) error {
			rep.Packs++
			p := packInfo(container, rec)
			if len(r.Degraded(p)) > 0 || slices.ContainsFunc(p.Drives, func(d repo.DriveID) bool { return down[d] }) {
				rep.Degraded++
			}
			return ctx.Err()
		})
		if err != nil {
			return nil, err
		}
	}
	e.mu.Lock()
	rep.Warning = rackWarning(e.cfg.Drives, e.cfg.K, e.cfg.M)
	e.mu.Unlock()
	return rep, nil
}

// findDrive resolves a drive ID or a unique prefix of at least 4 hex digits.
func (e *Engine) findDrive(ref string) (driveConfig, error) {
	ref = strings.ToLower(ref)
	var found []driveConfig
	e.mu.Lock()
	for _, d := range e.cfg.Drives {
		if len(ref) >= 4 && strings.HasPrefix(d.ID, ref) {
			found = append(found, d)
		}
	}
	e.mu.Unlock()
	switch len(found) {
	case 0:
		return driveConfig{}, invalidf("no drive %q (see coffer drive list)", ref)
	case 1:
		return found[0], nil
	}
	return driveConfig{}, invalidf("drive %q is ambiguous: give more digits", ref)
}

// DriveChange is a drive that was marked failed or added, and how the
// replicated records were re-placed on the new drive set.
type DriveChange struct {
	DriveInfo
	RecordsChecked  int64 `json:"records_checked"`  // records examined
	RecordsReplaced int64 `json:"records_replaced"` // records given new copies where they belong now
}

// FailDrive marks a drive out of service: nothing is written to it and reads
// avoid it; its shards count as missing until scrub --repair re-homes them.
// The config is written through the other drives (the failing one may
// refuse writes). Then every replicated record is re-placed at once on the
// drives in service, so the copies the drive held are C again; if that is
// not complete, the error says so after the drive is marked failed.
func (e *Engine) FailDrive(ctx context.Context, ref string) (DriveChange, error) {
	d, err := e.markFailed(ctx, ref)
	if err != nil {
		return DriveChange{}, err
	}
	ch := DriveChange{DriveInfo: DriveInfo{ID: d.ID, Rack: d.Rack, Path: resolveDrivePath(e.dir, d.Path), State: d.State}}
	e.emit(Event{Kind: EventDriveFailed, Severity: SevWarning, Drive: d.ID})
	healErr := e.replaceRecords(ctx, &ch)
	if err := e.logAudit(ctx, "drive.fail", [16]byte{}, nil, fmt.Sprintf("drive=%s records=%d", d.ID, ch.RecordsReplaced)); err != nil {
		return ch, fmt.Errorf("drive %s is marked failed, but %w", d.ID, err)
	}
	if healErr != nil {
		return ch, fmt.Errorf("drive %s is marked failed, but %w (coffer scrub --repair finishes it)", d.ID, healErr)
	}
	return ch, nil
}

// markFailed records drive ref as failed in the config and drops its
// suspect mark.
func (e *Engine) markFailed(ctx context.Context, ref string) (driveConfig, error) {
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	d, err := e.findDrive(ref)
	if err != nil {
		return driveConfig{}, err
	}
	if d.State == driveFailed {
		return driveConfig{}, invalidf("drive %s is already marked failed", d.ID)
	}
	err = e.updateConfig(ctx, func(c *config) error {
		for i := range c.Drives {
			if c.Drives[i].ID == d.ID {
				c.Drives[i].State = driveFailed
			}
		}
		return nil
	})
	if err != nil {
		return driveConfig{}, err
	}
	if id, err := repo.ParseDriveID(d.ID); err == nil {
		e.driveHealth().Clear(id)
	}
	d.State = driveFailed
	return d, nil
}

// replaceRecords makes every replicated record whole on the current drive
// set (recordHealer with repair) and counts what it did into ch. It returns
// an error saying how many records are still not whole, if any.
func (e *Engine) replaceRecords(ctx context.Context, ch *DriveChange) error {
	h, err := e.newRecordHealer(true)
	if err != nil {
		return fmt.Errorf("re-place records: %w", err)
	}
	var left int
	var first string
	err = h.run(ctx, func(f *recordFinding) {
		if f.repaired {
			ch.RecordsReplaced++
			return
		}
		left++
		if first == "" {
			first = f.name + ": " + f.detail()
			if f.repairErr != "" {
				first += ": " + f.repairErr
			}
		}
	})
	ch.RecordsChecked = h.checked
	switch {
	case err != nil:
		return fmt.Errorf("re-placing records stopped: %w", err)
	case len(h.listErrs) > 0:
		return fmt.Errorf("records could not all be listed: %w", errors.Join(h.listErrs...))
	case left > 0:
		return fmt.Errorf("%d records could not be re-placed (the first: %s)", left, first)
	}
	return nil
}

// AddDrive adds the folder path (created if missing), or the existing S3
// bucket at an s3:// or s3+http:// URL, as a new drive in rack.
// A folder that already belongs to another repository, or is already a drive
// of this one, is refused. It returns a warning when the layout still cannot
// survive the loss of a rack. Then the replicated records that now belong
// on the new drive are copied there (and their copies off the new placement
// removed); if that is not complete, the error says so after the drive is
// added.
func (e *Engine) AddDrive(ctx context.Context, rack, path string) (DriveChange, string, error) {
	d, warning, err := e.addDrive(ctx, rack, path)
	if err != nil {
		return DriveChange{}, "", err
	}
	ch := DriveChange{DriveInfo: DriveInfo{ID: d.ID, Rack: d.Rack, Path: resolveDrivePath(e.dir, d.Path), State: d.State}}
	e.emit(Event{Kind: EventDriveFailed, Severity: SevWarning, Drive: d.ID})
	healErr := e.replaceRecords(ctx, &ch)
	if err := e.logAudit(ctx, "drive.add", [16]byte{}, nil, fmt.Sprintf("drive=%s records=%d", d.ID, ch.RecordsReplaced)); err != nil {
		return ch, warning, fmt.Errorf("drive %s was added, but %w", d.ID, err)
	}
	if healErr != nil {
		return ch, warning, fmt.Errorf("drive %s was added, but %w (coffer scrub --repair finishes it)", d.ID, healErr)
	}
	return ch, warning, nil
}

// addDrive writes the identity of the new drive (or adopts one an
// interrupted add left) and adds it to the config.
func (e *Engine) addDrive(ctx context.Context, rack, path string) (driveConfig, string, error) {
	if err := repo.ValidateRack(rack); err != nil {
		return driveConfig{}, "", invalidf("%v", err)
	}
	unlock := e.lockTenant(tenantAdmin)
	defer unlock()
	path, err := canonicalDrivePath(path)
	if err != nil {
		return driveConfig{}, "", err
	}
	e.mu.Lock()
	for _, d := range e.cfg.Drives {
		if resolveDrivePath(e.dir, d.Path) == path {
			e.mu.Unlock()
			return driveConfig{}, "", invalidf("%s is already drive %s", path, d.ID)
		}
	}
	repoID := e.cfg.repoID()
	e.mu.Unlock()
	drv, err := openDrivePath(ctx, path, s3Options(e.opts.S3CAFile, e.opts.S3AllowVersioning), true)
	if err != nil {
		return driveConfig{}, "", err
	}
	var id repo.DriveID
	ident, err := repo.ReadIdentity(ctx, drv)
	switch {
	case errors.Is(err, repo.ErrNoIdentity):
		randomBytes(id[:])
		if err := repo.WriteIdentity(ctx, drv, repo.Identity{Repository: repoID, Drive: id, Rack: rack}); err != nil {
			return driveConfig{}, "", fmt.Errorf("drive %s: %w", path, err)
		}
	case err != nil:
		return driveConfig{}, "", fmt.Errorf("drive %s: %w", path, err)
	case ident.Repository != repoID:
		return driveConfig{}, "", fmt.Errorf("%w: %s belongs to repository %x", repo.ErrForeignDrive, path, ident.Repository[:])
	default:
		// An identity of this repository that the config does not list: a
		// previous add was interrupted after writing it. Adopt it.
		if _, err := e.findDrive(ident.Drive.String()); err == nil {
			return driveConfig{}, "", invalidf("%s carries drive %s, which is already in the repository", path, ident.Drive)
		}
		id = ident.Drive
		if ident.Rack != rack {
			if err := repo.WriteIdentity(ctx, drv, repo.Identity{Repository: repoID, Drive: id, Rack: rack}); err != nil {
				return driveConfig{}, "", fmt.Errorf("drive %s: %w", path, err)
			}
		}
	}
	d := driveConfig{ID: id.String(), Rack: rack, Path: storedDrivePath(e.dir, path), State: driveActive}
	var warning string
	err = e.updateConfig(ctx, func(c *config) error {
		c.Drives = append(c.Drives, d)
		warning = rackWarning(c.Drives, c.K, c.M)
		return nil
	})
	if err != nil {
		return driveConfig{}, "", err
	}
	return d, warning, nil
}
