package walk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"coffer/chunk"
	"coffer/engine/fsmeta"
	"coffer/engine/tree"
)

// Sink stores what the walker finds. Its user owns what storing means: the
// local backup seals into packs, the remote client queues blobs for the
// server. A Sink's methods may be called from several goroutines at once
// (LoadTree from the walker goroutine, ReadFile from the file workers,
// PutTree from the finisher).
type Sink interface {
	// LoadTree returns the parent snapshot's tree with the given ID, or nil
	// on any error: a damaged or missing parent tree only costs re-reading
	// the files below it.
	LoadTree(ctx context.Context, id tree.ID) *tree.Tree

	// NewReader returns the state of one file worker. Each file worker
	// calls it once, when the walk starts, and uses what it returns from
	// its own goroutine only.
	NewReader() FileReader

	// PutTree stores an encoded tree blob and returns its ID. It is called
	// from one goroutine, in post-order: every file a tree names has been
	// read (its ReadFile returned) and every folder's tree stored before.
	// The implementation must not retain enc after the call.
	PutTree(ctx context.Context, enc []byte) (tree.ID, error)
}

// FileReader reads the content of files for one file worker.
type FileReader interface {
	// ReadFile reads r to its end, stores the file's content and sets
	// n.Content and n.Size (the walker has filled every other field from
	// the file's stat). An error of r must be returned, wrapped or not: the
	// walker tells a source that cannot be read (a warning; the file is
	// left out of the snapshot) from a failing sink (the walk fails)
	// itself. The implementation must not retain r or n after the call.
	ReadFile(ctx context.Context, r io.Reader, n *tree.Node) error
}

// Knower is an optional ability of a Sink. A Sink that has it is asked
// whether the content of a file that is unchanged since the parent
// snapshot is still stored (the local backup looks it up in the index);
// for one that has not, the parent's content is reused as it is (a server
// checks every reference when it commits the snapshot). Known is called
// from the walker goroutine.
type Knower interface {
	Known(ids []tree.ID) bool
}

// Progress counters of a running backup or restore, updated atomically. A
// reader (the CLI's progress line) may load them at any time.
type Progress struct {
	TotalFiles atomic.Int64 // found by the scan so far
	TotalBytes atomic.Int64
	ScanDone   atomic.Bool  // totals are final
	Files      atomic.Int64 // processed
	Bytes      atomic.Int64
	Errors     atomic.Int64
}

// Options configure a walk. Zero fields take defaults.
type Options struct {
	// Excludes are exclude patterns (checked by Sources; see Match), and
	// IExcludes the same matched without regard to case.
	Excludes  []string
	IExcludes []string
	// ExcludeIfPresent leaves out every folder that holds an entry of one
	// of these names (for example .nobackup or CACHEDIR.TAG).
	ExcludeIfPresent []string
	// ExcludeLargerThan, when above 0, leaves out regular files larger
	// than this many bytes.
	ExcludeLargerThan int64
	// Parent is the root tree of the parent snapshot, or nil. A file whose
	// size, mtime, ctime and inode equal those of the same path in the
	// parent, with an mtime older than ParentStart, keeps the parent's
	// content without being read (and, with a Knower, only if that content
	// is still stored).
	Parent *tree.Tree
	// ParentStart is when the parent's backup started, in Unix nanoseconds.
	ParentStart int64
	// Progress is updated while the walk runs; may be nil. When set, Walk
	// also counts the files and bytes to come ahead of the walk.
	Progress *Progress
	// Workers is the number of file workers; 0 is one per core.
	Workers int
	// Skipped are source paths left out before the walk (from Sources),
	// each "path: reason": they are the walk's first warnings.
	Skipped []string
}

// Stats count what a walk recorded.
type Stats struct {
	Files     int64 // regular files, hard links included
	Dirs      int64 // folders below the root, those on the way to the backed-up paths included (what a restore creates)
	Bytes     int64 // bytes of the regular files' content
	Unchanged int64 // files whose content was taken from the parent
}

