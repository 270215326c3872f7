package tree

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ID is the content ID of a blob: a keyed hash computed by the engine. This
// package only carries IDs; it never computes them.
type ID [32]byte

// Type is the kind of a file-system entry. The numbers are part of the tree
// format: they are reserved forever and never reused.
type Type uint8

// Entry types. See docs/design.md for how each is represented and restored.
const (
	File     Type = 1 // regular file; Content and Holes describe its bytes
	Dir      Type = 2 // folder; Subtree is the ID of its own tree
	Symlink  Type = 3 // symbolic link; LinkTarget is the target, byte for byte
	Hardlink Type = 4 // another name of an inode seen earlier in the same snapshot
	FIFO     Type = 5 // named pipe
	Socket   Type = 6 // Unix socket: recorded, never recreated by a restore
	CharDev  Type = 7 // character device; Rdev is the device number
	BlockDev Type = 8 // block device; Rdev is the device number
)

// String returns a short lower-case name of t, or "type(N)" for an unknown one.
func (t Type) String() string {
	switch t {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	case Hardlink:
		return "hardlink"
	case FIFO:
		return "fifo"
	case Socket:
		return "socket"
	case CharDev:
		return "chardev"
	case BlockDev:
		return "blockdev"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

func (t Type) valid() bool { return t >= File && t <= BlockDev }

// ModeMask is the set of mode bits a Node carries: permissions plus setuid,
// setgid and sticky. The file type is carried by Node.Type, not by Mode.
const ModeMask = 0o7777

// Xattr is one extended attribute. POSIX ACLs are carried as the xattrs
// system.posix_acl_access and system.posix_acl_default, in the kernel's binary form.
type Xattr struct {
	Name  string // never empty, never contains NUL
	Value []byte // may be empty
}

// Extent is a byte range [Off, Off+Len) of a file.
type Extent struct {
	Off, Len uint64
}

// Node is one entry of a folder. Which fields may be non-zero depends on Type;
// the rules (enforced by Encode, Decode and Validate) are:
//
//   - Size: File and Hardlink only (for a Hardlink it is the size of the inode,
//     for listings only).
//   - LinkTarget: Symlink (non-empty, no NUL) and Hardlink (a "/"-separated path
//     relative to the snapshot root, with no empty, "." or ".." component).
//   - Rdev: CharDev and BlockDev only.
//   - Holes and Content: File only. Holes are sorted, each Len > 0, separated by
//     at least one data byte (adjacent holes must be merged), and inside Size.
//   - Subtree: Dir only (and always present for a Dir, even an empty one).
//
// Xattrs are allowed on every type, sorted by Name with unique names.
type Node struct {
	Name        string   // raw bytes of the name (need not be UTF-8); never contains '/' or NUL; not "", "." or ".."
	Type        Type     // one of the Type constants
	Mode        uint32   // permission bits plus setuid, setgid, sticky (mask ModeMask)
	UID, GID    uint32   // numeric owner at backup time
	User, Group string   // owner names at backup time ("" if unknown); never contain NUL
	MTime       int64    // modification time, nanoseconds since the Unix epoch
	CTime       int64    // inode change time, nanoseconds since the Unix epoch
	Size        uint64   // file size in bytes (0 for non-files)
	LinkTarget  string   // Symlink: target bytes; Hardlink: path of the first link, relative to the snapshot root
	Rdev        uint64   // CharDev/BlockDev device number (unix.Mkdev)
	Inode       uint64   // st_ino at backup time
	Links       uint64   // st_nlink at backup time
	Xattrs      []Xattr  // sorted by Name; includes POSIX ACLs
	Holes       []Extent // File: holes of a sparse file, sorted, non-overlapping
	Content     []ID     // File: content chunk IDs in order
	Subtree     ID       // Dir: ID of the child tree blob
}

// Tree is the entries of one folder, sorted by Name (bytewise), names unique.
type Tree struct {
	Nodes []Node
}

// ErrCorrupt is wrapped by every error Decode returns: the bytes are not a
// valid tree in this format.
var ErrCorrupt = errors.New("tree: corrupt tree")

// ErrInvalid is wrapped by the errors of Encode, Validate and Builder.Tree: the
// tree or node in memory breaks a rule of the format (order, names, per-type fields).
var ErrInvalid = errors.New("tree: invalid tree")

// Validate reports whether n obeys the per-type rules documented on Node. The
// error wraps ErrInvalid and names the offending field.
func (n *Node) Validate() error {
	if err := checkNode(n); err != nil {
		return fmt.Errorf("node %q: %w: %s", n.Name, ErrInvalid, err)
	}
	return nil
}

// MakeHardlink turns n (as read from the file system) into a Hardlink node
// pointing at target, the snapshot-relative path of the first name of the same
// inode. It keeps the name, ownership, mode, times, inode, link count, size and
// xattrs, and clears the fields a Hardlink must not carry (Rdev, Holes,
// Content, Subtree). It does not check target; Validate or Encode do.
func (n *Node) MakeHardlink(target string) {
	size := n.Size
	if n.Type != File {
		size = 0
	}
	n.Type = Hardlink
	n.LinkTarget = target
	n.Size = size
	n.Rdev = 0
	n.Holes = nil
	n.Content = nil
	n.Subtree = ID{}
}

// JoinRel joins a snapshot-relative path (the form of a hard link's target;
// "" is the snapshot's root) and a name.
func JoinRel(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

// Find returns the node named name, or nil if there is none. It uses binary
// search, so t must be sorted (as every decoded or built tree is). The result
// points into t.Nodes.
func (t *Tree) Find(name string) *Node {
	i, ok := slices.BinarySearchFunc(t.Nodes, name, func(n Node, name string) int {
		return strings.Compare(n.Name, name)
	})
	if !ok {
		return nil
	}
	return &t.Nodes[i]
}

// Builder collects the nodes of one folder in any order. The zero value is
// ready to use. A Builder is not safe for concurrent use.
type Builder struct {
	nodes []Node
}

// Add appends n. The Builder keeps n (including its slices) until Tree is called.
func (b *Builder) Add(n Node) {
	b.nodes = append(b.nodes, n)
}

// Len returns how many nodes were added.
func (b *Builder) Len() int { return len(b.nodes) }

// Tree sorts the added nodes by name and returns them as a Tree, checked as
// Encode would check it; the error wraps ErrInvalid (for example two entries
// with the same name). The Builder is empty afterwards and may be reused.
func (b *Builder) Tree() (*Tree, error) {
	nodes := b.nodes
	b.nodes = nil
	slices.SortFunc(nodes, func(x, y Node) int { return strings.Compare(x.Name, y.Name) })
	t := &Tree{Nodes: nodes}
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, err)
	}
	return t, nil
}

// check verifies order, uniqueness and every node. It returns an unwrapped
// description; callers wrap it with ErrInvalid or ErrCorrupt.
func (t *Tree) check() error {
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if err := checkNode(n); err != nil {
			return fmt.Errorf("node %d %q: %s", i, n.Name, err)
		}
		if i > 0 && t.Nodes[i-1].Name >= n.Name {
			if t.Nodes[i-1].Name == n.Name {
				return fmt.Errorf("node %d: duplicate name %q", i, n.Name)
			}
			return fmt.Errorf("node %d: %q sorts before %q", i, n.Name, t.Nodes[i-1].Name)
		}
	}
	return nil
}

