package index

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Errors. Test with errors.Is.
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("index: not found")
	// ErrCorrupt: a stored value or key could not be decoded, or pebble
	// reported on-disk corruption.
	ErrCorrupt = errors.New("index: corrupt record")
	// ErrLocked: another process (or another open DB in this process) holds
	// the database directory.
	ErrLocked = errors.New("index: database is held by another process")
	// ErrNotExist: Options.MustExist or ReadOnly was set and dir holds no
	// database.
	ErrNotExist = errors.New("index: database does not exist")
	// ErrInvalid: a record passed to a Batch cannot be encoded (for example a
	// PackRec whose Drives do not number K+M); the batch fails as a whole.
	ErrInvalid = errors.New("index: invalid record")
	// ErrReadOnly: a batch was committed on a database opened ReadOnly.
	ErrReadOnly = errors.New("index: database is open read-only")
	// ErrClosed: the DB or Batch was used after Close (or a Batch after
	// Commit).
	ErrClosed = errors.New("index: closed")
)

// DefaultCacheSize is the block cache size used when Options.CacheSize is 0:
// modest, for a small head node.
const DefaultCacheSize = 32 << 20

// Options configure Open. The zero value is valid.
type Options struct {
	// ReadOnly opens the database without writing to it; the database must
	// exist (ErrNotExist otherwise). The directory lock is taken all the same.
	ReadOnly bool
	// MustExist makes Open fail with ErrNotExist instead of creating a new,
	// empty database.
	MustExist bool
	// FS is the file system; nil means the real disk. Tests pass
	// vfs.NewMem() or vfs.NewCrashableMem().
	FS vfs.FS
	// CacheSize is the block cache size in bytes; 0 means DefaultCacheSize.
	CacheSize int64
}

// minCacheSize is the smallest cache accepted: below it pebble would spend
// its time re-reading index blocks.
const minCacheSize = 1 << 20

func (o *Options) setDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
}

// Validate reports whether the options (after defaults) are usable.
func (o *Options) Validate() error {
	if o.CacheSize < minCacheSize {
		return fmt.Errorf("index: cache size %d below the minimum of %d bytes", o.CacheSize, minCacheSize)
	}
	return nil
}

// DB is an open index database. It is safe for concurrent use, except that
// Close must not run concurrently with other methods. Methods called after
// Close return ErrClosed.
type DB struct {
	db       *pebble.DB
	readOnly bool
	closed   atomic.Bool
	// keys recycles blob key buffers so that Blob, the dedup lookup on the
	// backup hot path, does not allocate.
	keys keyPool
}

// quietLogger discards pebble's log output: a library must not log. Fatalf
// is called by pebble only on an invariant violation it cannot continue
// from; pebble's own default exits the process there, and Fatalf must not
// return, so it panics with the message instead (callers that recover get
// the reason).
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Errorf("index: pebble fatal error: "+format, args...))
}

var _ pebble.Logger = quietLogger{}

// Open opens (creating it unless opts.ReadOnly or opts.MustExist) the index
// database in dir. It fails with an error wrapping ErrLocked when another
// process, or another open DB in this process, holds dir, and with
// ErrNotExist when a database was required to exist and does not.
func Open(dir string, opts Options) (*DB, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.FS == vfs.Default {
		// Pebble's in-process lock table is keyed by the path as given;
		// an absolute path keeps "db" and "./db" from both getting in.
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("index: open %s: %w", dir, err)
		}
		dir = abs
	}
	if opts.ReadOnly || opts.MustExist {
		// Pebble's own report of a missing directory in read-only mode
		// drops the cause, so look first.
		if _, err := opts.FS.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open index %s: %w", dir, ErrNotExist)
		}
	}
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref() // pebble holds its own reference while open
	po := &pebble.Options{
		Cache:              cache,
		FS:                 opts.FS,
		ReadOnly:           opts.ReadOnly,
		ErrorIfNotExists:   opts.MustExist,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{},
		EventListener: &pebble.EventListener{
			// Pebble retries failed background work; reads report
			// corruption as errors, so neither needs to be logged.
			BackgroundError: func(error) {},
			DataCorruption:  func(pebble.DataCorruptionInfo) {},
		},
	}
	for i := range po.Levels {
		// Most dedup lookups of new data miss: a bloom filter (10 bits
		// per key, about 1% false positives) answers a miss without
		// reading data blocks.
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	pdb, err := pebble.Open(dir, po)
	if err != nil {
		return nil, classifyOpenErr(dir, err)
	}
	return &DB{db: pdb, readOnly: opts.ReadOnly}, nil
}

