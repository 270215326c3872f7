package engine

import (
	"crypto/ed25519"
	"encoding/binary"
	"golang.org/x/sys/unix"

	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"coffer/index"
	"coffer/repo"
)

// RebuildOptions configure Rebuild.
type RebuildOptions struct {
	// Drives lists the drive folders to rebuild from. Racks given here are
	// informational: each drive's identity file decides which drive it is and
	// in which rack it sits. Empty means the drive paths of DIR/config.json,
	// or, without that file, the folders DIR/drives/*.
	Drives []DriveSpec
	// MasterKeyFile is the master key file; "" means DIR/master.key.
	MasterKeyFile string
	// RetryLock is how long to wait for another process holding the
	// repository; 0 means do not wait.
	RetryLock time.Duration
	// Command names the running command in the lock holder description.
	Command string
	// Warn receives one line per warning as it happens (a missing drive, a
	// record that failed authentication, ...); nil discards them. The same
	// warnings are in the report.
	Warn io.Writer
	// S3CAFile and S3AllowVersioning configure S3 drives (repo.S3Options).
	S3CAFile          string
	S3AllowVersioning bool
}

// RebuildReport says what Rebuild recovered.
type RebuildReport struct {
	Repository string   `json:"repository"`
	Drives     int      `json:"drives"`          // drive folders read
	Missing    []string `json:"drives_missing"`  // configured drives not found (ID and last known path)
	Tenants    int      `json:"tenants"`         // tenant records indexed
	Shredded   int      `json:"tenants_deleted"` // tombstones of shredded tenants indexed
	Packs      int      `json:"packs"`
	Blobs      int      `json:"blobs"`
	Snapshots  int      `json:"snapshots"`
	Forgotten  int      `json:"snapshots_forgotten"` // snapshot records whose newest version is a tombstone
	Ignored    int      `json:"records_ignored"`     // record copies that failed to decode or authenticate
	Unreadable int      `json:"shards_unreadable"`   // shards whose header or sealed pack header could not be read
	Incomplete int      `json:"packs_incomplete"`    // packs with fewer than k shards on the drives, left out
	Foreign    int      `json:"shards_unknown"`      // shards of containers that belong to no live tenant
	// AuditEntries were copied from the drives; AuditMissing are sequence
	// numbers up to the drives' head with no valid copy.
	AuditEntries uint64 `json:"audit_entries"`
	AuditMissing uint64 `json:"audit_missing"`
	// AuditError says why the audit log could not be recovered ("" if it was).
	AuditError string `json:"audit_error,omitempty"`
	// MovedAside is where the previous index folder was moved ("" if there
	// was none). Rebuild never deletes an index.
	MovedAside string   `json:"moved_aside,omitempty"`
	Warnings   []string `json:"warnings"`
}

// maxReportWarnings bounds the warnings kept in a report; the rest are only
// counted (and written to Warn), so memory does not grow with the damage.
const maxReportWarnings = 200

// rebuildBatchOps is how many index operations Rebuild puts in one batch
// before committing it. A pack's record and all its blob locations always go
// in the same batch, so a batch may run over by one pack.
const rebuildBatchOps = 4096

// rebuildDir is where Rebuild builds the new index before moving it into
// place, so that an interrupted rebuild never leaves a half-built index where
// Open would use it.
func rebuildDir(dir string) string { return filepath.Join(dir, "index.rebuild") }

// IndexLost reports whether err, from Open or from reading the index, means
// the index is missing or damaged, so that Rebuild can recreate it from the
// drives. A lock held by another process or a wrong master key is not such an
// error.
func IndexLost(err error) bool {
	if err == nil || errors.Is(err, ErrRepoLocked) || errors.Is(err, ErrWrongKey) ||
		errors.Is(err, ErrNoMasterKey) || errors.Is(err, ErrBadKeyFile) {
		return false
	}
	return errors.Is(err, ErrRepoNotFound) || errors.Is(err, index.ErrCorrupt) || errors.Is(err, ErrCorrupt)
}

// CanRebuild reports whether dir holds what Rebuild needs when no drive
// folders are given: a config copy (DIR/config.json) or drive folders
// (DIR/drives). It does not look for the master key.
func CanRebuild(dir string) bool {
	if _, err := os.Stat(configCopyPath(dir)); err == nil {
		return true
	}
	fi, err := os.Stat(filepath.Join(dir, "drives"))
	return err == nil && fi.IsDir()
}

