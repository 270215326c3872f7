package engine

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"coffer/index"
	"coffer/repo"
)

// ScrubOptions configure Scrub.
type ScrubOptions struct {
	// Repair rebuilds missing and corrupt shards, re-homes shards off drives
	// that are out of service, and removes orphans and stale temporary files.
	Repair bool
	// Progress counts shards verified (Files) and shard bytes read (Bytes);
	// TotalFiles and TotalBytes are the shards found on the drives.
	Progress *Progress
}

// Kinds of ScrubProblem.
const (
	ScrubMissing    = "missing"    // a shard that is not where the index says: file absent, drive out of service, or never written
	ScrubCorrupt    = "corrupt"    // a shard that fails its header, block CRCs, hash or sealed pack header; or index and sealed header disagree
	ScrubMisplaced  = "misplaced"  // a copy of an indexed shard on a drive the index does not record for it
	ScrubOrphan     = "orphan"     // a shard of a pack the index does not know, or a container of no live tenant
	ScrubStaleTemp  = "stale-temp" // temporary files of interrupted writes
	ScrubUnreadable = "unreadable" // a pack with fewer than k good shards: its data cannot be read
	// ScrubIndexBehind: the index lacks what the drives prove live (a
	// snapshot record, or what a snapshot needs), so the tenant's shards
	// that the index does not know are kept for coffer index rebuild.
	ScrubIndexBehind = "index-behind"
	ScrubError       = "error" // something could not be checked (a drive that fails to list, ...)
)

// maxScrubProblems bounds ScrubReport.Problems so that a report stays small
// whatever the damage (a failed drive may hold millions of shards); the
// counts stay exact and ProblemsOmitted says how many were left out.
const maxScrubProblems = 1000

// maxPendingRemovals bounds the orphans and misplaced copies remembered
// between the listing of the drives and their removal after the packs are
// repaired; with more, the drives are listed again for the rest.
const maxPendingRemovals = 4096

// staleTempAge is how old a temporary file of a put must be before scrub
// counts it as stale and repair removes it: no put takes that long.
const staleTempAge = time.Hour

// ScrubProblem is one finding. It names packs, shards, drives and tenants by
// ID only: never a tenant name, file name or content.
type ScrubProblem struct {
	Kind   string `json:"kind"`
	Tenant string `json:"tenant,omitempty"` // tenant ID (its container name)
	Pack   string `json:"pack,omitempty"`
	Shard  *int   `json:"shard,omitempty"`
	Record string `json:"record,omitempty"` // name of a replicated record (IDs only)
	Drive  string `json:"drive,omitempty"`
	Detail string `json:"detail"`
	// Repaired says the problem is gone: the shard was rebuilt, the copy or
	// file removed, the index corrected.
	Repaired bool `json:"repaired"`
	// RepairError says why a repair was not done or not finished.
	RepairError string `json:"repair_error,omitempty"`
}

// ScrubCount counts one kind of finding and how many were repaired.
type ScrubCount struct {
	Found    int64 `json:"found"`
	Repaired int64 `json:"repaired"`
}

// ScrubReport is what Scrub found and, with Repair, did.
type ScrubReport struct {
	Repair  bool    `json:"repair"`
	Tenants int     `json:"tenants"`
	Packs   int64   `json:"packs"`
	Shards  int64   `json:"shards"` // shards of indexed packs examined
	Bytes   int64   `json:"bytes"`  // shard data bytes read and verified
	Seconds float64 `json:"seconds"`

	Missing   ScrubCount `json:"missing"`   // shards
	Corrupt   ScrubCount `json:"corrupt"`   // shards (and packs whose index disagrees with the sealed header)
	Misplaced ScrubCount `json:"misplaced"` // shard copies
	Orphaned  ScrubCount `json:"orphaned"`  // shard files
	StaleTemp ScrubCount `json:"stale_temp"`
	Errors    int64      `json:"errors"` // things that could not be checked
	// IndexBehind counts the tenants whose index lacks what the drives
	// prove live; their unindexed shards are kept (coffer index rebuild).
	IndexBehind int64 `json:"index_behind"`

	// Records counts the replicated records found not whole (ScrubRecord);
	// RecordsChecked those examined. SuspectDrives counts the drives in
	// service that refuse writes (ScrubSuspect), which scrub cannot repair.
	Records        ScrubCount `json:"records"`
	RecordsChecked int64      `json:"records_checked"`
	SuspectDrives  int64      `json:"suspect_drives"`

	// BelowFull counts the packs found with fewer than k+m good shards;
	// StillBelowFull those still so after repair (without Repair, the same).
	BelowFull      int64 `json:"packs_below_full_redundancy"`
	StillBelowFull int64 `json:"packs_still_below_full_redundancy"`
	// Unreadable counts the packs with fewer than k good shards.
	Unreadable int64 `json:"packs_unreadable"`

	Problems        []ScrubProblem `json:"problems"`
	ProblemsOmitted int64          `json:"problems_omitted"`
}