// classifyOpenErr maps pebble's Open errors onto this package's sentinels.
func classifyOpenErr(dir string, err error) error {
	// Pebble takes an fcntl(F_SETLK) write lock on dir/LOCK. Held by another
	// process, it fails with a bare EAGAIN or EACCES (MemFS mimics EAGAIN).
	// Within one process fcntl locks do not conflict, so pebble keeps its own
	// table and returns an unexported error with this text.
	var errno syscall.Errno
	if errors.As(err, &errno) && (errno == syscall.EAGAIN || errno == syscall.EACCES) {
		var pe *fs.PathError
		if !errors.As(err, &pe) { // a PathError is os.Create failing, not the lock
			return fmt.Errorf("open index %s: %w (%v)", dir, ErrLocked, err)
		}
	}
	if strings.Contains(err.Error(), "lock held by current process") {
		return fmt.Errorf("open index %s: %w (held by this process)", dir, ErrLocked)
	}
	if errors.Is(err, pebble.ErrDBDoesNotExist) {
		return fmt.Errorf("open index %s: %w", dir, ErrNotExist)
	}
	if tableMissing(err) {
		return fmt.Errorf("open index %s: %w: %w", dir, ErrCorrupt, err)
	}
	return fmt.Errorf("open index %s: %w", dir, wrapPebble(err))
}

// tableMissing recognises the errors of pebble's check, on Open, that every
// table the MANIFEST names is on disk with the size it records: a deleted
// table ("unknown to the objstorage provider", wrapping fs.ErrNotExist) or a
// truncated or extended one ("object size mismatch"). Pebble does not mark
// them as corruption, but the database is damaged all the same: the data of
// that table is lost. The texts are those of the pinned pebble version;
// TestOpenDamagedTables fails if they change.
func tableMissing(err error) bool {
	s := err.Error()
	return strings.Contains(s, "object size mismatch") ||
		errors.Is(err, fs.ErrNotExist) && strings.Contains(s, "unknown to the objstorage provider")
}