// Rebuild recreates the index of the repository in dir from the drives and
// the master key alone (docs/design.md):
//
//   - the repository config from the r/config records (highest version);
//   - tenant records from r/tenants/* (highest valid version; a tombstone
//     means the tenant was shredded: its tombstone is indexed, its data not);
//   - every pack of every tenant from the sealed pack header that each of its
//     shards carries, with the drives on which its shards are found now;
//   - snapshot records from t/<tenant>/s/* (highest valid version; a
//     tombstone means the snapshot was forgotten and it is not indexed);
//   - the audit log (recoverAudit); one that cannot be recovered is
//     reported in the report's AuditError, not an error.
//
// It takes the repository lock, reads the drives and never writes to them.
// When o.Drives is given, dir is created if needed (the head node was lost).
// The new index is built in DIR/index.rebuild with the config written last
// and then moved into place; the previous index folder, if any, is renamed to
// DIR/index.broken-<time>, never deleted. DIR/config.json is rewritten with
// the drive paths where the drives were found.
//
// Errors: ErrRepoNotFound when no drive is found; ErrWrongKey when the master
// key does not belong to the drives' repository; an error wrapping
// repo.ErrForeignDrive naming the folder of a drive of another repository.
// Records that fail authentication and unreadable shards are not errors: they
// are skipped, counted and reported. Memory does not grow with the number of
// packs or blobs: shards are streamed and the new index answers "already
// indexed".
func Rebuild(ctx context.Context, dir string, o RebuildOptions) (*RebuildReport, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if len(o.Drives) == 0 {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("%w: %s does not exist (give the drive folders with --drives)", ErrRepoNotFound, dir)
		}
	}
	keyFile := o.MasterKeyFile
	if keyFile == "" {
		keyFile = defaultKeyFile(dir)
	}
	kf, err := readKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	if len(o.Drives) > 0 {
		if err := makePrivateDir(dir); err != nil {
			return nil, fmt.Errorf("create repository folder: %w", err)
		}
	}
	command := o.Command
	if command == "" {
		command = "coffer index rebuild"
	}
	lock, err := acquireLock(ctx, dir, o.RetryLock, command)
	if err != nil {
		return nil, err
	}
	defer releaseLock(lock)

	rb := &rebuilder{dir: dir, o: o, keyFile: keyFile, repoID: kf.cur.repo,
		rep: &RebuildReport{Repository: hex.EncodeToString(kf.cur.repo[:]), Missing: []string{}, Warnings: []string{}}}
	if err := rb.run(ctx); err != nil {
		return nil, err
	}
	return rb.rep, nil
}

// rebuilder holds the state of one Rebuild. It is used from one goroutine.
type rebuilder struct {
	dir     string
	o       RebuildOptions
	keyFile string
	repoID  [16]byte // the master key's repository
	rep     *RebuildReport

	found     map[repo.DriveID]*foundDrive // drives whose identity matches the key's repository
	cfg       config
	cfgRaw    []byte        // the config bytes to store
	members   []*foundDrive // drives to read, in config order: active ones first
	r         *repo.Repo    // every found drive of the config, in service
	placement *repo.Repo    // the config's active drives, to predict where shards went

	e       *Engine            // a partial engine (keys, cfg, db, repo) for the record helpers
	tenants map[string]*Tenant // by container (tenant ID hex)
	b       *index.Batch       // the open batch
	pending map[[32]byte]bool  // tenant ‖ pack IDs in the open batch
}

// foundDrive is a drive folder whose identity was read.
type foundDrive struct {
	path  string
	ident repo.Identity
	drive repo.Drive
}

func (rb *rebuilder) warnf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if rb.o.Warn != nil {
		fmt.Fprintf(rb.o.Warn, "warning: %s\n", msg)
	}
	if len(rb.rep.Warnings) < maxReportWarnings {
		rb.rep.Warnings = append(rb.rep.Warnings, msg)
	} else if len(rb.rep.Warnings) == maxReportWarnings {
		rb.rep.Warnings = append(rb.rep.Warnings, "more warnings were left out of this report")
	}
}

func (rb *rebuilder) run(ctx context.Context) error {
	if err := rb.findDrives(ctx); err != nil {
		return err
	}
	if err := rb.readConfig(ctx); err != nil {
		return err
	}
	if err := rb.openRepo(); err != nil {
		return err
	}
	tmp := rebuildDir(rb.dir)
	// A leftover of an interrupted rebuild is an unfinished new index or,
	// after a crash in the middle of installing, the previous index: move it
	// aside rather than delete it.
	if _, err := os.Lstat(tmp); err == nil {
		if err := os.Rename(tmp, asideName(indexDir(rb.dir))); err != nil {
			return fmt.Errorf("move the unfinished rebuild in %s aside: %w", tmp, err)
		}
	}
	if err := makePrivateDir(tmp); err != nil {
		return fmt.Errorf("create the new index: %w", err)
	}
	db, err := index.Open(tmp, index.Options{})
	if err != nil {
		return fmt.Errorf("create the new index: %w", err)
	}
	rb.e.db, rb.e.repo, rb.e.cfg = db, rb.r, rb.cfg
	err = rb.recover(ctx)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close the new index: %w", cerr)
	}
	if err != nil {
		return err
	}
	return rb.install(tmp)
}

