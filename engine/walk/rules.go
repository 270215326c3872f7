package walk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"coffer/engine/tree"
)

// ErrInvalid is the class of errors about what was asked to be backed up:
// a path that cannot be backed up, a malformed exclude pattern, a stream
// name that is not a plain file name, or a folder on the way to a
// backed-up path that is not a folder. Test with errors.Is; the error's
// text is the sentence alone (without this sentinel's), for its user to
// wrap in its own class.
var ErrInvalid = errors.New("walk: invalid source")

type invalidError string

func (e invalidError) Error() string        { return string(e) }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return invalidError(fmt.Sprintf(format, args...))
}

// Sources checks the paths and exclude patterns of a backup and returns
// the paths to give Walk: absolute, sorted, without duplicates and without
// paths inside another of them. A path that cannot be found (Lstat fails)
// is left out and named in skipped ("path: reason", to give Options.Skipped:
// the backup goes on with the rest, as restic's does); when no path is
// left, the backup is refused. A dangling symlink exists: it is backed up
// as a symlink.
func Sources(paths, excludes []string) (abs, skipped []string, err error) {
	if len(paths) == 0 {
		return nil, nil, invalidf("nothing to back up: give at least one path")
	}
	if err := CheckPatterns(excludes); err != nil {
		return nil, nil, err
	}
	abs = make([]string, 0, len(paths))
	for _, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, nil, err
		}
		if _, err := os.Lstat(a); err != nil {
			if u := errors.Unwrap(err); u != nil {
				err = u
			}
			skipped = append(skipped, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		abs = append(abs, a)
	}
	if len(abs) == 0 {
		return nil, nil, invalidf("cannot back up %s", strings.Join(skipped, "; "))
	}
	return dropNested(abs), skipped, nil
}

// CheckPatterns checks exclude patterns (see Match): each part must be a
// well-formed filepath.Match pattern.
func CheckPatterns(patterns []string) error {
	for _, pat := range patterns {
		for _, part := range splitPath(pat) {
			if _, err := filepath.Match(part, ""); err != nil {
				return invalidf("exclude pattern %q: %v", pat, err)
			}
		}
	}
	return nil
}

// CheckStreamName checks the name a stream (standard input) is backed up
// as: a plain file name.
func CheckStreamName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return invalidf("stdin file name %q must be a plain file name", name)
	}
	return nil
}

// dropNested sorts paths and removes those inside another path of the
// list, and duplicates.
func dropNested(paths []string) []string {
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

// vdir is a folder on the way from "/" to the backed-up paths: backed-up
// paths keep their absolute location in a snapshot, as in restic (backing
// up /srv/www gives srv/www).
type vdir struct {
	children map[string]*vdir
	target   bool // this path was named for backup
}

// roots builds the folders from "/" to the absolute paths. The root itself
// is a target when "/" was named.
func roots(paths []string) *vdir {
	root := &vdir{children: map[string]*vdir{}}
	for _, p := range paths {
		v := root
		for _, c := range strings.Split(strings.Trim(p, "/"), "/") {
			if c == "" {
				continue
			}
			if v.children[c] == nil {
				v.children[c] = &vdir{children: map[string]*vdir{}}
			}
			v = v.children[c]
		}
		v.target = true
	}
	return root
}

// names are the names of d's children, sorted.
func (d *vdir) names() []string {
	names := make([]string, 0, len(d.children))
	for name := range d.children {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// excluded reports whether the absolute path abs matches one of the walk's
// exclude patterns.
func (w *walker) excluded(abs string) bool {
	return excluded(w.o.Excludes, abs, false) || excluded(w.o.IExcludes, abs, true)
}

// hasMarker reports whether the folder dir holds an entry named in
// ExcludeIfPresent.
func (w *walker) hasMarker(dir string) bool {
	for _, name := range w.o.ExcludeIfPresent {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// tooLarge reports whether a regular file of size bytes is left out by
// ExcludeLargerThan.
func (w *walker) tooLarge(size int64) bool {
	return w.o.ExcludeLargerThan > 0 && size > w.o.ExcludeLargerThan
}

// excluded reports whether the absolute path abs matches an exclude
// pattern (see Match); fold is for --iexclude patterns, matched without
// regard to case.
func excluded(patterns []string, abs string, fold bool) bool {
	for _, pat := range patterns {
		if Match(pat, abs, fold) {
			return true
		}
	}
	return false
}

// Match reports whether the absolute path abs matches an exclude pattern,
// as restic's do. A pattern is split at "/" into parts matched one by one
// against the path's names (filepath.Match syntax in each part), and a
// part "**" matches any number of names. A pattern starting with "/" is
// anchored: it must match the whole path. Any other pattern matches the
// last names of the path: "*.tmp" any file or folder so named,
// "adduser/examples" the folder examples in a folder adduser anywhere, and
// "/home/*/.cache" only those under /home. A trailing "/" is ignored. An
// excluded folder leaves out everything below it. With fold, case is
// ignored (--iexclude).
func Match(pat, abs string, fold bool) bool {
	if fold {
		pat, abs = strings.ToLower(pat), strings.ToLower(abs)
	}
	anchored := strings.HasPrefix(pat, "/")
	pp := splitPath(pat)
	ap := splitPath(abs)
	if len(pp) == 0 {
		return false
	}
	if !anchored {
		pp = append([]string{"**"}, pp...)
	}
	return matchParts(pp, ap)
}

// splitPath splits a path into its names, without empty ones.
func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

// matchParts matches pattern parts against names; "**" matches zero or
// more names. It is a table over (part, name) positions, so any pattern
// costs at most len(pp) × len(names) part matches.
func matchParts(pp, names []string) bool {
	// ok[j]: pp[:i] matches names[:j], for the current i.
	ok := make([]bool, len(names)+1)
	ok[0] = true
	for _, part := range pp {
		next := make([]bool, len(names)+1)
		if part == "**" {
			seen := false
			for j := range ok {
				seen = seen || ok[j]
				next[j] = seen
			}
		} else {
			for j := 1; j <= len(names); j++ {
				if ok[j-1] {
					next[j], _ = filepath.Match(part, names[j-1])
				}
			}
		}
		ok = next
	}
	return ok[len(names)]
}

// clipHoles drops hole ranges beyond size (the file shrank while it was
// read) and shortens one that crosses it.
func clipHoles(h []tree.Extent, size uint64) []tree.Extent {
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

// unchanged reports whether a file's metadata lets it reuse the content of
// its node prev in the parent snapshot, whose backup started at
// parentStart (Unix nanoseconds; 0 = no parent): same size, mtime, ctime
// and inode, and an mtime older than that start, so a write during the
// parent's backup is not missed. (Whether that content is still stored is
// the Sink's to say: Knower.)
func unchanged(n, prev *tree.Node, parentStart int64) bool {
	if prev == nil || prev.Type != tree.File || parentStart == 0 {
		return false
	}
	return prev.Size == n.Size && prev.MTime == n.MTime && prev.CTime == n.CTime && prev.Inode == n.Inode && n.MTime < parentStart
}
