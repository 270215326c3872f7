package repo

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Drive stores named objects durably. Names are "/"-separated relative paths whose
// components match [A-Za-z0-9._-]+ (validate; reject "..", empty components, leading "/").
//
// Every implementation validates names with ValidateName (and List prefixes with
// ValidatePrefix) and returns ErrInvalidName for a bad one. Names whose first
// component is "tmp" are reserved for the temporary files of interrupted puts.
// All methods are safe for concurrent use; they honour ctx and return its error
// once it is done. Implementations pass the suite in repo/drivetest.
type Drive interface {
	// Put stores data under name, replacing any previous object; atomic and durable when it returns nil. Implementations must not retain data.
	Put(ctx context.Context, name string, data []byte) error
	// ReadAt fills p from offset off of the object. ErrNotFound if absent; io.ErrUnexpectedEOF if the object is shorter than off+len(p).
	ReadAt(ctx context.Context, name string, p []byte, off int64) error
	// Size returns the object's length, or ErrNotFound.
	Size(ctx context.Context, name string) (int64, error)
	// List calls fn for every object whose name starts with prefix (a folder prefix ending in "/", or ""), recursively, in no particular order. Temporary files of interrupted Puts are not listed.
	List(ctx context.Context, prefix string, fn func(name string, size int64) error) error
	// Delete removes the object; deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error
}

// PartsPutter is an optional ability of a Drive, found by type assertion:
// PutParts stores the concatenation of parts exactly as Put would store it
// joined (atomic and durable when it returns nil), so a caller need not copy
// a shard's header, data and trailer into one buffer. Implementations must
// not retain parts.
type PartsPutter interface {
	PutParts(ctx context.Context, name string, parts ...[]byte) error
}

// PrefixDeleter is an optional ability of a Drive, found by type assertion:
// DeletePrefix removes every object whose name starts with prefix (a non-empty
// folder prefix ending in "/", checked with ValidatePrefix), in one operation where
// the drive allows it. It is used to drop a tenant's whole container. Removing a
// prefix that holds nothing is not an error. Like Delete, it is durable when it
// returns nil.
type PrefixDeleter interface {
	DeletePrefix(ctx context.Context, prefix string) error
}

// ErrNotFound reports a missing object.
var ErrNotFound = errors.New("repo: not found")

// ErrInvalidName reports an object name or prefix that breaks the naming rule.
var ErrInvalidName = errors.New("repo: invalid object name")

// MaxNameLen bounds the length of an object name.
const MaxNameLen = 1024

// maxComponentLen bounds one "/"-separated component (the usual file-name limit).
const maxComponentLen = 255

// tmpFolder is the reserved first component under which folder drives keep the
// temporary files of puts in progress.
const tmpFolder = "tmp"

// ValidateName checks an object name: "/"-separated components, each made of
// [A-Za-z0-9._-] and neither "." nor "..", no leading or trailing "/", no empty
// component, at most MaxNameLen bytes, and a first component other than "tmp".
// The error wraps ErrInvalidName.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: name of %d bytes is longer than %d", ErrInvalidName, len(name), MaxNameLen)
	}
	first := true
	for c := range strings.SplitSeq(name, "/") {
		if err := validComponent(c); err != nil {
			return fmt.Errorf("%w: %q: %v", ErrInvalidName, name, err)
		}
		if first && c == tmpFolder {
			return fmt.Errorf("%w: %q: the top-level folder %q is reserved", ErrInvalidName, name, tmpFolder)
		}
		first = false
	}
	return nil
}

// ValidatePrefix checks a List prefix: "" (everything) or a valid name followed by "/".
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("%w: prefix %q does not end in \"/\"", ErrInvalidName, prefix)
	}
	return ValidateName(strings.TrimSuffix(prefix, "/"))
}

func validComponent(c string) error {
	switch {
	case c == "":
		return errors.New("empty component")
	case c == "." || c == "..":
		return fmt.Errorf("component %q is not allowed", c)
	case len(c) > maxComponentLen:
		return fmt.Errorf("component longer than %d bytes", maxComponentLen)
	}
	for i := 0; i < len(c); i++ {
		if !nameByte(c[i]) {
			return fmt.Errorf("character %q is not allowed", c[i])
		}
	}
	return nil
}

func nameByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == '.' || b == '_' || b == '-'
}