// recover fills the new index: tenants, then packs, then snapshots (a
// snapshot only after what it references), then the config last, so an index
// left by an interrupted rebuild has no config and Open refuses it.
func (rb *rebuilder) recover(ctx context.Context) error {
	rb.b = rb.e.db.NewBatch()
	rb.pending = map[[32]byte]bool{}
	defer func() { rb.b.Close() }()
	if err := rb.recoverTenants(ctx); err != nil {
		return err
	}
	if err := rb.recoverPacks(ctx); err != nil {
		return err
	}
	for _, c := range sortedKeys(rb.tenants) {
		if err := rb.recoverSnapshots(ctx, rb.tenants[c]); err != nil {
			return err
		}
		if err := rb.recoverClientKeys(ctx, rb.tenants[c]); err != nil {
			return err
		}
	}
	if err := rb.flush(); err != nil {
		return err
	}
	// The audit log does not stop a rebuild: the data must come back even
	// when the log cannot (coffer audit --verify then says what is wrong).
	ar, err := recoverAudit(ctx, rb.r, rb.e.db, rb.e.currentKey())
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		rb.rep.AuditError = err.Error()
		rb.warnf("the audit log could not be recovered from the drives: %v", err)
	default:
		rb.rep.AuditEntries, rb.rep.AuditMissing = ar.Entries, ar.Missing
		if ar.Missing > 0 {
			rb.warnf("%d entries of the audit log have no valid copy on the drives (coffer audit --verify reports them)", ar.Missing)
		}
	}
	rb.b.PutConfig(rb.cfgRaw)
	return rb.flush()
}

// flush commits the open batch and starts a new one.
func (rb *rebuilder) flush() error {
	if err := rb.b.Commit(); err != nil {
		return fmt.Errorf("write the new index: %w", err)
	}
	rb.b.Close()
	rb.b = rb.e.db.NewBatch()
	clear(rb.pending)
	return nil
}

func (rb *rebuilder) maybeFlush() error {
	if rb.b.Len() < rebuildBatchOps {
		return nil
	}
	return rb.flush()
}

// findDrives opens the drive folders and reads their identities.
func (rb *rebuilder) findDrives(ctx context.Context) error {
	specs := rb.o.Drives
	explicit := len(specs) > 0
	if !explicit {
		raw, err := os.ReadFile(configCopyPath(rb.dir))
		if err == nil {
			var c config
			if err := json.Unmarshal(raw, &c); err != nil {
				rb.warnf("%s is unreadable (%v); looking for drives in %s", configCopyPath(rb.dir), err, filepath.Join(rb.dir, "drives"))
			}
			for _, d := range c.Drives {
				specs = append(specs, DriveSpec{Rack: d.Rack, Path: resolveDrivePath(rb.dir, d.Path)})
			}
		}
		if len(specs) == 0 {
			paths, _ := filepath.Glob(filepath.Join(rb.dir, "drives", "*"))
			for _, p := range paths {
				specs = append(specs, DriveSpec{Path: p})
			}
		}
	}
	if len(specs) == 0 {
		return fmt.Errorf("%w: %s has neither config.json nor drive folders (give them with --drives)", ErrRepoNotFound, rb.dir)
	}
	rb.found = map[repo.DriveID]*foundDrive{}
	var foreign []string
	foreignRepos := map[[16]byte]bool{}
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := canonicalDrivePath(s.Path)
		if err != nil {
			return err
		}
		drv, err := openDrivePath(ctx, p, s3Options(rb.o.S3CAFile, rb.o.S3AllowVersioning), false)
		var ident repo.Identity
		if err == nil {
			ident, err = repo.ReadIdentity(ctx, drv)
		}
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "repo: ")
			if explicit {
				return fmt.Errorf("drive folder %s cannot be used: %s", p, msg)
			}
			rb.warnf("drive folder %s is skipped: %s", p, msg)
			continue
		}
		if ident.Repository != rb.repoID {
			foreign = append(foreign, fmt.Sprintf("%s (drive %s of repository %x)", p, ident.Drive, ident.Repository[:]))
			foreignRepos[ident.Repository] = true
			continue
		}
		if prev, dup := rb.found[ident.Drive]; dup {
			if prev.path == p {
				continue
			}
			return invalidf("drive folders %s and %s carry the same drive %s; give only one of them", prev.path, p, ident.Drive)
		}
		rb.found[ident.Drive] = &foundDrive{path: p, ident: ident, drive: drv}
	}
	if len(rb.found) == 0 && len(foreign) > 0 {
		var other [16]byte
		for id := range foreignRepos {
			other = id
		}
		return fmt.Errorf("%w: the master key belongs to repository %x, but the drives belong to repository %x", ErrWrongKey, rb.repoID[:], other[:])
	}
	if len(foreign) > 0 {
		return fmt.Errorf("%w: %s belongs to another repository, not to repository %x of the master key; leave it out of the drive list",
			repo.ErrForeignDrive, strings.Join(foreign, ", "), rb.repoID[:])
	}
	if len(rb.found) == 0 {
		return fmt.Errorf("%w: no drive of repository %x was found", ErrRepoNotFound, rb.repoID[:])
	}
	return nil
}

