package tree

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Format constants. The layout is specified in docs/design.md; a change
// of layout takes a new version number, and version numbers are never reused.
const (
	magic0, magic1, magic2, magic3 = 'C', 'F', 'T', 'R'
	// Version is the tree format version this package writes and reads.
	Version = 1

	headerLen = 5 // magic (4) + version (1)
	// minNodeLen is the fewest bytes a node can take: 13 one-byte scalars or
	// lengths, a one-byte name, the type byte and three one-byte counts.
	minNodeLen  = 18
	minXattrLen = 3 // name length, one name byte, value length
	minHoleLen  = 2 // offset, length
	idLen       = len(ID{})
)

// Encode returns the canonical encoding of t. It fails, with an error wrapping
// ErrInvalid, if the nodes are not sorted by name, a name repeats, or any node
// breaks the per-type rules documented on Node. The same tree always gives the
// same bytes; nothing random or time-dependent is added. t is not modified.
func (t *Tree) Encode() ([]byte, error) {
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("encode tree: %w: %s", ErrInvalid, err)
	}
	b := make([]byte, 0, t.sizeHint())
	b = append(b, magic0, magic1, magic2, magic3, Version)
	b = binary.AppendUvarint(b, uint64(len(t.Nodes)))
	for i := range t.Nodes {
		b = appendNode(b, &t.Nodes[i])
	}
	return b, nil
}