// Result is what a walk recorded.
type Result struct {
	Tree  tree.ID // the root folder's tree: the snapshot's tree
	Stats Stats
	// Warnings name the entries left out because they could not be read,
	// one "path: reason" each, in no fixed order.
	Warnings []string
}

// Walk walks paths (as returned by Sources) and stores their files and
// trees in sink. The backed-up paths keep their absolute location: the
// root tree is that of "/", and the folders on the way to the paths are
// recorded with their own metadata (a folder on the way reached through a
// symlink, such as /var/run → /run, as the folder it leads to).
//
// Entries that cannot be read are left out and named in Result.Warnings;
// the walk goes on. The walk fails, with the first error, when ctx ends, a
// folder on the way cannot be read, or the sink fails.
func Walk(ctx context.Context, paths []string, sink Sink, o Options) (*Result, error) {
	return run(ctx, sink, o, paths, func(w *walker) *future { return w.walkRoot(paths) })
}

// Stream stores r as a file called name in the snapshot's root, with mode
// 0644, the process's owner, and now as its times. A read error of r is a
// warning, as for a file of a walk.
func Stream(ctx context.Context, r io.Reader, name string, now time.Time, sink Sink, o Options) (*Result, error) {
	if err := CheckStreamName(name); err != nil {
		return nil, err
	}
	return run(ctx, sink, o, nil, func(w *walker) *future {
		ns := now.UnixNano()
		n := tree.Node{Name: name, Type: tree.File, Mode: 0o644, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), MTime: ns, CTime: ns}
		f := &future{done: make(chan struct{}), node: n}
		if !w.queueFile(fileJob{path: name, r: r, f: f}) {
			return readyFuture(tree.Node{})
		}
		root := tree.Node{Type: tree.Dir, Mode: 0o755, MTime: ns, CTime: ns}
		return w.sendDir(root, []*future{f})
	})
}

// future is a tree node whose content is still being computed.
type future struct {
	done chan struct{}
	node tree.Node
	skip bool // the entry could not be read and is left out
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func readyFuture(n tree.Node) *future { return &future{done: closedChan, node: n} }

// fileJob is a regular file for a file worker: the file at path, or r.
type fileJob struct {
	path string
	r    io.Reader // nil: open path
	f    *future
}

type dirTask struct {
	f        *future
	children []*future
}

type devIno struct{ dev, ino uint64 }

// walker is the state of one walk. Pipeline (docs/design.md, "Backup
// pipeline"): the walker goroutine lists folders in name order, stats
// entries and hands regular files to the file workers, which read them
// into the sink; the finisher encodes each folder's tree once its entries
// are done (post-order) and stores it in the sink. The queues are bounded,
// so the walker runs at most len(fileCh) files and len(dirCh) folders
// ahead of the workers.
type walker struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	sink   Sink
	knower Knower // nil: the sink does not say
	o      Options
	prog   *Progress

	fileCh chan fileJob
	dirCh  chan dirTask

	hardlinks map[devIno]string // walker goroutine only

	warnMu   sync.Mutex
	warnings []string // guarded by warnMu

	files, dirs, bytes, unchanged atomic.Int64
}