// Unrepaired returns how many findings remain: all of them without Repair.
func (r *ScrubReport) Unrepaired() int64 {
	n := r.Errors + r.SuspectDrives + r.IndexBehind
	for _, c := range []ScrubCount{r.Missing, r.Corrupt, r.Misplaced, r.Orphaned, r.StaleTemp, r.Records} {
		n += c.Found - c.Repaired
	}
	return n
}

// scrubLockID is the lockTenant key that lets one scrub run at a time in a
// process. Tenant IDs are random 128-bit values, so it collides with none.
var scrubLockID = [16]byte{'c', 'o', 'f', 'f', 'e', 'r', '/', 's', 'c', 'r', 'u', 'b'}

// Scrub verifies every shard of every indexed pack in full: its header, every
// block CRC and its BLAKE3 hash, against both the index and the tenant's
// sealed pack header, so that a shard rewritten together with fresh CRCs is
// caught. It lists every drive for misplaced copies, orphaned shards
// (interrupted writes; containers of no live tenant) and stale temporary
// files, and reads every copy of every replicated record (scrubRecords).
// With o.Repair it rebuilds what is missing or corrupt onto healthy
// drives keeping racks spread (repo.PlaceRepair), re-homes shards off drives
// out of service, corrects the index, rewrites missing and stale record
// copies where the records belong, and removes orphans, misplaced copies,
// record copies off their placement and stale temporary files. docs/design.md gives the failure model and
// the order of writes that keeps a repair crash-safe.
//
// Memory is bounded: packs are streamed from the index and handled one at a
// time, drive listings are streamed, and the report keeps at most
// maxScrubProblems problems (with exact counts). Repairs of a tenant's pack
// and removal of its orphans hold that tenant's lock, so they wait for a
// backup of that tenant to finish; shards of a backup in progress are never
// taken for orphans.
//
// It returns the report and, when anything was found that is not repaired,
// an error wrapping ErrCheckFailed. Any other error (the index cannot be
// read, ctx is done) means the scrub could not run to the end; the report is
// then nil.
func (e *Engine) Scrub(ctx context.Context, o ScrubOptions) (*ScrubReport, error) {
	unlock := e.lockTenant(scrubLockID)
	defer unlock()
	start := time.Now()
	s := &scrubber{
		e: e, r: e.rp(), o: o, prog: o.Progress,
		rep:        &ScrubReport{Repair: o.Repair, Problems: []ScrubProblem{}},
		load:       map[repo.DriveID]int64{},
		members:    map[repo.DriveID]repo.Member{},
		state:      map[string]string{},
		known:      map[string]bool{},
		indexed:    map[string]bool{},
		containers: map[string]*containerVerdict{},
		byName:     map[string]*Tenant{},
		gates:      map[string]*orphanGate{},
	}
	if s.prog == nil {
		s.prog = &Progress{}
	}
	for _, m := range s.r.Members() {
		s.members[m.ID] = m
	}
	for _, d := range e.Drives() {
		s.state[d.ID] = d.State
	}
	if err := s.run(ctx); err != nil {
		if o.Repair {
			return nil, e.audited(ctx, "scrub.repair", [16]byte{}, "", err)
		}
		return nil, err
	}
	s.rep.Seconds = time.Since(start).Seconds()
	var err error
	if n := s.rep.Unrepaired(); n > 0 {
		err = fmt.Errorf("%w: scrub found %d problems that are not repaired", ErrCheckFailed, n)
	}
	if o.Repair {
		r := s.rep
		detail := fmt.Sprintf("missing=%d corrupt=%d misplaced=%d orphaned=%d records=%d repaired=%d",
			r.Missing.Found, r.Corrupt.Found, r.Misplaced.Found, r.Orphaned.Found, r.Records.Found,
			r.Missing.Repaired+r.Corrupt.Repaired+r.Misplaced.Repaired+r.Orphaned.Repaired+r.StaleTemp.Repaired+r.Records.Repaired)
		err = e.audited(ctx, "scrub.repair", [16]byte{}, detail, err)
	}
	e.emit(scrubEvent(s.rep))
	return s.rep, err
}

// scrubber is the state of one Scrub; it is used from one goroutine.
type scrubber struct {
	e       *Engine
	r       *repo.Repo // the drive set when the scrub started
	o       ScrubOptions
	prog    *Progress
	rep     *ScrubReport
	load    map[repo.DriveID]int64 // bytes on each drive, for PlaceRepair
	members map[repo.DriveID]repo.Member
	state   map[string]string // configured state of each drive, by ID

	tenants []*Tenant
	byName  map[string]*Tenant     // tenants whose key opened, by container
	known   map[string]bool        // containers of live tenants
	indexed map[string]bool        // containers of every tenant in the index, shredded ones too
	gates   map[string]*orphanGate // by container: may its unindexed shards go?

	containers map[string]*containerVerdict // containers of no live tenant
	pending    []removal                    // orphans and misplaced copies to remove
	overflow   bool                         // pending was full: list again after removing
}

