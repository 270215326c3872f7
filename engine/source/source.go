// Package source holds the rules of walking the paths to back up that the
// local backup (package engine) and the remote client (engine/remote)
// share, so both record the same snapshot for the same source.
package source

import (
	"path/filepath"
	"sort"
	"strings"

	"coffer/engine/tree"
)

// DropNested sorts paths and removes those inside another path of the
// list, and duplicates.
func DropNested(paths []string) []string {
	sort.Strings(paths)
	var out []string
	for _, p := range paths {
		if len(out) > 0 {
			last := out[len(out)-1]
			if p == last || strings.HasPrefix(p, strings.TrimSuffix(last, "/")+"/") {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

// Dir is a folder on the way from "/" to the backed-up paths: backed-up
// paths keep their absolute location in a snapshot, as in restic (backing
// up /srv/www gives srv/www).
type Dir struct {
	Children map[string]*Dir
	Target   bool // this path was named for backup
}

// Roots builds the folders from "/" to the absolute paths. The root itself
// is a Target when "/" was named.
func Roots(paths []string) *Dir {
	root := &Dir{Children: map[string]*Dir{}}
	for _, p := range paths {
		v := root
		for _, c := range strings.Split(strings.Trim(p, "/"), "/") {
			if c == "" {
				continue
			}
			if v.Children[c] == nil {
				v.Children[c] = &Dir{Children: map[string]*Dir{}}
			}
			v = v.Children[c]
		}
		v.Target = true
	}
	return root
}

// Names are the names of d's children, sorted.
func (d *Dir) Names() []string {
	names := make([]string, 0, len(d.Children))
	for name := range d.Children {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// JoinRel joins a slash-separated relative path and a name.
func JoinRel(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

// Excluded reports whether the absolute path abs matches an exclude
// pattern: one without "/" is matched against the base name, one with "/"
// against the whole path (filepath.Match syntax).
func Excluded(patterns []string, abs string) bool {
	base := filepath.Base(abs)
	for _, pat := range patterns {
		if strings.Contains(pat, "/") {
			if ok, _ := filepath.Match(pat, abs); ok {
				return true
			}
		} else if ok, _ := filepath.Match(pat, base); ok {
			return true
		}
	}
	return false
}

// ClipHoles drops hole ranges beyond size (the file shrank while it was
// read) and shortens one that crosses it.
func ClipHoles(h []tree.Extent, size uint64) []tree.Extent {
	var out []tree.Extent
	for _, e := range h {
		if e.Off >= size {
			break
		}
		if e.Off+e.Len > size {
			e.Len = size - e.Off
		}
		out = append(out, e)
	}
	return out
}

// Unchanged reports whether a file may reuse the content of its node prev
// in the parent snapshot, whose backup started at parentStart (Unix
// nanoseconds; 0 = no parent): same size, mtime, ctime and inode, and an
// mtime older than that start, so a write during the parent's backup is
// not missed. (The local backup also checks that the content is still
// indexed; the server checks that at commit.)
func Unchanged(n, prev *tree.Node, parentStart int64) bool {
	if prev == nil || prev.Type != tree.File || parentStart == 0 {
		return false
	}
	return prev.Size == n.Size && prev.MTime == n.MTime && prev.CTime == n.CTime && prev.Inode == n.Inode && n.MTime < parentStart
}