// run starts the file workers and the finisher, runs walk on the calling
// goroutine (the walker goroutine), waits for the workers and returns the
// root's tree. scanPaths are counted ahead for the progress totals.
func run(ctx context.Context, sink Sink, o Options, scanPaths []string, walk func(*walker) *future) (*Result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	var scanWG sync.WaitGroup
	defer func() { cancel(nil); scanWG.Wait() }()
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	w := &walker{
		ctx: ctx, cancel: cancel, sink: sink, o: o, prog: o.Progress,
		fileCh:    make(chan fileJob, 4*workers),
		dirCh:     make(chan dirTask, 256),
		hardlinks: map[devIno]string{},
	}
	w.knower, _ = sink.(Knower)
	if w.prog == nil {
		w.prog = &Progress{}
	} else if scanPaths != nil {
		scanWG.Add(1)
		go func() { defer scanWG.Done(); w.scan(scanPaths) }()
	}
	w.warnings = append(w.warnings, o.Skipped...)
	w.prog.Errors.Add(int64(len(o.Skipped)))

	// File workers: reading, chunking and hashing are CPU-bound, so one
	// per core. (On a cold page cache they wait for the disk too; the
	// walker's prefetch covers that better than more workers, which hold
	// more chunk buffers: docs/benchmarks.md, profile 6, L.)
	var fileWG, dirWG sync.WaitGroup
	for i := 0; i < workers; i++ {
		rd := sink.NewReader()
		fileWG.Add(1)
		go func() { defer fileWG.Done(); w.fileWorker(rd) }()
	}
	dirWG.Add(1)
	go func() { defer dirWG.Done(); w.finisher() }()

	root := walk(w)
	close(w.dirCh)
	dirWG.Wait()
	close(w.fileCh)
	fileWG.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	select {
	case <-root.done:
	default:
		return nil, errors.New("walk: ended before the root tree was stored")
	}
	w.warnMu.Lock()
	defer w.warnMu.Unlock()
	return &Result{
		Tree: root.node.Subtree,
		Stats: Stats{
			Files: w.files.Load(), Dirs: max(w.dirs.Load()-1, 0), Bytes: w.bytes.Load(), Unchanged: w.unchanged.Load(),
		},
		Warnings: w.warnings,
	}, nil
}

// fail ends the walk with err (the first failure wins).
func (w *walker) fail(err error) { w.cancel(err) }

// warn records an entry left out of the snapshot.
func (w *walker) warn(path string, err error) {
	if u := errors.Unwrap(err); u != nil {
		err = u // the path is said once
	}
	w.warnMu.Lock()
	w.warnings = append(w.warnings, fmt.Sprintf("%s: %v", path, err))
	w.warnMu.Unlock()
	w.prog.Errors.Add(1)
}

// sendDir queues a folder for the finisher and returns its future.
func (w *walker) sendDir(n tree.Node, children []*future) *future {
	f := &future{done: make(chan struct{}), node: n}
	w.dirs.Add(1)
	select {
	case w.dirCh <- dirTask{f: f, children: children}:
	case <-w.ctx.Done():
	}
	return f
}

// queueFile hands a file to the file workers; false when the walk ends.
func (w *walker) queueFile(job fileJob) bool {
	select {
	case w.fileCh <- job:
		return true
	case <-w.ctx.Done():
		return false
	}
}

// walkRoot builds the root folder.
func (w *walker) walkRoot(paths []string) *future {
	root := roots(paths)
	if root.target { // backing up "/" itself
		n, _, err := fsmeta.Stat("/")
		if err != nil {
			w.fail(fmt.Errorf("stat /: %w", err))
			return readyFuture(tree.Node{})
		}
		return w.walkDir("/", "", n, w.o.Parent)
	}
	return w.walkVirtual(root, "/", "", w.o.Parent)
}

// walkVirtual handles a folder on the way to the backed-up paths; own is
// the parent snapshot's tree of this folder, or nil.
func (w *walker) walkVirtual(v *vdir, abs, rel string, own *tree.Tree) *future {
	n, _, err := fsmeta.Stat(abs)
	if err != nil {
		w.fail(fmt.Errorf("stat %s: %w", abs, err))
		return readyFuture(tree.Node{})
	}
	if n.Type != tree.Dir {
		// A folder on the way reached through a symlink (/var/run → /run):
		// the snapshot records it as the folder it leads to.
		fi, err := os.Stat(abs)
		if err != nil || !fi.IsDir() {
			w.fail(invalidf("%s is not a folder", abs))
			return readyFuture(tree.Node{})
		}
		n = tree.Node{Type: tree.Dir, Mode: uint32(fi.Mode().Perm()), UID: n.UID, GID: n.GID, User: n.User, Group: n.Group, MTime: fi.ModTime().UnixNano(), CTime: n.CTime}
	}
	n.Name = filepath.Base(abs)
	var children []*future
	for _, name := range v.names() {
		cabs, crel := filepath.Join(abs, name), tree.JoinRel(rel, name)
		if c := v.children[name]; c.target {
			children = append(children, w.walkPath(cabs, crel, own))
		} else {
			children = append(children, w.walkVirtual(c, cabs, crel, w.subtree(own, name)))
		}
	}
	return w.sendDir(n, children)
}

