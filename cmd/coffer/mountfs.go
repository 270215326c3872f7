package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"coffer/engine"
	"coffer/engine/tree"
)

// The file system of coffer mount (docs/design.md, "Random access and the
// mount"): top folders ids/, snapshots/, hosts/, tags/ listing the tenant's
// snapshots, each snapshot's folder its root tree. Everything below a
// snapshot is immutable, so the kernel may keep its entries, attributes and
// pages; the top folders re-read the snapshot list on a look-up or listing,
// at most once every snapRefresh.

const (
	snapRefresh   = time.Second
	immutableTTL  = time.Hour
	snapTimeFmt   = "2006-01-02T15:04:05Z07:00"
	latestName    = "latest"
	shortIDDigits = 8
)

// mountFS is what every node of a mount shares.
type mountFS struct {
	op        *engine.Opener
	snapshots func(context.Context) ([]*engine.Snapshot, error)
	start     time.Time // the times of the top folders

	mu      sync.Mutex
	list    []*engine.Snapshot // guarded by mu: oldest first
	names   map[string]string  // guarded by mu: snapshot ID → its name under snapshots/
	fetched time.Time          // guarded by mu
	err     error              // guarded by mu: of the last refresh
}

// refresh re-reads the snapshot list if it is older than snapRefresh, and
// returns the list and each snapshot's time name.
func (m *mountFS) refresh(ctx context.Context) ([]*engine.Snapshot, map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if time.Since(m.fetched) >= snapRefresh || m.list == nil {
		if err := m.op.Check(ctx); err != nil {
			return nil, nil, err
		}
		ss, err := m.snapshots(ctx)
		m.fetched = time.Now()
		m.err = err
		if err == nil {
			m.list = ss
			m.names = timeNames(ss)
		}
	}
	return m.list, m.names, m.err
}

// timeNames names snapshots by their time (local zone, as restic); two of
// the same second get "-1", "-2", … after the later ones' names.
func timeNames(ss []*engine.Snapshot) map[string]string {
	out := map[string]string{}
	used := map[string]bool{}
	for _, s := range ss {
		base := s.Time.Local().Format(snapTimeFmt)
		name := base
		for i := 1; used[name]; i++ {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		used[name] = true
		out[s.ID] = name
	}
	return out
}

// errno maps an error to what a reader of the mount sees.
func errno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, engine.ErrTenantLocked), errors.Is(err, engine.ErrClientRefused):
		return syscall.EACCES
	case errors.Is(err, engine.ErrPathNotFound), errors.Is(err, engine.ErrSnapshotNotFound):
		return syscall.ENOENT
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	return syscall.EIO
}

func ttl(out *fuse.EntryOut, d time.Duration) {
	out.SetEntryTimeout(d)
	out.SetAttrTimeout(d)
}

// topDir is the mount's root ("") or one of its top folders: ids,
// snapshots, hosts, tags, and hosts/H and tags/T (key set). Its entries
// follow the snapshot list.
type topDir struct {
	fs.Inode
	m    *mountFS
	kind string // "", "ids", "snapshots", "hosts", "tags", "host", "tag"
	key  string // the host or tag of "host" and "tag"
}

var (
	_ fs.NodeLookuper  = (*topDir)(nil)
	_ fs.NodeReaddirer = (*topDir)(nil)
	_ fs.NodeGetattrer = (*topDir)(nil)
)

// topEntry is one entry of a top folder: a folder (sub topDir or a
// snapshot) or the latest symlink.
type topEntry struct {
	name string
	kind string           // "top", "snap", "link"
	sub  string           // top: the kind of the folder
	key  string           // top: its key
	snap *engine.Snapshot // snap
	link string           // link: target
}