// wrapPebble marks pebble's corruption errors with ErrCorrupt.
func wrapPebble(err error) error {
	if pebble.IsCorruptionError(err) {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return err
}

// Close closes the database, releasing the directory lock. Batches must be
// closed first. A second Close returns ErrClosed.
func (db *DB) Close() error {
	if !db.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	if err := db.db.Close(); err != nil {
		return fmt.Errorf("close index: %w", err)
	}
	return nil
}

// get calls fn with the value stored under key; v is valid only during fn.
// It returns ErrNotFound if the key is absent.
func (db *DB) get(key []byte, fn func(v []byte) error) error {
	if db.closed.Load() {
		return ErrClosed
	}
	v, c, err := db.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return wrapPebble(err)
	}
	err = fn(v)
	if cerr := c.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

// getCopy returns a copy of the value stored under key.
func (db *DB) getCopy(key []byte) ([]byte, error) {
	var out []byte
	err := db.get(key, func(v []byte) error {
		out = append([]byte{}, v...)
		return nil
	})
	return out, err
}

// scan calls fn for every key in [lower, upper) in key order. k and v are
// valid only during fn. An error from fn stops the scan and is returned as
// is.
func (db *DB) scan(lower, upper []byte, fn func(k, v []byte) error) error {
	if db.closed.Load() {
		return ErrClosed
	}
	it, err := db.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return wrapPebble(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return wrapPebble(err)
		}
		if err := fn(it.Key(), v); err != nil {
			_ = it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return wrapPebble(err)
	}
	return nil
}

// Iteration contract, for every method below that takes a callback: fn is
// called on the calling goroutine, in key order (which is the byte order of
// the IDs, or ascending seq for Audit), over a consistent point-in-time view
// of the database. Records, IDs and byte slices passed to fn are fresh
// copies that fn may keep and modify. fn may call other DB methods and
// commit batches; its writes are not seen by the running iteration. If fn
// returns an error, iteration stops and that error is returned unwrapped.
// A stored value that cannot be decoded stops iteration with an error
// wrapping ErrCorrupt.

// Config returns the repository config bytes (a copy), or ErrNotFound.
func (db *DB) Config() ([]byte, error) {
	v, err := db.getCopy(configKey)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return v, nil
}

// Drives calls fn for every drive record, in drive ID order.
func (db *DB) Drives(fn func(id DriveID, v []byte) error) error {
	return db.scan([]byte{kindDrive}, []byte{kindDrive + 1}, func(k, v []byte) error {
		if len(k) != driveKeyLen {
			return corruptf("drive key %x: length %d", k, len(k))
		}
		var id DriveID
		copy(id[:], k[1:])
		return fn(id, append([]byte{}, v...))
	})
}

// Tenant returns the tenant record, or ErrNotFound.
func (db *DB) Tenant(id TenantID) (TenantRec, error) {
	var r TenantRec
	err := db.get(tenantKey(id), func(v []byte) error {
		var err error
		r, err = decodeTenantRec(id, v)
		return err
	})
	if err != nil {
		return TenantRec{}, fmt.Errorf("read tenant %s: %w", id, err)
	}
	return r, nil
}

// Tenants calls fn for every tenant record, in tenant ID order.
func (db *DB) Tenants(fn func(TenantRec) error) error {
	return db.scan([]byte{kindTenant}, []byte{kindTenant + 1}, func(k, v []byte) error {
		if len(k) != tenantKeyLen {
			return corruptf("tenant key %x: length %d", k, len(k))
		}
		var id TenantID
		copy(id[:], k[1:])
		r, err := decodeTenantRec(id, v)
		if err != nil {
			return err
		}
		return fn(r)
	})
}

// Blob returns the location of blob id of tenant t. A missing blob is
// (BlobLoc{}, false, nil), not an error. Blob does not allocate on a hit or
// a miss.
func (db *DB) Blob(t TenantID, id BlobID) (BlobLoc, bool, error) {
	if db.closed.Load() {
		return BlobLoc{}, false, ErrClosed
	}
	kb := db.keys.get()
	defer db.keys.put(kb)
	v, c, err := db.db.Get(putBlobKey(kb[:], t, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return BlobLoc{}, false, nil
	}
	if err != nil {
		return BlobLoc{}, false, fmt.Errorf("read blob %s/%s: %w", t, id, wrapPebble(err))
	}
	l, err := decodeBlobLoc(v)
	if cerr := c.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return BlobLoc{}, false, fmt.Errorf("read blob %s/%s: %w", t, id, err)
	}
	return l, true, nil
}

// Blobs calls fn for every blob of tenant t, in blob ID order.
func (db *DB) Blobs(t TenantID, fn func(BlobID, BlobLoc) error) error {
	p := tenantPrefix(kindBlob, t)
	return db.scan(p, successor(p), func(k, v []byte) error {
		if len(k) != blobKeyLen {
			return corruptf("blob key %x: length %d", k, len(k))
		}
		var id BlobID
		copy(id[:], k[17:])
		l, err := decodeBlobLoc(v)
		if err != nil {
			return fmt.Errorf("blob %s/%s: %w", t, id, err)
		}
		return fn(id, l)
	})
}

// Pack returns the pack record, or ErrNotFound.
func (db *DB) Pack(t TenantID, id PackID) (PackRec, error) {
	var p PackRec
	err := db.get(packKey(t, id), func(v []byte) error {
		var err error
		p, err = decodePackRec(id, v)
		return err
	})
	if err != nil {
		return PackRec{}, fmt.Errorf("read pack %s/%s: %w", t, id, err)
	}
	return p, nil
}

// Packs calls fn for every pack of tenant t, in pack ID order.
func (db *DB) Packs(t TenantID, fn func(PackRec) error) error {
	p := tenantPrefix(kindPack, t)
	return db.scan(p, successor(p), func(k, v []byte) error {
		if len(k) != packKeyLen {
			return corruptf("pack key %x: length %d", k, len(k))
		}
		var id PackID
		copy(id[:], k[17:])
		r, err := decodePackRec(id, v)
		if err != nil {
			return fmt.Errorf("tenant %s: %w", t, err)
		}
		return fn(r)
	})
}

// Snapshot returns the snapshot record, or ErrNotFound.
func (db *DB) Snapshot(t TenantID, id SnapshotID) (SnapshotRec, error) {
	var s SnapshotRec
	err := db.get(snapshotKey(t, id), func(v []byte) error {
		var err error
		s, err = decodeSnapshotRec(id, v)
		return err
	})
	if err != nil {
		return SnapshotRec{}, fmt.Errorf("read snapshot %s/%s: %w", t, id, err)
	}
	return s, nil
}

// Snapshots calls fn for every snapshot record of tenant t, in snapshot ID
// order.
func (db *DB) Snapshots(t TenantID, fn func(SnapshotRec) error) error {
	p := tenantPrefix(kindSnapshot, t)
	return db.scan(p, successor(p), func(k, v []byte) error {
		if len(k) != snapshotKeyLen {
			return corruptf("snapshot key %x: length %d", k, len(k))
		}
		var id SnapshotID
		copy(id[:], k[17:])
		s, err := decodeSnapshotRec(id, v)
		if err != nil {
			return fmt.Errorf("tenant %s: %w", t, err)
		}
		return fn(s)
	})
}

// Forgotten returns the forgotten-snapshot record of snapshot id of tenant
// t, or an error wrapping ErrNotFound.
func (db *DB) Forgotten(t TenantID, id SnapshotID) (ForgottenRec, error) {
	var f ForgottenRec
	err := db.get(forgottenKey(t, id), func(v []byte) error {
		var err error
		f, err = decodeForgottenRec(id, v)
		return err
	})
	if err != nil {
		return ForgottenRec{}, fmt.Errorf("read forgotten snapshot %s/%s: %w", t, id, err)
	}
	return f, nil
}

// ForgottenSnapshots calls fn for every forgotten-snapshot record of tenant
// t, in snapshot ID order.
func (db *DB) ForgottenSnapshots(t TenantID, fn func(ForgottenRec) error) error {
	p := tenantPrefix(kindForgot, t)
	return db.scan(p, successor(p), func(k, v []byte) error {
		if len(k) != forgotKeyLen {
			return corruptf("forgotten snapshot key %x: length %d", k, len(k))
		}
		var id SnapshotID
		copy(id[:], k[17:])
		f, err := decodeForgottenRec(id, v)
		if err != nil {
			return fmt.Errorf("tenant %s: %w", t, err)
		}
		return fn(f)
	})
}

// Audit calls fn for every audit entry with sequence number >= from, in
// ascending sequence order.
func (db *DB) Audit(from uint64, fn func(seq uint64, v []byte) error) error {
	return db.scan(auditKey(from), []byte{kindAudit + 1}, func(k, v []byte) error {
		if len(k) != auditKeyLen {
			return corruptf("audit key %x: length %d", k, len(k))
		}
		return fn(beUint64(k[1:]), append([]byte{}, v...))
	})
}

func beUint64(b []byte) uint64 {
	var x uint64
	for _, c := range b[:8] {
		x = x<<8 | uint64(c)
	}
	return x
}

// Meta returns a copy of the metadata value stored under name, or
// ErrNotFound. Names are 1 to 255 bytes.
func (db *DB) Meta(name string) ([]byte, error) {
	k, err := metaKey(name)
	if err != nil {
		return nil, err
	}
	v, err := db.getCopy(k)
	if err != nil {
		return nil, fmt.Errorf("read meta %q: %w", name, err)
	}
	return v, nil
}

// MetaPrefix calls fn for every metadata entry whose name starts with
// prefix (not empty), in name order, under the iteration contract above.
func (db *DB) MetaPrefix(prefix string, fn func(name string, v []byte) error) error {
	lower, err := metaKey(prefix)
	if err != nil {
		return err
	}
	upper := append([]byte{}, lower...)
	for i := len(upper) - 1; ; i-- {
		if i == 0 {
			upper = []byte{kindMeta + 1} // the prefix is all 0xff bytes
			break
		}
		if upper[i] != 0xff {
			upper[i]++
			upper = upper[:i+1]
			break
		}
	}
	return db.scan(lower, upper, func(k, v []byte) error {
		return fn(string(k[1:]), append([]byte{}, v...))
	})
}

// Raw calls fn for every key and value in the database, in key order. It is
// meant for tests and the logical dump; key and value are fresh copies.
func (db *DB) Raw(fn func(key, value []byte) error) error {
	return db.scan(nil, nil, func(k, v []byte) error {
		return fn(append([]byte{}, k...), append([]byte{}, v...))
	})
}