// subtree loads the parent snapshot's tree of the folder name in parent,
// or nil when there is none.
func (w *walker) subtree(parent *tree.Tree, name string) *tree.Tree {
	if parent == nil {
		return nil
	}
	n := parent.Find(name)
	if n == nil || n.Type != tree.Dir {
		return nil
	}
	return w.sink.LoadTree(w.ctx, n.Subtree)
}

// walkPath handles one real file-system entry; parent is the parent
// snapshot's tree of its folder, or nil.
func (w *walker) walkPath(abs, rel string, parent *tree.Tree) *future {
	if w.ctx.Err() != nil {
		return readyFuture(tree.Node{})
	}
	n, info, err := fsmeta.Stat(abs)
	if err != nil {
		w.warn(abs, err)
		return &future{done: closedChan, skip: true}
	}
	n.Name = filepath.Base(abs)
	var prev *tree.Node
	if parent != nil {
		prev = parent.Find(n.Name)
	}
	switch n.Type {
	case tree.Dir:
		if w.hasMarker(abs) {
			return &future{done: closedChan, skip: true}
		}
		return w.walkDir(abs, rel, n, w.subtree(parent, n.Name))
	case tree.File:
		if w.tooLarge(int64(n.Size)) {
			return &future{done: closedChan, skip: true}
		}
		if n.Links > 1 {
			key := devIno{info.Dev, n.Inode}
			if first, ok := w.hardlinks[key]; ok {
				n.MakeHardlink(first)
				w.files.Add(1)
				w.prog.Files.Add(1)
				return readyFuture(n)
			}
			w.hardlinks[key] = rel
		}
		if w.reusable(&n, prev) {
			n.Content = prev.Content
			w.files.Add(1)
			w.unchanged.Add(1)
			w.bytes.Add(int64(n.Size))
			w.prog.Files.Add(1)
			w.prog.Bytes.Add(int64(n.Size))
			return readyFuture(n)
		}
		f := &future{done: make(chan struct{}), node: n}
		prefetch(abs, n.Size)
		if !w.queueFile(fileJob{path: abs, f: f}) {
			return readyFuture(tree.Node{})
		}
		return f
	default:
		return readyFuture(n)
	}
}

// reusable reports whether a file may keep prev's content unread.
func (w *walker) reusable(n, prev *tree.Node) bool {
	if !unchanged(n, prev, w.o.ParentStart) {
		return false
	}
	return w.knower == nil || w.knower.Known(prev.Content)
}

// walkDir handles a real folder; parentTree is the parent snapshot's tree
// of the same folder, or nil.
func (w *walker) walkDir(abs, rel string, n tree.Node, parentTree *tree.Tree) *future {
	entries, err := readDirNames(abs)
	if err != nil {
		w.warn(abs, err) // recorded with the entries that could be listed
	}
	var children []*future
	for _, name := range entries {
		p := filepath.Join(abs, name)
		if w.excluded(p) {
			continue
		}
		children = append(children, w.walkPath(p, tree.JoinRel(rel, name), parentTree))
	}
	return w.sendDir(n, children)
}

