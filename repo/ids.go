package repo

import (
	"encoding/hex"
	"fmt"
)

// PackID names a pack. It is random and chosen by the engine.
type PackID [16]byte

// String returns the ID as 32 lowercase hex digits.
func (id PackID) String() string { return hex.EncodeToString(id[:]) }

// ParsePackID parses 32 hex digits.
func ParsePackID(s string) (PackID, error) {
	var id PackID
	if err := parseHex(id[:], s); err != nil {
		return PackID{}, fmt.Errorf("repo: parse pack ID %q: %w", s, err)
	}
	return id, nil
}

// DriveID names a drive of the repository. It is random.
type DriveID [8]byte

// String returns the ID as 16 lowercase hex digits.
func (id DriveID) String() string { return hex.EncodeToString(id[:]) }

// ParseDriveID parses 16 hex digits.
func ParseDriveID(s string) (DriveID, error) {
	var id DriveID
	if err := parseHex(id[:], s); err != nil {
		return DriveID{}, fmt.Errorf("repo: parse drive ID %q: %w", s, err)
	}
	return id, nil
}

// Hash is a BLAKE3-256 digest.
type Hash [32]byte

// String returns the hash as 64 lowercase hex digits.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// parseHex decodes exactly len(dst) bytes written as lowercase hex digits.
// Upper case is refused so that every ID has exactly one spelling on a drive.
func parseHex(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("want %d hex digits, got %d characters", 2*len(dst), len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("character %q at %d is not a lowercase hex digit", c, i)
		}
	}
	_, err := hex.Decode(dst, []byte(s))
	return err
}