// readConfig reads r/config from every found drive and keeps the highest
// version that decodes and belongs to the key's repository. The config is
// plain (not sealed), so the master key's check value is verified against it
// as Open does.
func (rb *rebuilder) readConfig(ctx context.Context) error {
	var best *record
	var bestCfg config
	for _, id := range sortedDriveIDs(rb.found) {
		fd := rb.found[id]
		b, err := readObject(ctx, fd.drive, configName)
		if errors.Is(err, repo.ErrNotFound) {
			continue
		}
		if err != nil {
			rb.warnf("drive %s (%s): %v", id, fd.path, err)
			continue
		}
		r, err := decodeRecord(b)
		var c config
		if err == nil && (r.Kind != recConfig || r.tombstone()) {
			err = fmt.Errorf("%w: not a config record", ErrCorrupt)
		}
		if err == nil {
			if jerr := json.Unmarshal(r.Body, &c); jerr != nil || c.Format != "coffer" {
				err = fmt.Errorf("%w: config JSON is unreadable", ErrCorrupt)
			}
		}
		if err == nil && c.Repository != hex.EncodeToString(rb.repoID[:]) {
			err = fmt.Errorf("%w: config of repository %s", ErrCorrupt, c.Repository)
		}
		if err != nil {
			rb.rep.Ignored++
			rb.warnf("copy of %s on drive %s is ignored: %v", configName, id, err)
			continue
		}
		if best == nil || r.Version > best.Version {
			best, bestCfg = r, c
		}
	}
	if best == nil {
		return fmt.Errorf("%w: no drive holds a readable repository configuration (%s)", ErrCorrupt, configName)
	}
	cfg := bestCfg
	if cfg.Version != 1 {
		return fmt.Errorf("repository format version %d is not supported by this coffer", cfg.Version)
	}
	// The key file must hold the config's epoch (or, in the middle of a
	// rotation, the next one), as Open requires.
	rb.e = &Engine{dir: rb.dir, opts: Options{Warn: rb.o.Warn}, keyFile: rb.keyFile, cfg: cfg, tenantMu: map[[16]byte]*sync.Mutex{}}
	rb.e.refs.Store(1)
	if err := rb.e.loadKeys(); err != nil {
		return err
	}
	// Where the drives are now, and in which rack: the identity files decide.
	changed := false
	inConfig := map[string]bool{}
	for i := range cfg.Drives {
		d := &cfg.Drives[i]
		inConfig[d.ID] = true
		id, err := repo.ParseDriveID(d.ID)
		if err != nil {
			return fmt.Errorf("%w: drive ID %q in configuration", ErrCorrupt, d.ID)
		}
		fd := rb.found[id]
		if fd == nil {
			rb.rep.Missing = append(rb.rep.Missing, fmt.Sprintf("%s (%s)", d.ID, resolveDrivePath(rb.dir, d.Path)))
			if d.State == driveActive {
				rb.warnf("drive %s (rack %s, last at %s) was not found; its shards are recorded as missing", d.ID, d.Rack, resolveDrivePath(rb.dir, d.Path))
			}
			continue
		}
		if sp := storedDrivePath(rb.dir, fd.path); d.Path != sp || d.Rack != fd.ident.Rack {
			d.Path, d.Rack = sp, fd.ident.Rack
			changed = true
		}
	}
	for _, id := range sortedDriveIDs(rb.found) {
		if !inConfig[id.String()] {
			rb.warnf("drive %s at %s is not in the repository configuration; it is left out", id, rb.found[id].path)
			delete(rb.found, id)
		}
	}
	rb.rep.Drives = len(rb.found)
	rb.cfg = cfg
	rb.cfgRaw = best.Body
	if changed {
		raw, err := json.Marshal(&cfg)
		if err != nil {
			return err
		}
		rb.cfgRaw = raw
	}
	return nil
}

