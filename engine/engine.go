package engine

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"coffer/index"
	"coffer/repo"
)

// Engine is an open repository. Its methods are safe for concurrent use,
// except Close; one process owns a repository at a time (Open takes an
// exclusive lock).
type Engine struct {
	dir  string
	opts Options
	lock *os.File
	db   *index.DB
	repo *repo.Repo
	mk   *masterKey // current epoch (the config's); guarded by mu once open
	// mkNext is the next epoch while a rotation is in progress; guarded by mu.
	mkNext  *masterKey
	keyFile string // path of the master key file
	// keyFileStale: the key file still holds an epoch older than the
	// config's (a rotation stopped before destroying it); guarded by mu.
	keyFileStale bool

	closeOnce sync.Once
	refs      atomic.Int32 // users of e: 1 at Open, more after Retain

	// revokeMu guards onRevoke, the functions told when access is withdrawn.
	revokeMu sync.Mutex
	onRevoke []func(Revocation)

	// health remembers suspect drives for every drive set of the process
	// (see driveHealth); made once, safe for concurrent use.
	healthOnce sync.Once
	health     *repo.Health
	healthMu   sync.Mutex // serialises keepSuspect's index writes

	mu  sync.Mutex // guards cfg, repo and tenantMu
	cfg config
	// tenantMu serialises writers of one tenant (backups, tenant changes).
	tenantMu map[[16]byte]*sync.Mutex
}

// config is the repository configuration, stored as JSON in the index and as
// a plain record on the drives. It holds no secrets and no tenant data.
type config struct {
	Format       string `json:"format"`
	Version      int    `json:"version"`
	Repository   string `json:"repository"`
	Record       uint64 `json:"record_version"`
	K            int    `json:"data_shards"`
	M            int    `json:"parity_shards"`
	PackSize     int    `json:"pack_size"`
	BlockSize    int    `json:"block_size"`
	MKEpoch      uint32 `json:"master_key_epoch"`
	MKCheck      string `json:"master_key_check"`
	GraceSeconds int64  `json:"grace_period_seconds"`
	// RotatingTo and NextCheck describe a master-key rotation in progress;
	// PendingShred lists tenants (ID hex) whose shred has not completed.
	RotatingTo   uint32   `json:"rotating_to,omitempty"`
	NextCheck    string   `json:"next_master_key_check,omitempty"`
	PendingShred []string `json:"pending_shred,omitempty"`
	// ReservePercent of every drive is kept free by backups for prune,
	// repair and shred (0 in an old config means the default).
	ReservePercent int           `json:"drive_reserve_percent,omitempty"`
	Created        time.Time     `json:"created"`
	Drives         []driveConfig `json:"drives"`
}

type driveConfig struct {
	ID    string `json:"id"`
	Rack  string `json:"rack"`
	Path  string `json:"path"`
	State string `json:"state"` // "active" or "failed"
}

const (
	driveActive = "active"
	driveFailed = "failed"
	configName  = "r/config"
)

func (c *config) repoID() [16]byte {
	var id [16]byte
	_ = decodeHexInto(id[:], c.Repository)
	return id
}

// paths of a repository folder.
func indexDir(dir string) string       { return filepath.Join(dir, "index") }
func lockPath(dir string) string       { return filepath.Join(dir, "lock") }
func defaultKeyFile(dir string) string { return filepath.Join(dir, "master.key") }

// indexExists reports whether dir holds a pebble database (a manifest).
func indexExists(dir string) bool {
	entries, err := os.ReadDir(indexDir(dir))
	if err != nil {
		return false
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "MANIFEST-") {
			return true
		}
	}
	return false
}

// InitResult tells what Init made.
type InitResult struct {
	Repository    string
	MasterKeyFile string
	Drives        []DriveInfo
	Warnings      []string
}

