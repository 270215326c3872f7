package engine

import (
	"errors"
	"fmt"
)

// Error classes. The CLI maps each to an exit code (docs/design.md, "Exit
// codes"); test with errors.Is.
var (
	ErrRepoNotFound     = errors.New("engine: repository does not exist")
	ErrRepoExists       = errors.New("engine: repository already exists")
	ErrRepoLocked       = errors.New("engine: repository is held by another process")
	ErrWrongKey         = errors.New("engine: wrong master key")
	ErrNoMasterKey      = errors.New("engine: master key file not found")
	ErrBadKeyFile       = errors.New("engine: master key file is malformed")
	ErrTenantLocked     = errors.New("engine: tenant is locked")
	ErrTenantNotFound   = errors.New("engine: tenant not found")
	ErrTenantExists     = errors.New("engine: tenant already exists")
	ErrSnapshotNotFound = errors.New("engine: snapshot not found")
	ErrAmbiguous        = errors.New("engine: snapshot prefix is ambiguous")
	ErrPathNotFound     = errors.New("engine: path not found in snapshot")
	ErrDamage           = errors.New("engine: repository damage found")
	ErrPartialBackup    = errors.New("engine: some source files could not be read")
	ErrInvalid          = errors.New("engine: invalid argument")
	ErrAuth             = errors.New("engine: authentication failed")
	ErrCorrupt          = errors.New("engine: corrupt record")
	// ErrClock: the clock contradicts the times the records hold (a lock
	// before the newest record, ...); nothing was changed.
	ErrClock = errors.New("engine: the clock contradicts the records")
	// ErrUnaudited: an action was done, but its audit entry could not be
	// written; the error says what was done.
	ErrUnaudited = errors.New("engine: the action was done but not audited")
	// ErrTreeLimit: a snapshot's tree is deeper, longer or larger (counted
	// per path) than the limits of docs/design.md §6 allow; a walk stops
	// and a commit is refused.
	ErrTreeLimit = errors.New("engine: tree over a limit")
)

// LockedError reports who holds the repository.
type LockedError struct {
	Dir    string
	Holder string // "pid 123 (coffer backup) since 2026-01-02T03:04:05Z", or "" if unknown
}

func (e *LockedError) Error() string {
	if e.Holder == "" {
		return fmt.Sprintf("repository %s is held by another process", e.Dir)
	}
	return fmt.Sprintf("repository %s is held by another process: %s", e.Dir, e.Holder)
}

func (e *LockedError) Unwrap() error { return ErrRepoLocked }

// PartialError is the error of a backup that was saved without some of its
// source: Warnings name each path left out and why ("path: reason"). It
// wraps ErrPartialBackup; the snapshot is returned beside it and is
// complete for everything else.
type PartialError struct {
	Snapshot string   // the saved snapshot's ID
	Warnings []string // one per path left out
}

// NewPartialError returns the error of a backup saved as snapshot id
// without the entries warnings name, or nil when there are none.
func NewPartialError(id string, warnings []string) error {
	if len(warnings) == 0 {
		return nil
	}
	return &PartialError{Snapshot: id, Warnings: warnings}
}

func (e *PartialError) Error() string {
	what := fmt.Sprintf("%d source entries", len(e.Warnings))
	if len(e.Warnings) == 1 {
		what = "1 source entry"
	}
	return fmt.Sprintf("%s could not be read; snapshot %s was saved without them", what, e.Snapshot[:min(8, len(e.Snapshot))])
}

func (e *PartialError) Unwrap() error { return ErrPartialBackup }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// humanBytes renders a byte count for error messages.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