// openRepo builds the drive set to read from: every found drive of the
// config is in service here, even one the config marks failed (its shards
// may still be the only copies); drives not found stand in as failed.
// Placement is predicted over the config's active drives, as writers saw them.
func (rb *rebuilder) openRepo() error {
	var members, placing []repo.Member
	var active, failed []*foundDrive
	for _, d := range rb.cfg.Drives {
		id, _ := repo.ParseDriveID(d.ID)
		fd := rb.found[id]
		m := repo.Member{ID: id, Rack: d.Rack}
		if fd != nil {
			m.Drive = fd.drive
			if d.State == driveActive {
				active = append(active, fd)
			} else {
				failed = append(failed, fd)
			}
		} else {
			m.Failed = true
			m.Drive = unavailableDrive{err: fmt.Errorf("drive %s was not found", d.ID)}
		}
		members = append(members, m)
		if d.State == driveActive {
			placing = append(placing, repo.Member{ID: id, Rack: d.Rack, Drive: m.Drive})
		}
	}
	rb.members = append(active, failed...)
	opts := repo.Options{K: rb.cfg.K, M: rb.cfg.M, BlockSize: rb.cfg.BlockSize}
	r, err := repo.New(members, opts)
	if err != nil {
		return fmt.Errorf("open the drives: %w", err)
	}
	rb.r = r
	if p, err := repo.New(placing, opts); err == nil {
		rb.placement = p
	}
	return nil
}

// install moves the previous index aside, the new one into place, and
// rewrites the config copy.
func (rb *rebuilder) install(tmp string) error {
	cur := indexDir(rb.dir)
	if _, err := os.Lstat(cur); err == nil {
		aside := asideName(cur)
		// Swap the two folders in one step, so that a crash leaves either
		// the old or the new index in place, never none; then move the old
		// one (now at tmp) aside.
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, cur, unix.RENAME_EXCHANGE); err == nil {
			if err := os.Rename(tmp, aside); err != nil {
				return fmt.Errorf("move the old index aside: %w", err)
			}
			rb.rep.MovedAside = aside
			return rb.finishInstall()
		}
		// The file system cannot exchange: two renames.
		if err := os.Rename(cur, aside); err != nil {
			return fmt.Errorf("move the old index aside: %w", err)
		}
		rb.rep.MovedAside = aside
	}
	if err := os.Rename(tmp, cur); err != nil {
		return fmt.Errorf("move the new index into place: %w", err)
	}
	return rb.finishInstall()
}

// asideName returns a fresh "index.broken-TIME" name next to cur.
func asideName(cur string) string {
	aside := cur + ".broken-" + time.Now().UTC().Format("20060102T150405Z")
	for i := 2; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			return aside
		}
		aside = fmt.Sprintf("%s.broken-%s-%d", cur, time.Now().UTC().Format("20060102T150405Z"), i)
	}
}

func (rb *rebuilder) finishInstall() error {
	if err := syncDir(rb.dir); err != nil {
		return fmt.Errorf("sync %s: %w", rb.dir, err)
	}
	if err := writeFileDurable(configCopyPath(rb.dir), rb.cfgRaw, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", configCopyPath(rb.dir), err)
	}
	return nil
}

