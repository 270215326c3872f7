package engine

import (
	"fmt"
	"io"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"coffer/repo"
)

// Defaults of a new repository.
const (
	DefaultDataShards   = 4
	DefaultParityShards = 2
	DefaultPackSize     = 16 << 20
	DefaultBlockSize    = 64 << 10
	DefaultDrives       = 6
	DefaultRacks        = 3
	DefaultGracePeriod  = 28 * 24 * time.Hour
	// DefaultReservePercent of each drive is kept free for clean-up.
	DefaultReservePercent = 2

	minPackSize = 1 << 20
	maxPackSize = 512 << 20
)

// DriveSpec names a drive and its rack: a folder path, or an S3 drive URL
// (s3://HOST[:PORT]/BUCKET[/PREFIX], s3+http:// for a loopback server).
type DriveSpec struct {
	Rack string
	Path string
}

// InitOptions configure a new repository. Zero fields take the defaults.
type InitOptions struct {
	// Drives lists the drive folders. Empty means DefaultDrives folders under
	// DIR/drives, spread over DefaultRacks racks r1..r3.
	Drives []DriveSpec
	// DataShards (k) and ParityShards (m) of every pack.
	DataShards, ParityShards int
	// PackSize is the target size of a pack in bytes.
	PackSize int
	// MasterKeyFile is where the new master key is written (mode 0600);
	// "" means DIR/master.key. It must not exist yet.
	MasterKeyFile string
	// Actor names who runs the command, for the audit trail ("" = OS user).
	Actor string
	// S3CAFile and S3AllowVersioning configure S3 drives (repo.S3Options).
	S3CAFile          string
	S3AllowVersioning bool
}

func (o *InitOptions) fill() {
	if o.DataShards == 0 {
		o.DataShards = DefaultDataShards
	}
	if o.ParityShards == 0 {
		o.ParityShards = DefaultParityShards
	}
	if o.PackSize == 0 {
		o.PackSize = DefaultPackSize
	}
}

// Validate checks the bounds of the options.
func (o *InitOptions) Validate() error {
	if o.DataShards < 1 || o.DataShards > 32 {
		return invalidf("data shards %d outside 1..32", o.DataShards)
	}
	if o.ParityShards < 1 || o.ParityShards > 16 {
		return invalidf("parity shards %d outside 1..16", o.ParityShards)
	}
	if o.PackSize < minPackSize || o.PackSize > maxPackSize {
		return invalidf("pack size %d outside %d..%d bytes", o.PackSize, minPackSize, maxPackSize)
	}
	if len(o.Drives) != 0 && len(o.Drives) < o.DataShards+o.ParityShards {
		return invalidf("%d drives cannot hold %d+%d shards of a pack on distinct drives", len(o.Drives), o.DataShards, o.ParityShards)
	}
	return nil
}

// Options configure Open.
type Options struct {
	// MasterKeyFile is the master key file; "" means DIR/master.key.
	MasterKeyFile string
	// RetryLock is how long Open waits for another process that holds the
	// repository; 0 means do not wait.
	RetryLock time.Duration
	// ReadOnly opens the index without writing (not yet used for locking).
	ReadOnly bool
	// Command names the running command in the lock holder description.
	Command string
	// Actor names who runs the command, for the audit trail ("" = OS user).
	Actor string
	// Escrow lists further copies of the master key file that a rotation
	// rewrites (env COFFER_MASTER_KEY_ESCROW in the CLI).
	Escrow []string
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
	// Warn receives warnings (a missing drive, ...); nil discards them.
	Warn io.Writer
	// Events, if set, is told of what an operator may want to know as it
	// happens (events.go; docs/design.md, chapter 16): a drive lost, a
	// scrub's findings, a backup failed, a tenant locked, ... It is called
	// on the goroutine that did the work, from several at once; it must
	// return quickly and must not call back into the Engine. An Event
	// holds no tenant data, file names, paths, hosts or tags.
	Events func(Event)

	// IndexFS, if set, is the file system of the index (tests use pebble's
	// crash-simulating memory file system).
	IndexFS vfs.FS
	// WrapDrive, if set, wraps every drive as it is opened (tests inject
	// faults with repo/drivetest.Faulty).
	WrapDrive func(id string, d repo.Drive) repo.Drive

	// S3CAFile is a PEM file of the certificate authorities of S3 drives
	// served over HTTPS; "" means the system roots.
	S3CAFile string
	// S3AllowVersioning accepts S3 buckets with versioning or object lock
	// (see repo.S3Options.AllowVersioning).
	S3AllowVersioning bool
}

// Validate checks the bounds of the options.
func (o *Options) Validate() error {
	if o.RetryLock < 0 {
		return invalidf("retry-lock duration %s is negative", o.RetryLock)
	}
	return nil
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) warnf(format string, args ...any) {
	if o.Warn != nil {
		fmt.Fprintf(o.Warn, "warning: "+format+"\n", args...)
	}
}