// readDirNames returns the names in a folder, sorted bytewise.
func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// prefetch asks the kernel to start reading (the first chunk.MaxSize bytes
// of) a file queued for the file workers, so that reads from a cold page
// cache overlap: the walker runs up to len(fileCh) files ahead of the
// workers, and each read then finds its data on the way or there. Errors
// are left for the file worker to meet.
func prefetch(path string, size uint64) {
	if size == 0 {
		return
	}
	// O_NONBLOCK: should the file have become a FIFO since its stat, the
	// open must not wait for a writer. (No O_NOATIME needed: readahead does
	// not touch the access time, reads do.)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	_ = unix.Fadvise(fd, 0, int64(min(size, chunk.MaxSize)), unix.FADV_WILLNEED)
	unix.Close(fd)
}

func (w *walker) fileWorker(rd FileReader) {
	src := &source{prog: w.prog}
	for job := range w.fileCh {
		if w.ctx.Err() == nil {
			w.readFile(rd, src, job)
		}
		close(job.f.done)
	}
}

// readFile reads one queued file into the sink, with rd, through src.
func (w *walker) readFile(rd FileReader, src *source, job fileJob) {
	r := job.r
	if r == nil {
		fd, err := os.OpenFile(job.path, os.O_RDONLY|unix.O_NOATIME, 0)
		if errors.Is(err, os.ErrPermission) {
			fd, err = os.Open(job.path) // O_NOATIME needs ownership
		}
		if err != nil {
			w.warn(job.path, err)
			job.f.skip = true
			return
		}
		defer fd.Close()
		r = fd
	}
	*src = source{r: r, prog: w.prog}
	n := &job.f.node
	err := rd.ReadFile(w.ctx, src, n)
	src.r = nil
	switch {
	case src.err != nil:
		w.warn(job.path, src.err)
		job.f.skip = true
	case err != nil:
		w.fail(err) // a no-op when the walk has already ended
	default:
		n.Holes = clipHoles(n.Holes, n.Size)
		w.files.Add(1)
		w.bytes.Add(int64(n.Size))
		w.prog.Files.Add(1)
	}
}

// source is the reader a FileReader gets: it keeps the source's first read
// error, so that the walker can tell it from the sink's, and counts the
// bytes read for the progress display.
type source struct {
	r    io.Reader
	err  error
	prog *Progress
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.prog.Bytes.Add(int64(n))
	}
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// finisher completes folders in post-order: it waits for every entry,
// encodes the tree and stores it in the sink.
func (w *walker) finisher() {
	for d := range w.dirCh {
		var bld tree.Builder
		for _, c := range d.children {
			select {
			case <-c.done:
			case <-w.ctx.Done():
			}
			if w.ctx.Err() != nil {
				break
			}
			if !c.skip && c.node.Name != "" {
				bld.Add(c.node)
			}
		}
		if w.ctx.Err() != nil {
			continue
		}
		id, err := w.putTree(&bld)
		if err != nil {
			w.fail(fmt.Errorf("store tree of %q: %w", d.f.node.Name, err))
			continue
		}
		d.f.node.Subtree = id
		close(d.f.done)
	}
}

func (w *walker) putTree(bld *tree.Builder) (tree.ID, error) {
	t, err := bld.Tree()
	if err != nil {
		return tree.ID{}, err
	}
	enc, err := t.Encode()
	if err != nil {
		return tree.ID{}, err
	}
	return w.sink.PutTree(w.ctx, enc)
}

// scan counts files and bytes for the progress display's totals.
func (w *walker) scan(paths []string) {
	for _, p := range paths {
		_ = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if w.ctx.Err() != nil {
				return w.ctx.Err()
			}
			if err != nil {
				return nil
			}
			if path != p && w.excluded(path) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() && path != p && w.hasMarker(path) {
				return filepath.SkipDir
			}
			if d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil && !w.tooLarge(fi.Size()) {
					w.prog.TotalFiles.Add(1)
					w.prog.TotalBytes.Add(fi.Size())
				}
			}
			return nil
		})
	}
	w.prog.ScanDone.Store(true)
}