// Init creates a repository in dir: drive identities, the master key file and
// the index. It fails with ErrRepoExists if dir already holds one.
func Init(ctx context.Context, dir string, o InitOptions) (*InitResult, error) {
	o.fill()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if indexExists(dir) {
		return nil, fmt.Errorf("%w: %s", ErrRepoExists, dir)
	}
	// The repository's own folders are private even in a folder that
	// existed with a wider mode: index/ holds tenant IDs and key
	// fingerprints (pebble would make it 0755).
	if err := makePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("create repository folder: %w", err)
	}
	if err := makePrivateDir(indexDir(dir)); err != nil {
		return nil, fmt.Errorf("create index folder: %w", err)
	}
	keyFile := o.MasterKeyFile
	if keyFile == "" {
		keyFile = defaultKeyFile(dir)
	}
	if _, err := os.Stat(keyFile); err == nil {
		return nil, invalidf("master key file %s already exists; a new repository needs a new key", keyFile)
	}
	lock, err := acquireLock(ctx, dir, 0, "coffer init")
	if err != nil {
		return nil, err
	}
	defer releaseLock(lock)

	drives := o.Drives
	if len(drives) == 0 {
		for i := 0; i < DefaultDrives; i++ {
			drives = append(drives, DriveSpec{
				Rack: fmt.Sprintf("r%d", i*DefaultRacks/DefaultDrives+1),
				Path: filepath.Join(dir, "drives", fmt.Sprintf("d%d", i+1)),
			})
		}
	}
	if len(drives) < o.DataShards+o.ParityShards {
		return nil, invalidf("%d drives cannot hold %d+%d shards of a pack on distinct drives", len(drives), o.DataShards, o.ParityShards)
	}

	var repoID [16]byte
	randomBytes(repoID[:])
	var raw [KeySize]byte
	randomBytes(raw[:])
	mk := newMasterKey(repoID, 1, raw)
	cfg := config{
		Format: "coffer", Version: 1, Repository: hex.EncodeToString(repoID[:]), Record: 1,
		K: o.DataShards, M: o.ParityShards, PackSize: o.PackSize, BlockSize: DefaultBlockSize,
		MKEpoch: 1, MKCheck: mk.checkHex(), GraceSeconds: int64(DefaultGracePeriod / time.Second),
		ReservePercent: DefaultReservePercent,
		Created:        time.Now().UTC().Truncate(time.Second),
	}
	res := &InitResult{Repository: cfg.Repository, MasterKeyFile: keyFile}
	seen := map[string]bool{}
	var members []repo.Member
	for _, d := range drives {
		if err := repo.ValidateRack(d.Rack); err != nil {
			return nil, invalidf("drive %s: %v", d.Path, err)
		}
		p, err := canonicalDrivePath(d.Path)
		if err != nil {
			return nil, err
		}
		if seen[p] {
			return nil, invalidf("drive %s is listed twice", p)
		}
		seen[p] = true
		drv, err := openDrivePath(ctx, p, s3Options(o.S3CAFile, o.S3AllowVersioning), true)
		if err != nil {
			return nil, err
		}
		var id repo.DriveID
		randomBytes(id[:])
		if err := repo.WriteIdentity(ctx, drv, repo.Identity{Repository: repoID, Drive: id, Rack: d.Rack}); err != nil {
			return nil, fmt.Errorf("drive %s: %w", p, err)
		}
		cfg.Drives = append(cfg.Drives, driveConfig{ID: id.String(), Rack: d.Rack, Path: storedDrivePath(dir, p), State: driveActive})
		members = append(members, repo.Member{ID: id, Rack: d.Rack, Drive: drv})
	}
	if w := rackWarning(cfg.Drives, cfg.K, cfg.M); w != "" {
		res.Warnings = append(res.Warnings, w)
	}
	r, err := repo.New(members, repo.Options{K: cfg.K, M: cfg.M, BlockSize: cfg.BlockSize})
	if err != nil {
		return nil, err
	}
	// Write order: key file first (without it nothing is readable), then the
	// config on the drives, then the index. A crash before the index exists
	// leaves no repository (Open says so) and Init can be rerun after removing
	// the key file it printed.
	if err := writeFileDurable(keyFile, encodeMasterKeyFile(mk), 0o600); err != nil {
		return nil, fmt.Errorf("write master key file: %w", err)
	}
	cfgJSON, err := json.Marshal(&cfg)
	if err != nil {
		return nil, err
	}
	rec := &record{Kind: recConfig, Version: cfg.Record, Body: cfgJSON}
	if err := r.PutRecord(ctx, configName, rec.encode()); err != nil {
		return nil, fmt.Errorf("write repository config to drives: %w", err)
	}
	if err := writeFileDurable(configCopyPath(dir), cfgJSON, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", configCopyPath(dir), err)
	}
	db, err := index.Open(indexDir(dir), index.Options{})
	if err != nil {
		return nil, fmt.Errorf("create index: %w", err)
	}
	defer db.Close()
	b := db.NewBatch()
	defer b.Close()
	b.PutConfig(cfgJSON)
	if err := b.Commit(); err != nil {
		return nil, fmt.Errorf("write index: %w", err)
	}
	if err := startAudit(ctx, r, db, mk, o.Actor, cfg.Created, fmt.Sprintf("drives=%d data_shards=%d parity_shards=%d", len(cfg.Drives), cfg.K, cfg.M)); err != nil {
		return nil, err
	}
	for _, d := range cfg.Drives {
		res.Drives = append(res.Drives, DriveInfo{ID: d.ID, Rack: d.Rack, Path: resolveDrivePath(dir, d.Path), State: d.State})
	}
	return res, nil
}