// containerVerdict is the decision about a container of no live tenant.
type containerVerdict struct {
	name    string
	keep    bool   // the drives hold a live tenant record for it: not removed
	reason  string // why it is an orphan, or why it is kept
	shards  int64
	problem int // index in Problems, or -1
	done    bool
}

// removal is an orphaned shard or a misplaced copy found by the listing.
type removal struct {
	kind      string // ScrubOrphan or ScrubMisplaced
	drive     repo.DriveID
	container string
	tenant    index.TenantID
	pack      repo.PackID
	shard     int
	problem   int // index in Problems, or -1
}

func (s *scrubber) run(ctx context.Context) error {
	if err := s.loadTenants(ctx); err != nil {
		return err
	}
	if err := s.listDrives(ctx, true); err != nil {
		return err
	}
	s.prog.ScanDone.Store(true)
	for _, t := range s.tenants {
		err := s.e.db.Packs(index.TenantID(t.id), func(rec index.PackRec) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return s.scrubPack(ctx, t, rec)
		})
		if err != nil {
			return fmt.Errorf("scrub packs of tenant %s: %w", t.ID(), err)
		}
	}
	if err := s.scrubRecords(ctx); err != nil {
		return err
	}
	if s.o.Repair {
		if err := s.removeAll(ctx); err != nil {
			return err
		}
	}
	return s.staleTemp(ctx)
}

// add records a problem and returns its index in Problems, or -1 if the list
// is full.
func (s *scrubber) add(p ScrubProblem) int {
	if len(s.rep.Problems) >= maxScrubProblems {
		s.rep.ProblemsOmitted++
		return -1
	}
	s.rep.Problems = append(s.rep.Problems, p)
	return len(s.rep.Problems) - 1
}

func (s *scrubber) problem(i int) *ScrubProblem {
	if i < 0 {
		return &ScrubProblem{} // omitted from the list: a scratch value
	}
	return &s.rep.Problems[i]
}

func (s *scrubber) errorf(format string, args ...any) {
	s.rep.Errors++
	s.add(ScrubProblem{Kind: ScrubError, Detail: fmt.Sprintf(format, args...)})
}

func shardRef(i int) *int { return &i }

// loadTenants opens every live tenant (for its keys) and notes every
// container the index knows.
func (s *scrubber) loadTenants(ctx context.Context) error {
	err := s.e.db.Tenants(func(rec index.TenantRec) error {
		s.indexed[hex.EncodeToString(rec.ID[:])] = true
		return ctx.Err()
	})
	if err != nil {
		return fmt.Errorf("scrub: read tenants: %w", err)
	}
	entries, err := s.e.tenantEntries()
	if err != nil {
		return fmt.Errorf("scrub: read tenants: %w", err)
	}
	for _, te := range entries {
		c := hex.EncodeToString(te.rec.ID[:])
		s.known[c] = true
		t, err := s.e.tenantHandle(te)
		if err != nil {
			// Its packs cannot be checked against their sealed headers;
			// its container is still not an orphan.
			s.errorf("tenant %s: cannot open its key, its packs are not scrubbed: %v", c, err)
			continue
		}
		s.tenants = append(s.tenants, t)
		s.byName[c] = t
	}
	s.rep.Tenants = len(entries)
	return nil
}

// listDrives streams the shard listing of every drive in service. The first
// time (count) it counts load, progress totals and findings; later times
// (after pending overflowed) it only collects removals.
func (s *scrubber) listDrives(ctx context.Context, count bool) error {
	var fatal error // from the index: the scrub cannot go on
	err := s.r.ListShards(ctx, func(d repo.DriveID, c string, id repo.PackID, i int, size int64) error {
		if count {
			s.load[d] += size
			s.prog.TotalFiles.Add(1)
			s.prog.TotalBytes.Add(size)
		}
		fatal = s.classify(ctx, d, c, id, i, count)
		return fatal
	})
	switch {
	case fatal != nil:
		return fatal
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil && count:
		// A drive that fails to list: reported, and the scrub goes on.
		s.errorf("listing drives: %v", trimPrefixes(err.Error()))
	}
	return nil
}

