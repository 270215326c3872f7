// Package treetest describes file trees for byte-exact comparisons in
// tests: a restored tree against the source it was backed up from.
package treetest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// Manifest describes a tree: for every entry below the root (by its
// slash-separated path relative to the root), its type, permission bits and
// content hash (files) or target (symlinks).
type Manifest map[string]string

// Of scans the tree at root.
func Of(t testing.TB, root string) Manifest {
	t.Helper()
	m := Manifest{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			m[rel] = fmt.Sprintf("file %v %d %s", fi.Mode().Perm(), len(b), hex.EncodeToString(h[:8]))
		case fi.IsDir():
			m[rel] = fmt.Sprintf("dir %v", fi.Mode().Perm())
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m[rel] = "symlink " + target
		default:
			m[rel] = "other " + fi.Mode().Type().String()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	return m
}

// Diff lists the differences between want (m) and got, at most a few.
func (m Manifest) Diff(got Manifest) []string {
	var out []string
	for k, w := range m {
		if g, ok := got[k]; !ok {
			out = append(out, fmt.Sprintf("%s: missing (want %s)", k, w))
		} else if g != w {
			out = append(out, fmt.Sprintf("%s: %s, want %s", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := m[k]; !ok {
			out = append(out, fmt.Sprintf("%s: unexpected %s", k, g))
		}
	}
	sort.Strings(out)
	if len(out) > 8 {
		out = append(out[:8], fmt.Sprintf("… and %d more", len(out)-8))
	}
	return out
}