// rackWarning says when losing one rack could lose a pack.
func rackWarning(drives []driveConfig, k, m int) string {
	racks := map[string]int{}
	for _, d := range drives {
		if d.State == driveActive {
			racks[d.Rack]++
		}
	}
	// Shards are spread round-robin over racks: the fullest rack gets
	// ceil((k+m)/racks) shards, if it has that many drives.
	per := (k + m + len(racks) - 1) / len(racks)
	if per > m {
		return fmt.Sprintf("with %d racks a rack may hold %d shards of a pack, more than the %d parity shards: losing a whole rack can lose data; add racks or parity", len(racks), per, m)
	}
	return ""
}

// Open opens the repository in dir. It fails with ErrRepoNotFound if there is
// none, a *LockedError if another process holds it after o.RetryLock, and
// ErrWrongKey if the master key does not belong to it.
func Open(dir string, o Options) (*Engine, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if o.IndexFS == nil && !indexExists(dir) {
		return nil, fmt.Errorf("%w: no repository in %s (run coffer init, or coffer index rebuild if the index was lost)", ErrRepoNotFound, dir)
	}
	keyFile := o.MasterKeyFile
	if keyFile == "" {
		keyFile = defaultKeyFile(dir)
	}
	lock, err := acquireLock(context.Background(), dir, o.RetryLock, o.Command)
	if err != nil {
		return nil, err
	}
	e := &Engine{dir: dir, opts: o, lock: lock, keyFile: keyFile, tenantMu: map[[16]byte]*sync.Mutex{}}
	e.refs.Store(1)
	if err := e.open(); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func (e *Engine) open() error {
	db, err := index.Open(indexDir(e.dir), index.Options{FS: e.opts.IndexFS, MustExist: true})
	if err != nil {
		if errors.Is(err, index.ErrNotExist) {
			return fmt.Errorf("%w: no index in %s (run coffer index rebuild)", ErrRepoNotFound, e.dir)
		}
		if errors.Is(err, index.ErrLocked) {
			return &LockedError{Dir: e.dir}
		}
		if IndexDamaged(err) {
			return fmt.Errorf("the index of %s is damaged (%w); run coffer index rebuild", e.dir, err)
		}
		return fmt.Errorf("open index: %w", err)
	}
	e.db = db
	raw, err := db.Config()
	if err != nil {
		if errors.Is(err, index.ErrNotFound) {
			return fmt.Errorf("%w: the index in %s has no configuration (run coffer index rebuild)", ErrRepoNotFound, e.dir)
		}
		return fmt.Errorf("read configuration: %w", err)
	}
	if err := json.Unmarshal(raw, &e.cfg); err != nil || e.cfg.Format != "coffer" {
		return fmt.Errorf("%w: repository configuration in the index is unreadable", ErrCorrupt)
	}
	if e.cfg.Version != 1 {
		return fmt.Errorf("repository format version %d is not supported by this coffer", e.cfg.Version)
	}
	if err := e.loadKeys(); err != nil {
		return err
	}
	r, err := e.openDrives()
	if err != nil {
		return err
	}
	e.repo = r
	return nil
}

// openDrives opens every configured drive folder. A missing or foreign drive
// is left out with a warning: reads reconstruct from the others.
func (e *Engine) openDrives() (*repo.Repo, error) { return e.openDrivesOf(e.conf()) }

// openDrivesOf opens the drives of cfg (see openDrives).
func (e *Engine) openDrivesOf(cfg config) (*repo.Repo, error) {
	ctx := context.Background()
	var members []repo.Member
	for _, d := range cfg.Drives {
		id, err := repo.ParseDriveID(d.ID)
		if err != nil {
			return nil, fmt.Errorf("%w: drive ID %q in configuration", ErrCorrupt, d.ID)
		}
		m := repo.Member{ID: id, Rack: d.Rack, Failed: d.State != driveActive}
		drv, err := e.openDrive(ctx, cfg, d, id)
		if err != nil {
			if !m.Failed {
				e.opts.warnf("drive %s (rack %s) is unavailable, reads reconstruct from the other drives: %s", d.ID, d.Rack, strings.TrimPrefix(err.Error(), "repo: "))
				e.emit(Event{Kind: EventDriveUnreachable, Severity: SevError, Drive: d.ID})
			}
			m.Failed = true
			m.Drive = unavailableDrive{err: err}
		} else {
			m.Drive = drv
		}
		members = append(members, m)
	}
	return repo.New(members, repo.Options{K: cfg.K, M: cfg.M, BlockSize: cfg.BlockSize, Health: e.driveHealth()})
}

func (e *Engine) openDrive(ctx context.Context, cfg config, d driveConfig, id repo.DriveID) (repo.Drive, error) {
	var drv repo.Drive
	path := resolveDrivePath(e.dir, d.Path)
	dd, err := openDrivePath(ctx, path, s3Options(e.opts.S3CAFile, e.opts.S3AllowVersioning), false)
	if err != nil {
		return nil, err
	}
	drv = dd
	if e.opts.WrapDrive != nil {
		drv = e.opts.WrapDrive(d.ID, drv)
	}
	ident, err := repo.ReadIdentity(ctx, drv)
	if err != nil {
		return nil, err
	}
	if ident.Repository != cfg.repoID() || ident.Drive != id {
		return nil, fmt.Errorf("%w: %s carries drive %s of repository %x", repo.ErrForeignDrive, path, ident.Drive, ident.Repository[:])
	}
	return drv, nil
}

// Close releases the repository. It must not run while other calls on e are
// in flight; calling it more than once is harmless. After Retain, each user
// calls Close once, and the last one releases the repository.
func (e *Engine) Close() error {
	if e.refs.Add(-1) > 0 {
		return nil // another user still has e (see Retain)
	}
	var err error
	e.closeOnce.Do(func() {
		if e.db != nil {
			err = e.db.Close()
		}
		if e.lock != nil {
			releaseLock(e.lock)
		}
	})
	return err
}

// conf returns a copy of the repository config. e.cfg is replaced whole
// when the config changes (updateConfig), so every read of it goes through
// e.mu; the copy's Drives may be shared and must not be modified.
func (e *Engine) conf() config {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg
}

// Retain adds a user of e: each Retain needs one more Close, and only the
// last Close closes the repository. coffer serve lends its engine to the
// operator commands that come through its admin socket this way.
func (e *Engine) Retain() *Engine {
	e.refs.Add(1)
	return e
}

// Revocation says whose access was withdrawn: the tenant (ID in hex, as
// Tenant.ID gives it) and, when only one client key was removed, that
// key's fingerprint. An empty Fingerprint means every key of the tenant
// (the tenant was locked or shredded).
type Revocation struct {
	Tenant      string
	Fingerprint string
}

// OnRevoke registers f to be told whenever access is withdrawn, so a server
// can cut the sessions concerned at once instead of at their next request.
// f runs on the goroutine that withdrew the access, before a tenant lock
// waits for the tenant's sessions; it must return quickly and must not call
// back into e.
func (e *Engine) OnRevoke(f func(Revocation)) {
	e.revokeMu.Lock()
	e.onRevoke = append(e.onRevoke, f)
	e.revokeMu.Unlock()
}

func (e *Engine) revoke(r Revocation) {
	e.revokeMu.Lock()
	fs := slices.Clone(e.onRevoke)
	e.revokeMu.Unlock()
	for _, f := range fs {
		f(r)
	}
}

// Dir returns the repository folder.
func (e *Engine) Dir() string { return e.dir }

// DriveInfo describes a drive of the repository.
type DriveInfo struct {
	ID    string `json:"id"`
	Rack  string `json:"rack"`
	Path  string `json:"path"`
	State string `json:"state"`
}

// Drives lists the repository's drives.
func (e *Engine) Drives() []DriveInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []DriveInfo
	for _, d := range e.cfg.Drives {
		out = append(out, DriveInfo{ID: d.ID, Rack: d.Rack, Path: resolveDrivePath(e.dir, d.Path), State: d.State})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func (e *Engine) now() time.Time { return e.opts.now() }

func (e *Engine) lockTenant(id [16]byte) func() {
	e.mu.Lock()
	m := e.tenantMu[id]
	if m == nil {
		m = &sync.Mutex{}
		e.tenantMu[id] = m
	}
	e.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// unavailableDrive stands in for a drive that could not be opened; every call
// fails with the reason.
type unavailableDrive struct{ err error }

var _ repo.Drive = unavailableDrive{}

func (u unavailableDrive) Put(context.Context, string, []byte) error           { return u.err }
func (u unavailableDrive) ReadAt(context.Context, string, []byte, int64) error { return u.err }
func (u unavailableDrive) Size(context.Context, string) (int64, error)         { return 0, u.err }
func (u unavailableDrive) Delete(context.Context, string) error                { return u.err }
func (u unavailableDrive) List(context.Context, string, func(string, int64) error) error {
	return u.err
}