// classify looks at one shard file found on drive d.
func (s *scrubber) classify(ctx context.Context, d repo.DriveID, c string, id repo.PackID, i int, count bool) error {
	if !s.known[c] {
		v := s.containers[c]
		if v == nil {
			v = s.containerVerdict(ctx, c)
			s.containers[c] = v
			if count {
				p := ScrubProblem{Kind: ScrubOrphan, Tenant: c, Detail: v.reason}
				if v.keep {
					p.RepairError = "not removed: " + v.reason
				}
				v.problem = s.add(p)
			}
		}
		if count {
			v.shards++
			s.rep.Orphaned.Found++
		}
		return nil
	}
	var tid index.TenantID
	if err := decodeHexInto(tid[:], c); err != nil {
		return nil // cannot happen: known containers are tenant IDs
	}
	rec, err := s.e.db.Pack(tid, index.PackID(id))
	switch {
	case errors.Is(err, index.ErrNotFound):
		// Unindexed: an interrupted write, or a backup writing right now.
		// Every writer of packs holds the tenant's lock from its first shard
		// until the pack is indexed, so with the lock free and the pack
		// still unindexed, nothing will ever index it.
		unlock, ok := s.e.tryLockTenant(tid)
		if !ok {
			return nil // a backup of this tenant is running; look next time
		}
		_, err = s.e.db.Pack(tid, index.PackID(id))
		unlock()
		if !errors.Is(err, index.ErrNotFound) {
			if err != nil {
				return fmt.Errorf("scrub: read pack %s: %w", id, err)
			}
			return nil // indexed meanwhile
		}
		g, err := s.orphanGate(ctx, c)
		if err != nil || g == nil {
			return err // g nil: a backup of this tenant is running; look next time
		}
		pi := -1
		if count {
			s.rep.Orphaned.Found++
			p := ScrubProblem{Kind: ScrubOrphan, Tenant: c, Pack: id.String(), Shard: shardRef(i), Drive: d.String(),
				Detail: "shard of a pack the index does not know (an interrupted write)"}
			if g.keep {
				p.Detail = "shard of a pack the index does not know"
				p.RepairError = "kept: index behind: run coffer index rebuild"
			}
			pi = s.add(p)
		}
		if !g.keep {
			s.queue(removal{kind: ScrubOrphan, drive: d, container: c, tenant: tid, pack: id, shard: i, problem: pi})
		}
	case err != nil:
		return fmt.Errorf("scrub: read pack %s: %w", id, err)
	case i >= len(rec.Drives):
		pi := -1
		if count {
			s.rep.Orphaned.Found++
			pi = s.add(ScrubProblem{Kind: ScrubOrphan, Tenant: c, Pack: id.String(), Shard: shardRef(i), Drive: d.String(),
				Detail: fmt.Sprintf("shard index beyond the pack's %d shards", len(rec.Drives))})
		}
		s.queue(removal{kind: ScrubOrphan, drive: d, container: c, tenant: tid, pack: id, shard: i, problem: pi})
	case repo.DriveID(rec.Drives[i]) != d:
		pi := -1
		if count {
			s.rep.Misplaced.Found++
			pi = s.add(ScrubProblem{Kind: ScrubMisplaced, Tenant: c, Pack: id.String(), Shard: shardRef(i), Drive: d.String(),
				Detail: fmt.Sprintf("copy on a drive the index does not record; the index says drive %s", repo.DriveID(rec.Drives[i]))})
		}
		s.queue(removal{kind: ScrubMisplaced, drive: d, container: c, tenant: tid, pack: id, shard: i, problem: pi})
	}
	return nil
}

func (s *scrubber) queue(r removal) {
	if !s.o.Repair {
		return
	}
	if len(s.pending) >= maxPendingRemovals {
		s.overflow = true
		return
	}
	s.pending = append(s.pending, r)
}

// containerVerdict decides about a container of no live tenant. It is an
// orphan (removable) when the index holds the tenant's tombstone (shredded),
// or when the drives hold no record of the tenant or only a tombstone as its
// newest version. If the drives hold a live tenant record the index lacks,
// the index is incomplete: the container is kept and coffer index rebuild is
// the cure.
func (s *scrubber) containerVerdict(ctx context.Context, c string) *containerVerdict {
	v := &containerVerdict{name: c, problem: -1}
	var id [16]byte
	if err := decodeHexInto(id[:], c); err != nil {
		v.reason = "container that is not named by a tenant ID"
		return v
	}
	if s.indexed[c] {
		v.reason = "container of a shredded tenant"
		return v
	}
	copies, err := s.r.GetRecord(ctx, tenantRecordName(id))
	if err != nil && !errors.Is(err, repo.ErrNotFound) {
		v.keep = true
		v.reason = fmt.Sprintf("container of a tenant the index does not list; its tenant record could not be read: %v", err)
		return v
	}
	var best *record
	for _, b := range copies {
		r, err := decodeRecord(b)
		if err != nil || r.Kind != recTenant {
			continue
		}
		if best == nil || r.Version > best.Version || r.Version == best.Version && r.tombstone() {
			best = r
		}
	}
	switch {
	case best == nil:
		v.reason = "container of a tenant that neither the index nor the drives know"
	case best.tombstone():
		v.reason = "container of a shredded tenant"
	default:
		v.keep = true
		v.reason = "container of a tenant the drives know but the index does not list (run coffer index rebuild)"
	}
	return v
}

// orphanGate is the decision about the unindexed shards of a live tenant:
// removable (interrupted writes) only when the index is in step with the
// drives for that tenant. Scrub never deletes what the drives prove live.
type orphanGate struct {
	keep   bool
	reason string // why they are kept
}