// checkNode is the single statement of the per-type rules (see Node).
func checkNode(n *Node) error {
	if err := checkName(n.Name); err != nil {
		return err
	}
	if !n.Type.valid() {
		return fmt.Errorf("unknown type %d", uint8(n.Type))
	}
	if n.Mode&^ModeMask != 0 {
		return fmt.Errorf("mode %#o has bits outside %#o", n.Mode, ModeMask)
	}
	if strings.IndexByte(n.User, 0) >= 0 || strings.IndexByte(n.Group, 0) >= 0 {
		return errors.New("user or group name contains NUL")
	}
	t := n.Type
	if n.Size != 0 && t != File && t != Hardlink {
		return fmt.Errorf("size %d on a %s", n.Size, t)
	}
	switch t {
	case Symlink:
		if n.LinkTarget == "" {
			return errors.New("symlink with empty target")
		}
		if strings.IndexByte(n.LinkTarget, 0) >= 0 {
			return errors.New("symlink target contains NUL")
		}
	case Hardlink:
		if err := checkRelPath(n.LinkTarget); err != nil {
			return fmt.Errorf("hardlink target: %s", err)
		}
	default:
		if n.LinkTarget != "" {
			return fmt.Errorf("link target on a %s", t)
		}
	}
	if n.Rdev != 0 && t != CharDev && t != BlockDev {
		return fmt.Errorf("rdev on a %s", t)
	}
	if t != File && (len(n.Holes) != 0 || len(n.Content) != 0) {
		return fmt.Errorf("holes or content on a %s", t)
	}
	if t != Dir && n.Subtree != (ID{}) {
		return fmt.Errorf("subtree on a %s", t)
	}
	for i, x := range n.Xattrs {
		if x.Name == "" || strings.IndexByte(x.Name, 0) >= 0 {
			return fmt.Errorf("xattr %d: empty name or name with NUL", i)
		}
		if i > 0 && n.Xattrs[i-1].Name >= x.Name {
			return fmt.Errorf("xattr %d: %q not after %q", i, x.Name, n.Xattrs[i-1].Name)
		}
	}
	var end uint64 // end of the previous hole
	for i, h := range n.Holes {
		if h.Len == 0 {
			return fmt.Errorf("hole %d is empty", i)
		}
		if i > 0 && h.Off <= end {
			return fmt.Errorf("hole %d at %d overlaps or touches the previous one ending at %d", i, h.Off, end)
		}
		if h.Off > n.Size || h.Len > n.Size-h.Off {
			return fmt.Errorf("hole %d [%d,+%d) beyond size %d", i, h.Off, h.Len, n.Size)
		}
		end = h.Off + h.Len
	}
	return nil
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("name %q not allowed", name)
	case strings.IndexByte(name, '/') >= 0:
		return errors.New("name contains '/'")
	case strings.IndexByte(name, 0) >= 0:
		return errors.New("name contains NUL")
	}
	return nil
}

// checkRelPath accepts "a/b/c" where every component is a valid name.
func checkRelPath(p string) error {
	if p == "" {
		return errors.New("empty path")
	}
	for c := range strings.SplitSeq(p, "/") {
		if err := checkName(c); err != nil {
			return fmt.Errorf("path %q: %s", p, err)
		}
	}
	return nil
}