// readObject reads a whole small object (a record) from one drive.
func readObject(ctx context.Context, d repo.Drive, name string) ([]byte, error) {
	size, err := d.Size(ctx, name)
	if err != nil {
		return nil, err
	}
	if size > repo.MaxRecordSize {
		return nil, fmt.Errorf("%s: %d bytes, more than %d: %w", name, size, repo.MaxRecordSize, repo.ErrCorrupt)
	}
	b := make([]byte, size)
	if err := d.ReadAt(ctx, name, b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// recordCopies reads every copy of a record from every drive read. Unlike
// repo.GetRecord, which stops at the drives the record is placed on, it asks
// every drive: the version rule needs the highest version anywhere, and a
// drive that was added or moved since the record was written may hold it.
func (rb *rebuilder) recordCopies(ctx context.Context, name string) ([][]byte, error) {
	var out [][]byte
	for _, fd := range rb.members {
		b, err := readObject(ctx, fd.drive, name)
		if errors.Is(err, repo.ErrNotFound) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			rb.warnf("drive %s: read %s: %v", fd.ident.Drive, name, err)
			continue
		}
		out = append(out, b)
	}
	return out, nil
}

// newestRecord picks, among the copies of the sealed record name, the highest
// version that decodes and authenticates under one of keys and owner; at equal
// versions a tombstone wins. Copies that fail are counted and reported. It
// returns nil when no copy is valid.
func (rb *rebuilder) newestRecord(copies [][]byte, kind byte, keys []*[KeySize]byte, owner [16]byte, name string) (best *record, body []byte) {
	for _, c := range copies {
		r, err := decodeRecord(c)
		if err == nil && r.Kind != kind {
			err = fmt.Errorf("%w: record kind %d, want %d", ErrCorrupt, r.Kind, kind)
		}
		var b []byte
		if err == nil {
			for _, key := range keys {
				if b, err = openRecord(key, r, owner, name); err == nil {
					break
				}
			}
		}
		if err != nil {
			rb.rep.Ignored++
			rb.warnf("a copy of record %s is ignored: %v", name, err)
			continue
		}
		if best == nil || r.Version > best.Version || (r.Version == best.Version && r.tombstone() && !best.tombstone()) {
			best, body = r, b
		}
	}
	return best, body
}

// recoverTenants indexes the newest valid version of every tenant record.
func (rb *rebuilder) recoverTenants(ctx context.Context) error {
	rb.tenants = map[string]*Tenant{}
	// Tenant records are sealed under the admin key of the epoch they name;
	// during a rotation some are under the current epoch, some the next.
	var keys []*[KeySize]byte
	for _, mk := range []*masterKey{rb.e.mk, rb.e.mkNext} {
		if mk != nil {
			keys = append(keys, &mk.admin)
		}
	}
	const prefix = "r/tenants/"
	return rb.r.ListRecords(ctx, prefix, func(name string) error {
		var id [16]byte
		if err := decodeHexInto(id[:], strings.TrimPrefix(name, prefix)); err != nil {
			rb.warnf("record %s is not a tenant record; ignored", name)
			return nil
		}
		copies, err := rb.recordCopies(ctx, name)
		if err != nil {
			return err
		}
		best, body := rb.newestRecord(copies, recTenant, keys, id, name)
		if best == nil {
			rb.warnf("tenant %x: no valid copy of its record; its data cannot be recovered", id[:])
			return nil
		}
		var m tenantMeta
		if err := json.Unmarshal(body, &m); err != nil {
			rb.rep.Ignored++
			rb.warnf("tenant %x: record version %d is unreadable; ignored", id[:], best.Version)
			return nil
		}
		if best.tombstone() {
			m.Wrapped = nil
		} else if len(m.Wrapped) == 0 {
			rb.rep.Ignored++
			rb.warnf("tenant %x: record version %d has no wrapped key; ignored", id[:], best.Version)
			return nil
		}
		// Stored as putTenant stores it: a tombstone keeps its record
		// (without a wrapped key) so the tenant stays shredded.
		rec := index.TenantRec{ID: id, Version: best.Version, Epoch: m.Epoch, Wrapped: m.Wrapped, Meta: best.Body}
		rb.b.PutTenant(rec)
		if best.tombstone() {
			rb.rep.Shredded++
			return rb.maybeFlush()
		}
		rb.rep.Tenants++
		t, err := rb.e.tenantHandle(&tenantEntry{rec: rec, meta: m})
		if err != nil {
			rb.warnf("tenant %x: %v; its packs and snapshots cannot be recovered", id[:], err)
		} else {
			rb.tenants[t.container()] = t
		}
		return rb.maybeFlush()
	})
}

// recoverPacks streams every shard on the drives and indexes each pack the
// first time one of its shards with a good sealed header is seen.
func (rb *rebuilder) recoverPacks(ctx context.Context) error {
	foreign := map[string]bool{}
	var fnErr error // an error of the index, which stops the rebuild
	err := rb.r.ListShards(ctx, func(d repo.DriveID, container string, id repo.PackID, i int, _ int64) error {
		fnErr = rb.packOfShard(ctx, foreign, d, container, id, i)
		return fnErr
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case fnErr != nil:
		return fnErr
	case err != nil:
		// A drive that cannot be listed does not stop the rebuild: its
		// shards are recorded as missing, like those of a lost drive.
		rb.warnf("%v; shards on that drive are recorded as missing (run coffer scrub)", err)
	}
	return nil
}

// packOfShard indexes the pack of one listed shard unless it is indexed
// already. Only index errors are returned; an unreadable shard is counted and
// reported, and another shard of the same pack may still serve.
func (rb *rebuilder) packOfShard(ctx context.Context, foreign map[string]bool, d repo.DriveID, container string, id repo.PackID, i int) error {
	t := rb.tenants[container]
	if t == nil {
		rb.rep.Foreign++
		if !foreign[container] && len(foreign) < maxReportWarnings {
			foreign[container] = true
			rb.warnf("drive %s holds shards of container %s, which belongs to no recovered tenant; they are left alone", d, container)
		}
		return nil
	}
	var key [32]byte
	copy(key[:16], t.id[:])
	copy(key[16:], id[:])
	if rb.pending[key] {
		return nil
	}
	if _, err := rb.e.db.Pack(t.id, index.PackID(id)); err == nil {
		return nil
	} else if !errors.Is(err, index.ErrNotFound) {
		return fmt.Errorf("read the new index: %w", err)
	}
	h, err := rb.packHeader(ctx, t, d, id, i)
	if err != nil {
		rb.rep.Unreadable++
		rb.warnf("pack %s shard %d on drive %s: %v; another shard may still serve", id, i, d, err)
		return nil
	}
	rec := index.PackRec{
		ID: index.PackID(id), K: uint8(h.K), M: uint8(h.M), BlockSize: h.BlockSize,
		DataLen: h.DataLen, ShardLen: h.ShardLen, Blobs: uint32(len(h.Blobs)), Created: h.Created,
	}
	found := 0
	for j := 0; j < h.K+h.M; j++ {
		// Shard i is on d, but it may also be on a drive the locate order
		// prefers (an active drive over one the config marks failed).
		loc := rb.locateShard(ctx, container, id, j)
		if loc != (repo.DriveID{}) {
			found++
		}
		rec.Drives = append(rec.Drives, index.DriveID(loc))
		rec.Hashes = append(rec.Hashes, index.Hash(h.Hashes[j]))
	}
	rb.pending[key] = true
	if found < h.K {
		// Fewer than k shards: unreadable. Almost always a write that was
		// interrupted before its quorum (never indexed, nothing refers to
		// it); scrub --repair removes the shards.
		rb.rep.Incomplete++
		rb.warnf("pack %s has only %d of its %d shards on the drives, fewer than the %d needed to read it; it is left out (scrub --repair removes its shards)", id, found, h.K+h.M, h.K)
		return nil
	}
	rb.b.PutPack(t.id, rec)
	for _, bl := range h.Blobs {
		rb.b.PutBlob(t.id, bl.ID, index.BlobLoc{Pack: rec.ID, Type: index.BlobType(bl.Type), Offset: bl.Offset, Length: bl.Length, RawLength: bl.Raw})
	}
	rb.pending[key] = true
	rb.rep.Packs++
	rb.rep.Blobs += len(h.Blobs)
	return rb.maybeFlush()
}

// packHeader reads and opens the sealed pack header carried by one shard.
func (rb *rebuilder) packHeader(ctx context.Context, t *Tenant, d repo.DriveID, id repo.PackID, i int) (*packHeader, error) {
	sh, trailer, err := rb.r.ReadShardTrailer(ctx, d, t.container(), id, i)
	if err != nil {
		return nil, err
	}
	h, err := t.openPackHeader(id, trailer)
	if err != nil {
		return nil, fmt.Errorf("sealed pack header: %w", err)
	}
	if h.K != sh.K || h.M != sh.M || int64(h.DataLen) != sh.DataLen || int64(h.ShardLen) != sh.ShardLen || int(h.BlockSize) != sh.BlockSize {
		return nil, fmt.Errorf("%w: shard header does not match the sealed pack header", ErrCorrupt)
	}
	return h, nil
}

// locateShard finds the drive that holds shard i of a pack: first the drive
// placement predicts, then every other active drive, then drives the config
// marks failed. It returns the zero DriveID when no drive has it (the pack is
// below full redundancy; scrub --repair rewrites the shard).
func (rb *rebuilder) locateShard(ctx context.Context, container string, id repo.PackID, i int) repo.DriveID {
	name := repo.ShardName(container, id, i)
	var first repo.DriveID
	if rb.placement != nil {
		if placed, err := rb.placement.Place(id); err == nil && i < len(placed) {
			first = placed[i]
			if fd := rb.found[first]; fd != nil {
				if _, err := fd.drive.Size(ctx, name); err == nil {
					return first
				}
			}
		}
	}
	for _, fd := range rb.members {
		if fd.ident.Drive == first {
			continue
		}
		if _, err := fd.drive.Size(ctx, name); err == nil {
			return fd.ident.Drive
		}
	}
	return repo.DriveID{}
}

// recoverSnapshots indexes the newest valid version of every snapshot record
// of t; a snapshot whose newest version is a tombstone was forgotten.
func (rb *rebuilder) recoverSnapshots(ctx context.Context, t *Tenant) error {
	prefix := "t/" + t.container() + "/s/"
	err := rb.r.ListRecords(ctx, prefix, func(name string) error {
		var sid [16]byte
		if err := decodeHexInto(sid[:], strings.TrimPrefix(name, prefix)); err != nil {
			rb.warnf("record %s is not a snapshot record; ignored", name)
			return nil
		}
		copies, err := rb.recordCopies(ctx, name)
		if err != nil {
			return err
		}
		best, _ := rb.newestRecord(copies, recSnapshot, []*[KeySize]byte{&t.keys.meta}, t.id, name)
		switch {
		case best == nil:
			rb.warnf("snapshot %x of tenant %x: no valid copy of its record", sid[:4], t.id[:])
			return nil
		case best.tombstone():
			rb.rep.Forgotten++
			return nil
		}
		rb.b.PutSnapshot(t.id, index.SnapshotRec{ID: sid, Version: best.Version, Sealed: best.Body})
		rb.rep.Snapshots++
		return rb.maybeFlush()
	})
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// recoverClientKeys indexes a tenant's registered client keys (the newest
// valid copy of r/keys/<tenant>) and their lookup entries.
func (rb *rebuilder) recoverClientKeys(ctx context.Context, t *Tenant) error {
	name := clientKeysRecordName(t.id)
	copies, err := rb.recordCopies(ctx, name)
	if err != nil {
		return err
	}
	if len(copies) == 0 {
		return nil
	}
	best, body := rb.newestRecord(copies, recClientKeys, []*[KeySize]byte{&t.keys.meta}, t.id, name)
	if best == nil {
		rb.warnf("client keys of tenant %x: no valid copy of their record", t.id[:])
		return nil
	}
	if best.tombstone() {
		return nil
	}
	var set clientKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		rb.warnf("client keys of tenant %x: unreadable record", t.id[:])
		return nil
	}
	v := binary.LittleEndian.AppendUint64(nil, best.Version)
	rb.b.PutMeta(clientKeysMeta(t.id), append(v, best.Body...))
	for _, k := range set.Keys {
		if len(k.Key) == ed25519.PublicKeySize {
			rb.b.PutMeta(clientKeyLookupMeta(ed25519.PublicKey(k.Key)), append([]byte{}, t.id[:]...))
		}
	}
	return rb.maybeFlush()
}

func sortedDriveIDs[V any](m map[repo.DriveID]V) []repo.DriveID {
	return slices.SortedFunc(maps.Keys(m), func(a, b repo.DriveID) int { return bytes.Compare(a[:], b[:]) })
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// dumpIndex writes every key and value of the index in a stable text form,
// one record per line in key order, with sealed values opened: tenant
// metadata under the master key, snapshots under their tenant's key. Tests
// compare dumps taken before losing an index and after rebuilding it.
func (e *Engine) dumpIndex(w io.Writer) error {
	tenants := map[index.TenantID]*Tenant{}
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:8]) }
	return e.db.Raw(func(k, v []byte) error {
		var line string
		switch {
		case len(k) == 7 && k[0] == 0x01:
			line = "config " + string(v)
		case len(k) == 9 && k[0] == 0x02:
			line = fmt.Sprintf("drive %x %x", k[1:], v)
		case len(k) == 17 && k[0] == 0x03:
			var id index.TenantID
			copy(id[:], k[1:])
			rec, err := e.db.Tenant(id)
			if err != nil {
				return err
			}
			te, err := e.openTenantRec(rec)
			if err != nil {
				return err
			}
			meta, _ := json.Marshal(te.meta)
			line = fmt.Sprintf("tenant %s version=%d epoch=%d wrapped=%x meta=%s sealed=%s", id, rec.Version, rec.Epoch, rec.Wrapped, meta, sum(rec.Meta))
			if t, err := e.tenantHandle(te); err == nil {
				tenants[id] = t
			}
		case len(k) == 49 && k[0] == 0x04:
			var t index.TenantID
			var id index.BlobID
			copy(t[:], k[1:17])
			copy(id[:], k[17:])
			loc, ok, err := e.db.Blob(t, id)
			if err != nil || !ok {
				return fmt.Errorf("blob %s/%s: %v", t, id, err)
			}
			line = fmt.Sprintf("blob %s/%s type=%d pack=%s offset=%d length=%d raw=%d", t, id, loc.Type, loc.Pack, loc.Offset, loc.Length, loc.RawLength)
		case len(k) == 33 && k[0] == 0x05:
			var t index.TenantID
			var id index.PackID
			copy(t[:], k[1:17])
			copy(id[:], k[17:])
			p, err := e.db.Pack(t, id)
			if err != nil {
				return err
			}
			var sb strings.Builder
			fmt.Fprintf(&sb, "pack %s/%s k=%d m=%d block=%d data=%d shard=%d blobs=%d created=%d", t, id, p.K, p.M, p.BlockSize, p.DataLen, p.ShardLen, p.Blobs, p.Created)
			for i := range p.Drives {
				fmt.Fprintf(&sb, " %d:%s:%s", i, p.Drives[i], p.Hashes[i])
			}
			line = sb.String()
		case len(k) == 33 && k[0] == 0x06:
			var t index.TenantID
			var id index.SnapshotID
			copy(t[:], k[1:17])
			copy(id[:], k[17:])
			s, err := e.db.Snapshot(t, id)
			if err != nil {
				return err
			}
			body := "(tenant key unavailable)"
			if tn := tenants[t]; tn != nil {
				r := &record{Kind: recSnapshot, Version: s.Version, Body: s.Sealed}
				b, err := openRecord(&tn.keys.meta, r, tn.id, snapshotRecordName(tn.id, s.ID))
				if err != nil {
					return fmt.Errorf("snapshot %s/%s: %w", t, id, err)
				}
				body = string(b)
			}
			line = fmt.Sprintf("snapshot %s/%s version=%d sealed=%s body=%s", t, id, s.Version, sum(s.Sealed), body)
		case len(k) == 9 && k[0] == 0x07:
			line = fmt.Sprintf("audit %x %x", k[1:], v)
		case len(k) >= 2 && k[0] == 0x08:
			line = fmt.Sprintf("meta %q %x", k[1:], v)
		default:
			line = fmt.Sprintf("unknown %x %x", k, v)
		}
		_, err := fmt.Fprintln(w, line)
		return err
	})
}