// orphanGate returns the tenant's gate, deciding it the first time and then
// reporting a kept tenant as one index-behind problem. It returns nil when
// a writer of the tenant is running: nothing is decided until it is done.
func (s *scrubber) orphanGate(ctx context.Context, c string) (*orphanGate, error) {
	if g := s.gates[c]; g != nil {
		return g, nil
	}
	g, err := s.decideGate(ctx, s.byName[c])
	if err != nil || g == nil {
		return nil, err
	}
	s.gates[c] = g
	if g.keep {
		s.rep.IndexBehind++
		s.add(ScrubProblem{Kind: ScrubIndexBehind, Tenant: c, Detail: g.reason,
			RepairError: "the shards of this tenant that the index does not know are kept: run coffer index rebuild"})
	}
	return g, nil
}

// decideGate lets the unindexed shards of t go only when nothing the drives
// prove live can be in them:
//
//  1. every live snapshot record of t on the drives is in the index, or
//     everything it reaches is indexed (with Repair it is then added to
//     the index, as a rebuild would);
//  2. everything the index's snapshots of t reach is located in packs the
//     index holds (a lost pack record or blob location would otherwise
//     make a needed pack look like an interrupted write).
//
// t is nil when the tenant's key does not open: its shards are kept. The
// gate is nil when a writer of the tenant holds its lock. Only errors of ctx
// or of the index itself are returned; a drive that cannot be read keeps the
// shards.
func (s *scrubber) decideGate(ctx context.Context, t *Tenant) (*orphanGate, error) {
	keep := func(format string, args ...any) (*orphanGate, error) {
		return &orphanGate{keep: true, reason: fmt.Sprintf(format, args...)}, nil
	}
	if t == nil {
		return keep("the tenant's key does not open, so the drives cannot be compared with the index")
	}
	lag, err := t.snapshotLag(ctx, lagMode{write: s.o.Repair})
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case IndexDamaged(err):
		return nil, err
	case err != nil:
		return keep("the snapshot records on the drives cannot be compared with the index: %s", trimPrefixes(err.Error()))
	case lag != nil && lag.busy:
		return nil, nil
	case lag != nil && len(lag.behind) > 0:
		return keep("index behind: run coffer index rebuild (the drives hold snapshot %s, which the index lacks: %s)", shortIDs(lag.behind), lag.why)
	}
	why, err := t.indexedSnapshotsComplete(ctx)
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case IndexDamaged(err):
		return nil, err
	case err != nil:
		return keep("cannot tell what the snapshots need: %s", trimPrefixes(err.Error()))
	case why != "":
		return keep("index behind: run coffer index rebuild (%s)", why)
	}
	return &orphanGate{}, nil
}

// shardCheck is what scrubPack found about one shard.
type shardCheck struct {
	kind     string // "" (good), ScrubMissing or ScrubCorrupt
	detail   string
	hashOnly bool // the data is good; only the index's hash is wrong
	problem  int
	repaired bool
}

