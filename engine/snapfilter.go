package engine

import (
	"path/filepath"
	"slices"
	"strings"
)

// SnapshotFilter selects snapshots as restic's --host, --tag and --path
// do. A zero filter selects every snapshot.
type SnapshotFilter struct {
	// Hosts: the snapshot's host is one of these (any, when empty).
	Hosts []string
	// Tags: the snapshot has every tag of at least one entry, each entry
	// a comma-separated list ("nightly,web" needs both; two entries
	// "nightly" and "weekly" take either). Any, when empty.
	Tags []string
	// Paths: the snapshot's paths include every one of these (compared
	// after filepath.Clean).
	Paths []string
}

// Empty reports whether f selects every snapshot.
func (f SnapshotFilter) Empty() bool {
	return len(f.Hosts) == 0 && len(f.Tags) == 0 && len(f.Paths) == 0
}

// Match reports whether f selects s.
func (f SnapshotFilter) Match(s *Snapshot) bool {
	if len(f.Hosts) > 0 && !slices.Contains(f.Hosts, s.Host) {
		return false
	}
	if len(f.Tags) > 0 && !slices.ContainsFunc(f.Tags, func(entry string) bool { return hasTags(s, entry) }) {
		return false
	}
	for _, p := range f.Paths {
		p = filepath.Clean(p)
		if !slices.ContainsFunc(s.Paths, func(sp string) bool { return filepath.Clean(sp) == p }) {
			return false
		}
	}
	return true
}

// hasTags reports whether s has every tag of the comma-separated list; an
// empty list matches a snapshot without tags (restic's --tag "").
func hasTags(s *Snapshot, list string) bool {
	if strings.TrimSpace(list) == "" {
		return len(s.Tags) == 0
	}
	for _, tag := range strings.Split(list, ",") {
		if tag = strings.TrimSpace(tag); tag != "" && !slices.Contains(s.Tags, tag) {
			return false
		}
	}
	return true
}

// Filter returns the snapshots of ss that f selects, in order.
func (f SnapshotFilter) Filter(ss []*Snapshot) []*Snapshot {
	if f.Empty() {
		return ss
	}
	out := make([]*Snapshot, 0, len(ss))
	for _, s := range ss {
		if f.Match(s) {
			out = append(out, s)
		}
	}
	return out
}
