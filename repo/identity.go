package repo

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// IdentityName is the object at the top of every drive that says which repository
// the drive belongs to, which drive it is and in which rack it sits.
const IdentityName = "coffer-drive"

// identityFormat and identityVersion are the values of the "format" and "version"
// fields. Version numbers are never reused.
const (
	identityFormat  = "coffer-drive"
	identityVersion = 1
	maxIdentitySize = 4096
	maxRackLen      = 64
)

// Identity is the content of a drive's identity object.
type Identity struct {
	Repository [16]byte
	Drive      DriveID
	Rack       string
}

var (
	// ErrForeignDrive reports a drive that already carries the identity of another
	// repository or of another drive.
	ErrForeignDrive = errors.New("repo: drive belongs to another repository or is another drive")
	// ErrNoIdentity reports a drive without an identity object.
	ErrNoIdentity = errors.New("repo: drive has no identity")
)

type identityJSON struct {
	Format     string `json:"format"`
	Version    int    `json:"version"`
	Repository string `json:"repository"`
	Drive      string `json:"drive"`
	Rack       string `json:"rack"`
}

// ValidateRack checks a rack label: 1 to 64 characters from [A-Za-z0-9._-].
func ValidateRack(rack string) error {
	if rack == "" || len(rack) > maxRackLen {
		return fmt.Errorf("repo: rack label %q must have 1 to %d characters", rack, maxRackLen)
	}
	for i := 0; i < len(rack); i++ {
		if !nameByte(rack[i]) {
			return fmt.Errorf("repo: rack label %q: character %q is not allowed", rack, rack[i])
		}
	}
	return nil
}

// EncodeIdentity returns the JSON identity object for id.
func EncodeIdentity(id Identity) ([]byte, error) {
	if err := ValidateRack(id.Rack); err != nil {
		return nil, err
	}
	b, err := json.Marshal(identityJSON{
		Format:     identityFormat,
		Version:    identityVersion,
		Repository: hex.EncodeToString(id.Repository[:]),
		Drive:      id.Drive.String(),
		Rack:       id.Rack,
	})
	if err != nil {
		return nil, fmt.Errorf("repo: encode drive identity: %w", err)
	}
	return append(b, '\n'), nil
}

// DecodeIdentity parses an identity object. Every field is required and checked;
// unknown fields are refused (a new field means a new version). Errors wrap ErrCorrupt.
func DecodeIdentity(b []byte) (Identity, error) {
	bad := func(format string, args ...any) (Identity, error) {
		return Identity{}, fmt.Errorf("repo: malformed drive identity: %s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
	}
	if len(b) > maxIdentitySize {
		return bad("%d bytes, more than %d", len(b), maxIdentitySize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j identityJSON
	if err := dec.Decode(&j); err != nil {
		return bad("%v", err)
	}
	if dec.More() {
		return bad("trailing data after the JSON object")
	}
	if j.Format != identityFormat {
		return bad("format is %q, want %q", j.Format, identityFormat)
	}
	if j.Version != identityVersion {
		return bad("version %d is not supported (want %d)", j.Version, identityVersion)
	}
	var id Identity
	if err := parseHex(id.Repository[:], j.Repository); err != nil {
		return bad("repository: %v", err)
	}
	if err := parseHex(id.Drive[:], j.Drive); err != nil {
		return bad("drive: %v", err)
	}
	if err := ValidateRack(j.Rack); err != nil {
		return bad("%v", err)
	}
	id.Rack = j.Rack
	return id, nil
}

// ReadIdentity reads the identity object of d. It returns an error wrapping
// ErrNoIdentity if there is none, and one wrapping ErrCorrupt if it is malformed.
func ReadIdentity(ctx context.Context, d Drive) (Identity, error) {
	size, err := d.Size(ctx, IdentityName)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Identity{}, fmt.Errorf("read drive identity: %w", ErrNoIdentity)
		}
		return Identity{}, fmt.Errorf("read drive identity: %w", err)
	}
	if size > maxIdentitySize {
		return Identity{}, fmt.Errorf("repo: malformed drive identity: %d bytes, more than %d: %w", size, maxIdentitySize, ErrCorrupt)
	}
	b := make([]byte, size)
	if err := d.ReadAt(ctx, IdentityName, b, 0); err != nil {
		if errors.Is(err, ErrNotFound) {
			return Identity{}, fmt.Errorf("read drive identity: %w", ErrNoIdentity)
		}
		return Identity{}, fmt.Errorf("read drive identity: %w", err)
	}
	return DecodeIdentity(b)
}

// WriteIdentity writes id as the identity object of d. It refuses, with an error
// wrapping ErrForeignDrive, when d already carries the identity of another
// repository or another drive; rewriting the same identity (or changing only the
// rack) is allowed. It also refuses to overwrite a malformed identity object.
func WriteIdentity(ctx context.Context, d Drive, id Identity) error {
	b, err := EncodeIdentity(id)
	if err != nil {
		return err
	}
	old, err := ReadIdentity(ctx, d)
	switch {
	case err == nil:
		if old.Repository != id.Repository || old.Drive != id.Drive {
			return fmt.Errorf("write drive identity: drive %s of repository %x is already there: %w",
				old.Drive, old.Repository, ErrForeignDrive)
		}
	case errors.Is(err, ErrNoIdentity):
	default:
		return fmt.Errorf("write drive identity: %w", err)
	}
	if err := d.Put(ctx, IdentityName, b); err != nil {
		return fmt.Errorf("write drive identity: %w", err)
	}
	return nil
}