// scrubPack verifies one pack and, with Repair, repairs it.
func (s *scrubber) scrubPack(ctx context.Context, t *Tenant, rec index.PackRec) error {
	s.rep.Packs++
	p := packInfo(t.container(), rec)
	n := len(p.Drives)
	hdr, trailer, badTrailer := s.packHeader(ctx, t, p)
	if err := ctx.Err(); err != nil {
		return err
	}
	var packProblem string
	hashFix := make([]bool, n)
	switch {
	case hdr == nil && slices.Contains(badTrailer, true):
		packProblem = "no shard carries a sealed pack header that authenticates"
	case hdr != nil:
		if hdr.K != p.K || hdr.M != p.M || int64(hdr.DataLen) != p.DataLen || int64(hdr.ShardLen) != p.ShardLen ||
			len(hdr.Hashes) != n || len(hdr.Blobs) != int(rec.Blobs) {
			packProblem = "the sealed pack header does not match the index (run coffer index rebuild)"
			hdr, trailer = nil, nil
		} else {
			// The sealed header is authenticated under the tenant's key: its
			// hashes are the truth; the index must agree with it.
			for i, h := range hdr.Hashes {
				if repo.Hash(h) != p.Hashes[i] {
					hashFix[i] = true
					p.Hashes[i] = repo.Hash(h)
				}
			}
		}
	}

	checks := make([]shardCheck, n)
	good := 0
	for i, d := range p.Drives {
		s.rep.Shards++
		s.prog.Files.Add(1)
		c := &checks[i]
		m, member := s.members[d]
		switch {
		case d == (repo.DriveID{}):
			c.kind, c.detail = ScrubMissing, "never written: the pack was stored below full redundancy (degraded write)"
		case !member:
			c.kind, c.detail = ScrubMissing, "its drive is not in the repository"
		case m.Failed && s.state[d.String()] == driveFailed:
			c.kind, c.detail = ScrubMissing, "its drive is marked failed"
		case m.Failed:
			c.kind, c.detail = ScrubMissing, "its drive is unavailable"
		default:
			err := s.r.VerifyShard(ctx, p, i)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			switch {
			case errors.Is(err, repo.ErrNotFound):
				c.kind, c.detail = ScrubMissing, "the shard file is absent"
			case err != nil:
				c.kind, c.detail = ScrubCorrupt, trimPrefixes(err.Error())
			default:
				s.prog.Bytes.Add(p.ShardLen)
				s.rep.Bytes += p.ShardLen
				if badTrailer[i] {
					c.kind, c.detail = ScrubCorrupt, "its copy of the sealed pack header does not authenticate"
				} else if hashFix[i] {
					c.kind, c.detail, c.hashOnly = ScrubCorrupt, "the index records another hash for this shard than the sealed pack header", true
				}
			}
		}
		if c.kind == "" || c.hashOnly {
			good++
		}
	}
	bad := 0
	for _, c := range checks {
		if c.kind != "" {
			bad++
		}
	}
	if bad == 0 && packProblem == "" {
		return nil
	}
	// The pack may have been deleted while it was read (a prune on a live
	// server): then there is nothing to report.
	if _, err := s.e.db.Pack(index.TenantID(t.id), rec.ID); errors.Is(err, index.ErrNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("scrub: read pack %s: %w", p.ID, err)
	}

	tid := t.ID()
	if good < n {
		s.rep.BelowFull++
	}
	if packProblem != "" {
		s.rep.Corrupt.Found++
		s.add(ScrubProblem{Kind: ScrubCorrupt, Tenant: tid, Pack: p.ID.String(), Detail: packProblem,
			RepairError: "not repairable by scrub"})
	}
	if good < p.K {
		s.rep.Unreadable++
		s.add(ScrubProblem{Kind: ScrubUnreadable, Tenant: tid, Pack: p.ID.String(),
			Detail: fmt.Sprintf("only %d good shards, %d needed: the pack's data cannot be read or rebuilt (unless missing drives come back)", good, p.K)})
	}
	for i := range checks {
		c := &checks[i]
		if c.kind == "" {
			continue
		}
		if c.kind == ScrubMissing {
			s.rep.Missing.Found++
		} else {
			s.rep.Corrupt.Found++
		}
		drive := ""
		if p.Drives[i] != (repo.DriveID{}) {
			drive = p.Drives[i].String()
		}
		c.problem = s.add(ScrubProblem{Kind: c.kind, Tenant: tid, Pack: p.ID.String(), Shard: shardRef(i), Drive: drive, Detail: c.detail})
	}
	if s.o.Repair {
		s.repairPack(ctx, t, rec, p, trailer, checks, good, packProblem)
	}
	for _, c := range checks {
		if c.kind != "" && !c.hashOnly && !c.repaired {
			s.rep.StillBelowFull++
			break
		}
	}
	return ctx.Err()
}

// packHeader finds the pack's sealed header: the first shard trailer that
// authenticates under the tenant's key. bad[i] is set for a shard whose
// trailer was read and does not authenticate or differs from the header.
func (s *scrubber) packHeader(ctx context.Context, t *Tenant, p repo.PackInfo) (hdr *packHeader, trailer []byte, bad []bool) {
	bad = make([]bool, len(p.Drives))
	for i, d := range p.Drives {
		if m, ok := s.members[d]; !ok || m.Failed {
			continue
		}
		_, tr, err := s.r.ReadShardTrailer(ctx, d, p.Container, p.ID, i)
		if err != nil {
			continue // VerifyShard classifies the shard
		}
		if trailer != nil && bytes.Equal(tr, trailer) {
			continue
		}
		h, err := t.openPackHeader(p.ID, tr)
		switch {
		case err != nil:
			bad[i] = true
		case hdr == nil:
			hdr, trailer = h, tr
		case !sameHashes(h.Hashes, hdr.Hashes) || h.DataLen != hdr.DataLen || len(h.Blobs) != len(hdr.Blobs):
			bad[i] = true
		}
	}
	return hdr, trailer, bad
}