func (t *Tree) sizeHint() int {
	n := headerLen + binary.MaxVarintLen64
	for i := range t.Nodes {
		nd := &t.Nodes[i]
		n += 64 + len(nd.Name) + len(nd.User) + len(nd.Group) + len(nd.LinkTarget) +
			idLen*len(nd.Content) + 2*binary.MaxVarintLen64*len(nd.Holes)
		for _, x := range nd.Xattrs {
			n += 2*binary.MaxVarintLen64 + len(x.Name) + len(x.Value)
		}
		if nd.Type == Dir {
			n += idLen
		}
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendNode(b []byte, n *Node) []byte {
	b = appendString(b, n.Name)
	b = append(b, byte(n.Type))
	b = binary.AppendUvarint(b, uint64(n.Mode))
	b = binary.AppendUvarint(b, uint64(n.UID))
	b = binary.AppendUvarint(b, uint64(n.GID))
	b = appendString(b, n.User)
	b = appendString(b, n.Group)
	b = binary.AppendVarint(b, n.MTime) // zigzag
	b = binary.AppendVarint(b, n.CTime)
	b = binary.AppendUvarint(b, n.Size)
	b = appendString(b, n.LinkTarget)
	b = binary.AppendUvarint(b, n.Rdev)
	b = binary.AppendUvarint(b, n.Inode)
	b = binary.AppendUvarint(b, n.Links)
	b = binary.AppendUvarint(b, uint64(len(n.Xattrs)))
	for _, x := range n.Xattrs {
		b = appendString(b, x.Name)
		b = binary.AppendUvarint(b, uint64(len(x.Value)))
		b = append(b, x.Value...)
	}
	b = binary.AppendUvarint(b, uint64(len(n.Holes)))
	for _, h := range n.Holes {
		b = binary.AppendUvarint(b, h.Off)
		b = binary.AppendUvarint(b, h.Len)
	}
	b = binary.AppendUvarint(b, uint64(len(n.Content)))
	for i := range n.Content {
		b = append(b, n.Content[i][:]...)
	}
	if n.Type == Dir {
		b = append(b, n.Subtree[:]...)
	}
	return b
}

// Decode parses and validates an encoded tree. It accepts exactly the bytes
// Encode produces: any other input (bad magic or version, truncation, trailing
// bytes, non-minimal varints, unsorted or duplicate names, a field that must be
// empty for the node's type, ...) gives an error wrapping ErrCorrupt. Decode
// never panics, and it allocates memory in proportion to len(b) at most.
// The returned tree does not alias b; the caller may reuse b.
func Decode(b []byte) (*Tree, error) {
	t, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("decode tree: %w: %s", ErrCorrupt, err)
	}
	return t, nil
}

func decode(b []byte) (*Tree, error) {
	if len(b) < headerLen || b[0] != magic0 || b[1] != magic1 || b[2] != magic2 || b[3] != magic3 {
		return nil, errors.New("bad magic")
	}
	if b[4] != Version {
		return nil, fmt.Errorf("unknown format version %d", b[4])
	}
	// All strings of the tree share one copy of the input: one allocation
	// instead of several per node.
	r := reader{b: b, s: string(b), off: headerLen}
	count, err := r.count(minNodeLen)
	if err != nil {
		return nil, fmt.Errorf("node count: %s", err)
	}
	t := &Tree{Nodes: make([]Node, count)}
	for i := range t.Nodes {
		if err := r.node(&t.Nodes[i]); err != nil {
			return nil, fmt.Errorf("node %d at offset %d: %s", i, r.off, err)
		}
	}
	if r.off != len(b) {
		return nil, fmt.Errorf("%d trailing bytes", len(b)-r.off)
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	return t, nil
}

var errShort = errors.New("unexpected end of data")

// reader walks b; s is string(b), so strings can be sliced without copying.
type reader struct {
	b   []byte
	s   string
	off int
}

// uvarint reads a minimally encoded unsigned LEB128 value.
func (r *reader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b[r.off:])
	if n == 0 {
		return 0, errShort
	}
	if n < 0 {
		return 0, errors.New("varint overflows 64 bits")
	}
	if n > 1 && r.b[r.off+n-1] == 0 {
		return 0, errors.New("varint not minimally encoded")
	}
	r.off += n
	return v, nil
}

func (r *reader) uvarint32() (uint32, error) {
	v, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	if v > math.MaxUint32 {
		return 0, fmt.Errorf("value %d does not fit 32 bits", v)
	}
	return uint32(v), nil
}

// varint reads a zigzag-encoded signed value (encoding/binary's Varint).
func (r *reader) varint() (int64, error) {
	u, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x, nil
}

// count reads a count of items that each take at least minLen bytes, and
// rejects counts the rest of the input cannot hold, before anything is allocated.
func (r *reader) count(minLen int) (int, error) {
	v, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	if v > uint64((len(r.b)-r.off)/minLen) {
		return 0, fmt.Errorf("count %d exceeds what %d remaining bytes can hold", v, len(r.b)-r.off)
	}
	return int(v), nil
}

func (r *reader) length() (int, error) {
	v, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	if v > uint64(len(r.b)-r.off) {
		return 0, errShort
	}
	return int(v), nil
}

func (r *reader) string() (string, error) {
	l, err := r.length()
	if err != nil {
		return "", err
	}
	s := r.s[r.off : r.off+l]
	r.off += l
	return s, nil
}

func (r *reader) id(dst *ID) error {
	if len(r.b)-r.off < idLen {
		return errShort
	}
	copy(dst[:], r.b[r.off:])
	r.off += idLen
	return nil
}

// node reads the fields of one node in format order. Rules that relate fields
// to each other are checked afterwards by Tree.check.
func (r *reader) node(n *Node) error {
	var err error
	if n.Name, err = r.string(); err != nil {
		return fmt.Errorf("name: %s", err)
	}
	if r.off >= len(r.b) {
		return errShort
	}
	n.Type = Type(r.b[r.off])
	r.off++
	if !n.Type.valid() {
		return fmt.Errorf("unknown type %d", uint8(n.Type))
	}
	if n.Mode, err = r.uvarint32(); err != nil {
		return fmt.Errorf("mode: %s", err)
	}
	if n.UID, err = r.uvarint32(); err != nil {
		return fmt.Errorf("uid: %s", err)
	}
	if n.GID, err = r.uvarint32(); err != nil {
		return fmt.Errorf("gid: %s", err)
	}
	if n.User, err = r.string(); err != nil {
		return fmt.Errorf("user: %s", err)
	}
	if n.Group, err = r.string(); err != nil {
		return fmt.Errorf("group: %s", err)
	}
	if n.MTime, err = r.varint(); err != nil {
		return fmt.Errorf("mtime: %s", err)
	}
	if n.CTime, err = r.varint(); err != nil {
		return fmt.Errorf("ctime: %s", err)
	}
	if n.Size, err = r.uvarint(); err != nil {
		return fmt.Errorf("size: %s", err)
	}
	if n.LinkTarget, err = r.string(); err != nil {
		return fmt.Errorf("link target: %s", err)
	}
	if n.Rdev, err = r.uvarint(); err != nil {
		return fmt.Errorf("rdev: %s", err)
	}
	if n.Inode, err = r.uvarint(); err != nil {
		return fmt.Errorf("inode: %s", err)
	}
	if n.Links, err = r.uvarint(); err != nil {
		return fmt.Errorf("links: %s", err)
	}

	nx, err := r.count(minXattrLen)
	if err != nil {
		return fmt.Errorf("xattr count: %s", err)
	}
	if nx > 0 {
		n.Xattrs = make([]Xattr, nx)
		for i := range n.Xattrs {
			x := &n.Xattrs[i]
			if x.Name, err = r.string(); err != nil {
				return fmt.Errorf("xattr %d name: %s", i, err)
			}
			l, err := r.length()
			if err != nil {
				return fmt.Errorf("xattr %d value: %s", i, err)
			}
			if l > 0 {
				x.Value = make([]byte, l)
				copy(x.Value, r.b[r.off:])
				r.off += l
			}
		}
	}

	nh, err := r.count(minHoleLen)
	if err != nil {
		return fmt.Errorf("hole count: %s", err)
	}
	if nh > 0 {
		n.Holes = make([]Extent, nh)
		for i := range n.Holes {
			if n.Holes[i].Off, err = r.uvarint(); err != nil {
				return fmt.Errorf("hole %d offset: %s", i, err)
			}
			if n.Holes[i].Len, err = r.uvarint(); err != nil {
				return fmt.Errorf("hole %d length: %s", i, err)
			}
		}
	}

	nc, err := r.count(idLen)
	if err != nil {
		return fmt.Errorf("content count: %s", err)
	}
	if nc > 0 {
		n.Content = make([]ID, nc)
		for i := range n.Content {
			if err := r.id(&n.Content[i]); err != nil {
				return fmt.Errorf("content %d: %s", i, err)
			}
		}
	}

	if n.Type == Dir {
		if err := r.id(&n.Subtree); err != nil {
			return fmt.Errorf("subtree: %s", err)
		}
	}
	return nil
}