// entries lists the folder's entries from the snapshot list.
func (d *topDir) entries(ctx context.Context) ([]topEntry, error) {
	if d.kind == "" {
		return []topEntry{{name: "hosts", kind: "top", sub: "hosts"}, {name: "ids", kind: "top", sub: "ids"},
			{name: "snapshots", kind: "top", sub: "snapshots"}, {name: "tags", kind: "top", sub: "tags"}}, nil
	}
	ss, names, err := d.m.refresh(ctx)
	if err != nil {
		return nil, err
	}
	var out []topEntry
	switch d.kind {
	case "ids":
		for _, s := range ss {
			out = append(out, topEntry{name: s.ID[:shortIDDigits], kind: "snap", snap: s})
		}
	case "hosts", "tags":
		seen := map[string]bool{}
		for _, s := range ss {
			keys := s.Tags
			if d.kind == "hosts" {
				keys = []string{s.Host}
			}
			for _, k := range keys {
				if !seen[k] && validName(k) {
					seen[k] = true
					out = append(out, topEntry{name: k, kind: "top", sub: strings.TrimSuffix(d.kind, "s"), key: k})
				}
			}
		}
	case "snapshots", "host", "tag":
		var last string
		for _, s := range ss {
			if d.kind == "host" && s.Host != d.key || d.kind == "tag" && !slices.Contains(s.Tags, d.key) {
				continue
			}
			out = append(out, topEntry{name: names[s.ID], kind: "snap", snap: s})
			last = names[s.ID]
		}
		if last != "" {
			out = append(out, topEntry{name: latestName, kind: "link", link: last})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// validName reports whether a host or tag can be a folder name.
func validName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

func (d *topDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	out.SetTimes(&d.m.start, &d.m.start, &d.m.start)
	return 0
}

func (d *topDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	es, err := d.entries(ctx)
	if err != nil {
		return nil, errno(err)
	}
	list := make([]fuse.DirEntry, 0, len(es))
	for _, e := range es {
		mode := uint32(syscall.S_IFDIR)
		if e.kind == "link" {
			mode = syscall.S_IFLNK
		}
		list = append(list, fuse.DirEntry{Name: e.name, Mode: mode})
	}
	return fs.NewListDirStream(list), 0
}

func (d *topDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	es, err := d.entries(ctx)
	if err != nil {
		return nil, errno(err)
	}
	i := sort.Search(len(es), func(i int) bool { return es[i].name >= name })
	if i == len(es) || es[i].name != name {
		return nil, syscall.ENOENT
	}
	e := es[i]
	// Entries of top folders change with the snapshot list: short timeouts.
	ttl(out, snapRefresh)
	switch e.kind {
	case "link":
		out.Mode = syscall.S_IFLNK | 0o777
		out.Size = uint64(len(e.link))
		if ch := d.GetChild(name); ch != nil {
			if l, ok := ch.Operations().(*linkNode); ok && l.target == e.link {
				return ch, 0
			}
		}
		return d.NewInode(ctx, &linkNode{target: e.link}, fs.StableAttr{Mode: syscall.S_IFLNK}), 0
	case "top":
		out.Mode = syscall.S_IFDIR | 0o555
		out.SetTimes(&d.m.start, &d.m.start, &d.m.start)
		if ch := d.GetChild(name); ch != nil {
			return ch, 0
		}
		return d.NewInode(ctx, &topDir{m: d.m, kind: e.sub, key: e.key}, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
	}
	if ch := d.GetChild(name); ch != nil {
		if sd, ok := ch.Operations().(*snapDir); ok && sd.s.ID == e.snap.ID {
			sd.attr(&out.Attr)
			return ch, 0
		}
	}
	root, err := hex.DecodeString(e.snap.Tree)
	if err != nil || len(root) != len(tree.ID{}) {
		return nil, syscall.EIO
	}
	sd := &snapDir{dirNode: dirNode{m: d.m, s: e.snap, node: &tree.Node{Type: tree.Dir, Mode: 0o555, MTime: e.snap.Time.UnixNano(), CTime: e.snap.Time.UnixNano()}}}
	copy(sd.node.Subtree[:], root)
	sd.attr(&out.Attr)
	return d.NewInode(ctx, sd, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
}

// linkNode is a symlink with a fixed target (latest).
type linkNode struct {
	fs.Inode
	target string
}

func (l *linkNode) Readlink(context.Context) ([]byte, syscall.Errno) { return []byte(l.target), 0 }

func (l *linkNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFLNK | 0o777
	out.Size = uint64(len(l.target))
	return 0
}

// snapDir is a snapshot's folder: its root tree.
type snapDir struct {
	dirNode
}

// dirNode is a folder of a snapshot.
type dirNode struct {
	fs.Inode
	m    *mountFS
	s    *engine.Snapshot
	node *tree.Node
}

var (
	_ fs.NodeLookuper    = (*dirNode)(nil)
	_ fs.NodeReaddirer   = (*dirNode)(nil)
	_ fs.NodeGetattrer   = (*dirNode)(nil)
	_ fs.NodeGetxattrer  = (*dirNode)(nil)
	_ fs.NodeListxattrer = (*dirNode)(nil)
	_ fs.NodeLookuper    = (*snapDir)(nil)
	_ fs.NodeGetattrer   = (*leafNode)(nil)
	_ fs.NodeReadlinker  = (*leafNode)(nil)
	_ fs.NodeGetxattrer  = (*leafNode)(nil)
	_ fs.NodeListxattrer = (*leafNode)(nil)
	_ fs.NodeOpener      = (*fileNode)(nil)
	_ fs.NodeReader      = (*fileNode)(nil)
	_ fs.NodeReadlinker  = (*linkNode)(nil)
	_ fs.NodeGetattrer   = (*linkNode)(nil)
	_ fs.NodeStatfser    = (*topDir)(nil)
	_ fs.NodeStatfser    = (*dirNode)(nil)
)

// Statfs reports an empty read-only file system of 4 KiB blocks.
func statfs(out *fuse.StatfsOut) syscall.Errno {
	out.Bsize, out.Frsize, out.NameLen = 4096, 4096, 255
	return 0
}

func (*topDir) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno  { return statfs(out) }
func (*dirNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno { return statfs(out) }

// typeBits is the S_IF* of a node type.
func typeBits(t tree.Type) uint32 {
	switch t {
	case tree.Dir:
		return syscall.S_IFDIR
	case tree.Symlink:
		return syscall.S_IFLNK
	case tree.FIFO:
		return syscall.S_IFIFO
	case tree.Socket:
		return syscall.S_IFSOCK
	case tree.CharDev:
		return syscall.S_IFCHR
	case tree.BlockDev:
		return syscall.S_IFBLK
	}
	return syscall.S_IFREG
}

// nodeAttr fills out from n as stored: type and mode, owner, size, times,
// link count, device number, and the blocks a sparse file's data takes.
func nodeAttr(n *tree.Node, out *fuse.Attr) {
	out.Mode = typeBits(n.Type) | n.Mode&tree.ModeMask
	out.Uid, out.Gid = n.UID, n.GID
	out.Size = n.Size
	if n.Type == tree.Symlink {
		out.Size = uint64(len(n.LinkTarget))
	}
	mt := time.Unix(0, n.MTime)
	ct := time.Unix(0, n.CTime)
	out.SetTimes(&mt, &mt, &ct)
	out.Nlink = 1
	if n.Type == tree.File && n.Links > 1 {
		out.Nlink = uint32(min(n.Links, 1<<31))
	}
	if n.Type == tree.Dir {
		out.Nlink = 2
	}
	out.Rdev = uint32(n.Rdev)
	data := n.Size
	for _, h := range n.Holes {
		data -= min(h.Len, data)
	}
	out.Blocks = (data + 511) / 512
	out.Blksize = 4096
}

func (d *dirNode) attr(out *fuse.Attr) { nodeAttr(d.node, out) }

func (d *dirNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.attr(&out.Attr)
	out.SetTimeout(immutableTTL)
	return 0
}

func (d *dirNode) tree(ctx context.Context) (*tree.Tree, error) {
	return d.m.op.Tree(ctx, d.node.Subtree)
}

func (d *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	t, err := d.tree(ctx)
	if err != nil {
		return nil, errno(err)
	}
	list := make([]fuse.DirEntry, 0, len(t.Nodes))
	for i := range t.Nodes {
		n := &t.Nodes[i]
		typ := n.Type
		if typ == tree.Hardlink {
			typ = tree.File
		}
		list = append(list, fuse.DirEntry{Name: n.Name, Mode: typeBits(typ)})
	}
	return fs.NewListDirStream(list), 0
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, err := d.tree(ctx)
	if err != nil {
		return nil, errno(err)
	}
	n := t.Find(name)
	if n == nil {
		return nil, syscall.ENOENT
	}
	if n.Type == tree.Hardlink {
		// Another name of a file: its first name's content, with this
		// name's metadata (as a restore links them).
		first, err := d.m.op.Lookup(ctx, d.s, n.LinkTarget)
		if err != nil || first == nil || first.Type != tree.File {
			return nil, syscall.EIO
		}
		c := *first
		c.Name, c.Mode, c.UID, c.GID, c.MTime, c.CTime, c.Xattrs, c.Links = n.Name, n.Mode, n.UID, n.GID, n.MTime, n.CTime, n.Xattrs, n.Links
		n = &c
	}
	nodeAttr(n, &out.Attr)
	ttl(out, immutableTTL)
	if ch := d.GetChild(name); ch != nil {
		return ch, 0
	}
	var op fs.InodeEmbedder
	switch n.Type {
	case tree.Dir:
		op = &dirNode{m: d.m, s: d.s, node: n}
	case tree.File:
		op = &fileNode{leafNode: leafNode{m: d.m, node: n}}
	default:
		op = &leafNode{m: d.m, node: n}
	}
	return d.NewInode(ctx, op, fs.StableAttr{Mode: typeBits(n.Type)}), 0
}

func (d *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(d.node, attr, dest)
}

func (d *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(d.node, dest)
}

// leafNode is a symlink, fifo, socket or device of a snapshot.
type leafNode struct {
	fs.Inode
	m    *mountFS
	node *tree.Node
}

func (l *leafNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	nodeAttr(l.node, &out.Attr)
	out.SetTimeout(immutableTTL)
	return 0
}

func (l *leafNode) Readlink(context.Context) ([]byte, syscall.Errno) {
	if l.node.Type != tree.Symlink {
		return nil, syscall.EINVAL
	}
	return []byte(l.node.LinkTarget), 0
}

func (l *leafNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(l.node, attr, dest)
}

func (l *leafNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(l.node, dest)
}

// getxattr answers as the kernel expects: the size when dest is empty,
// ERANGE when it is too small.
func getxattr(n *tree.Node, attr string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range n.Xattrs {
		if x.Name == attr {
			if len(dest) == 0 {
				return uint32(len(x.Value)), 0
			}
			if len(dest) < len(x.Value) {
				return uint32(len(x.Value)), syscall.ERANGE
			}
			return uint32(copy(dest, x.Value)), 0
		}
	}
	return 0, syscall.ENODATA
}

func listxattr(n *tree.Node, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for _, x := range n.Xattrs {
		b = append(append(b, x.Name...), 0)
	}
	if len(dest) == 0 {
		return uint32(len(b)), 0
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// fileNode is a regular file of a snapshot.
type fileNode struct {
	leafNode
}

func (f *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	if err := f.m.op.Check(ctx); err != nil {
		return nil, 0, errno(err)
	}
	file, err := f.m.op.OpenNode(f.node)
	if err != nil {
		return nil, 0, errno(err)
	}
	// The content never changes: the kernel may keep its pages.
	return &fileHandle{f: file}, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*fileHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	return h.Read(ctx, dest, off)
}

// fileHandle is an open file of the mount.
type fileHandle struct {
	f *engine.File
}

func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.f.ReadAtContext(ctx, dest, off)
	if err != nil && err != io.EOF {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}