func sameHashes(a, b [][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// repairPack rebuilds the bad shards of one pack, one at a time, holding the
// tenant's lock. For each shard:
//
//  1. choose the target drive (repo.PlaceRepair);
//  2. rebuild the shard from k good ones, check its hash, and put it on the
//     target: atomic and durable when RewriteShard returns;
//  3. if the target differs from the recorded drive (or the index's hashes
//     were wrong), commit the pack record with the new drive in a synced
//     index batch: the index points at the new copy only once it is durable;
//  4. only then delete the old copy, if its drive is in service.
//
// A crash between 2 and 3 leaves an extra copy the index does not point to
// (misplaced; the next repair removes it); between 3 and 4, the old copy is
// the misplaced one. It returns whether every problem of the pack is repaired.
func (s *scrubber) repairPack(ctx context.Context, t *Tenant, rec index.PackRec, p repo.PackInfo, trailer []byte, checks []shardCheck, good int, packProblem string) {
	fail := func(why string) {
		for _, c := range checks {
			if c.kind != "" && !c.repaired && s.problem(c.problem).RepairError == "" {
				s.problem(c.problem).RepairError = why
			}
		}
	}
	if packProblem != "" {
		fail("not repaired: " + packProblem)
		return
	}
	if good < p.K {
		fail(fmt.Sprintf("not repaired: only %d good shards, %d needed", good, p.K))
		return
	}
	unlock := s.e.lockTenant(t.id)
	defer unlock()
	tid := index.TenantID(t.id)
	cur, err := s.e.db.Pack(tid, rec.ID)
	if err != nil {
		if errors.Is(err, index.ErrNotFound) {
			fail("not repaired: the pack was deleted during the scrub")
			return
		}
		fail(fmt.Sprintf("not repaired: read pack record: %v", err))
		return
	}
	if !sameDrives(cur.Drives, rec.Drives) {
		fail("not repaired: the pack record changed during the scrub; scrub again")
		return
	}
	for i := range checks {
		c := &checks[i]
		if c.kind == "" || c.hashOnly || c.repaired {
			continue
		}
		if err := ctx.Err(); err != nil {
			fail(fmt.Sprintf("not repaired: %v", err))
			return
		}
		pr := s.problem(c.problem)
		old := p.Drives[i]
		to, err := s.r.PlaceRepair(p, i, func(d repo.DriveID) int64 { return s.load[d] })
		if err != nil {
			pr.RepairError = trimPrefixes(err.Error())
			continue
		}
		if err := s.r.RewriteShard(ctx, p, i, to, trailer); err != nil {
			pr.RepairError = trimPrefixes(err.Error())
			continue
		}
		s.load[to] += p.ShardLen
		if to != old || hasHashFix(checks) {
			next := cur
			next.Drives = append([]index.DriveID(nil), cur.Drives...)
			next.Drives[i] = index.DriveID(to)
			next.Hashes = toIndexHashes(p.Hashes)
			if err := s.putPack(tid, next); err != nil {
				// The new copy is durable but unrecorded: a misplaced copy
				// for the next scrub; stop here, the index is failing.
				pr.RepairError = fmt.Sprintf("rebuilt on drive %s, but the index could not be updated: %v", to, err)
				fail(pr.RepairError)
				return
			}
			cur = next
			s.markHashFixed(checks)
		}
		p.Drives[i] = to
		c.repaired = true
		pr.Repaired = true
		if pr.Drive != to.String() {
			pr.Detail += fmt.Sprintf("; rebuilt on drive %s", to)
		} else {
			pr.Detail += "; rebuilt in place"
		}
		s.countRepaired(c.kind)
		if to != old && old != (repo.DriveID{}) {
			if m, ok := s.members[old]; ok && !m.Failed {
				if err := s.r.DeleteShardCopy(ctx, old, p.Container, p.ID, i); err != nil {
					pr.RepairError = fmt.Sprintf("the old copy on drive %s was not removed (the next repair removes it): %v", old, trimPrefixes(err.Error()))
				}
			}
		}
	}
	if hasHashFix(checks) {
		next := cur
		next.Hashes = toIndexHashes(p.Hashes)
		if err := s.putPack(tid, next); err != nil {
			for _, c := range checks {
				if c.hashOnly {
					s.problem(c.problem).RepairError = fmt.Sprintf("the index could not be updated: %v", err)
				}
			}
			return
		}
		s.markHashFixed(checks)
	}
}

func hasHashFix(checks []shardCheck) bool {
	for _, c := range checks {
		if c.hashOnly && !c.repaired {
			return true
		}
	}
	return false
}

// markHashFixed marks the shards whose only problem was the index's hash as
// repaired, once a pack record with the sealed header's hashes is committed.
func (s *scrubber) markHashFixed(checks []shardCheck) {
	for i := range checks {
		c := &checks[i]
		if c.hashOnly && !c.repaired {
			pr := s.problem(c.problem)
			pr.Repaired = true
			pr.Detail += "; index corrected"
			s.countRepaired(c.kind)
			c.repaired = true
		}
	}
}

func (s *scrubber) countRepaired(kind string) {
	switch kind {
	case ScrubMissing:
		s.rep.Missing.Repaired++
	case ScrubCorrupt:
		s.rep.Corrupt.Repaired++
	case ScrubMisplaced:
		s.rep.Misplaced.Repaired++
	case ScrubOrphan:
		s.rep.Orphaned.Repaired++
	}
}

// putPack commits a pack record in a synced batch.
func (s *scrubber) putPack(tid index.TenantID, rec index.PackRec) error {
	b := s.e.db.NewBatch()
	defer b.Close()
	b.PutPack(tid, rec)
	if err := b.Commit(); err != nil {
		return fmt.Errorf("index pack %s: %w", rec.ID, err)
	}
	return nil
}

func sameDrives(a, b []index.DriveID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func toIndexHashes(hs []repo.Hash) []index.Hash {
	out := make([]index.Hash, len(hs))
	for i, h := range hs {
		out[i] = index.Hash(h)
	}
	return out
}

// removeAll removes the orphans and misplaced copies the listing found, then,
// if there were more than it could remember, lists the drives again for the
// rest, as long as each round removes something.
func (s *scrubber) removeAll(ctx context.Context) error {
	for {
		for _, v := range s.containers {
			if v.keep || v.done {
				continue
			}
			v.done = true // tried once per scrub
			if err := s.r.PurgeContainer(ctx, v.name); err != nil {
				s.problem(v.problem).RepairError = trimPrefixes(err.Error())
				continue
			}
			s.problem(v.problem).Repaired = true
			s.rep.Orphaned.Repaired += v.shards
		}
		removed, err := s.removePending(ctx)
		if err != nil {
			return err
		}
		if !s.overflow || removed == 0 {
			return nil
		}
		s.overflow = false
		s.pending = s.pending[:0]
		if err := s.listDrives(ctx, false); err != nil {
			return err
		}
	}
}

// removePending removes the pending orphans and misplaced copies, checking
// each against the index again: a misplaced copy is removed only when the
// copy the index records verifies in full.
func (s *scrubber) removePending(ctx context.Context) (int, error) {
	removed := 0
	for _, r := range s.pending {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		pr := s.problem(r.problem)
		rec, err := s.e.db.Pack(r.tenant, index.PackID(r.pack))
		switch {
		case errors.Is(err, index.ErrNotFound):
			// An orphan (its pack was never indexed, or was deleted since).
		case err != nil:
			return removed, fmt.Errorf("scrub: read pack %s: %w", r.pack, err)
		case r.shard < len(rec.Drives) && repo.DriveID(rec.Drives[r.shard]) == r.drive:
			// A repair moved the shard here: it is the indexed copy now.
			pr.Repaired = true
			pr.Detail += "; the index now records this copy"
			s.countRepaired(r.kind)
			continue
		case r.shard < len(rec.Drives):
			p := packInfo(r.container, rec)
			if err := s.r.VerifyShard(ctx, p, r.shard); err != nil {
				if ctx.Err() != nil {
					return removed, ctx.Err()
				}
				pr.RepairError = "kept: the copy the index records is not good: " + trimPrefixes(err.Error())
				continue
			}
		}
		if err := s.r.DeleteShardCopy(ctx, r.drive, r.container, r.pack, r.shard); err != nil {
			pr.RepairError = trimPrefixes(err.Error())
			continue
		}
		removed++
		pr.Repaired = true
		s.countRepaired(r.kind)
	}
	return removed, nil
}

// staleTemp counts (and with Repair removes) temporary files of interrupted
// puts older than staleTempAge, one problem per drive. The age is measured
// on the wall clock, like the files' modification times.
func (s *scrubber) staleTemp(ctx context.Context) error {
	before := time.Now().Add(-staleTempAge)
	type tally struct{ files, bytes int64 }
	per := map[repo.DriveID]*tally{}
	var order []repo.DriveID
	err := s.r.ListStaleTemp(ctx, before, func(d repo.DriveID, _ string, size int64) error {
		t := per[d]
		if t == nil {
			t = &tally{}
			per[d] = t
			order = append(order, d)
		}
		t.files++
		t.bytes += size
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.errorf("listing temporary files: %v", trimPrefixes(err.Error()))
	}
	var found int64
	idx := map[repo.DriveID]int{}
	for _, d := range order {
		t := per[d]
		found += t.files
		idx[d] = s.add(ScrubProblem{Kind: ScrubStaleTemp, Drive: d.String(),
			Detail: fmt.Sprintf("%d temporary file(s), %d bytes, left by interrupted writes more than %s ago", t.files, t.bytes, strings.TrimSuffix(staleTempAge.String(), "0m0s"))})
	}
	s.rep.StaleTemp.Found = found
	if !s.o.Repair || found == 0 {
		return nil
	}
	if err := s.r.CleanStaleTemp(ctx, before); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, d := range order {
			s.problem(idx[d]).RepairError = trimPrefixes(err.Error())
		}
		return nil
	}
	for _, d := range order {
		s.problem(idx[d]).Repaired = true
	}
	s.rep.StaleTemp.Repaired = found
	return nil
}

// tryLockTenant takes the lock of tenant id if it is free (see lockTenant).
func (e *Engine) tryLockTenant(id [16]byte) (func(), bool) {
	e.mu.Lock()
	m := e.tenantMu[id]
	if m == nil {
		m = &sync.Mutex{}
		e.tenantMu[id] = m
	}
	e.mu.Unlock()
	if !m.TryLock() {
		return nil, false
	}
	return m.Unlock, true
}

// trimPrefixes drops the package prefixes of sentinel errors from a message.
func trimPrefixes(s string) string {
	for _, p := range []string{"engine: ", "repo: ", "index: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}
