package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/spf13/cobra"

	"coffer/engine"
)

// coffer mount: the tenant's snapshots as a read-only file system
// (mountfs.go), through the one snapshot reader, local or --remote.

func newMountCmd(g *globals) *cobra.Command {
	var cacheSize string
	var allowOther bool
	c := &cobra.Command{
		Use:   "mount MOUNTPOINT",
		Short: "Mount the tenant's snapshots read-only (FUSE) until SIGINT or SIGTERM",
		Long: `Mount the tenant's snapshots as a read-only file system at MOUNTPOINT, in the
foreground, until SIGINT or SIGTERM, which unmount it. The layout is restic's:

  ids/<first 8 hex digits of the ID>/     each snapshot by ID
  snapshots/<time>/, snapshots/latest     by time (local zone)
  hosts/<host>/<time>/, .../latest        by host
  tags/<tag>/<time>/, .../latest          by tag

Under a snapshot's folder lie the backed-up paths as coffer restore lays
them out, with sizes, modes, owners, times, symlinks and xattrs as stored.
A snapshot made while mounted appears within a second. Files are read
blob by blob through a cache shared by every open file (--cache-size),
reading ahead for sequential readers. Once the tenant is locked, reads
fail (checked every few seconds). With --remote, a restore key reads
through the server. A mount killed with SIGKILL leaves its mount point
behind: fusermount3 -u MOUNTPOINT removes it.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			size, err := parseSize(cacheSize)
			if err != nil {
				return err
			}
			return runMount(cmd, g, g.path(a[0]), size, allowOther)
		},
	}
	c.Flags().StringVar(&cacheSize, "cache-size", "64MiB", "bytes of file content kept in memory for all open files")
	c.Flags().BoolVar(&allowOther, "allow-other", false, "let other users than the one mounting read the mount (needs user_allow_other in /etc/fuse.conf for non-root)")
	return c
}

// mountSource is where a mount reads: an opener and the snapshot list.
type mountSource struct {
	op        *engine.Opener
	snapshots func(context.Context) ([]*engine.Snapshot, error)
	close     func()
}

// openMountSource opens the command's session (local, the holder's data
// socket, or --remote) and its opener: the one place where a mount's
// reader is picked.
func openMountSource(cmd *cobra.Command, g *globals, o engine.OpenerOptions) (*mountSource, error) {
	s, err := g.session(cmd, false)
	if err != nil {
		return nil, err
	}
	op, err := s.Opener(cmd.Context(), o)
	if err != nil {
		s.Close()
		return nil, err
	}
	return &mountSource{op: op, snapshots: s.Snapshots, close: func() { op.Close(); s.Close() }}, nil
}

// mountOverhead is the memory a mount needs besides its blob cache (trees,
// FUSE buffers, the index's caches), for its soft memory limit.
const mountOverhead = 192 << 20

func runMount(cmd *cobra.Command, g *globals, mnt string, cacheSize int64, allowOther bool) error {
	if st, err := os.Stat(mnt); err != nil || !st.IsDir() {
		return usagef("mount point %s is not a folder", mnt)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("cannot mount: /dev/fuse is missing (install fuse3 and load the fuse module)")
	}
	src, err := openMountSource(cmd, g, engine.OpenerOptions{CacheSize: cacheSize})
	if err != nil {
		return err
	}
	defer src.close()
	// The cache is the mount's memory: evicted blobs are garbage, and a
	// soft limit makes the collector return them before the heap doubles.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(src.op.Cache().Size() + mountOverhead)
	}
	ctx := cmd.Context()
	m := &mountFS{op: src.op, snapshots: src.snapshots, start: time.Now()}
	if _, _, err := m.refresh(ctx); err != nil {
		return err
	}
	root := &topDir{m: m}
	sec := time.Second
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:       "coffer",
			Name:         "coffer",
			AllowOther:   allowOther,
			Options:      []string{"ro", "default_permissions"},
			MaxWrite:     1 << 20,
			MaxReadAhead: 1 << 20,
		},
		EntryTimeout:    &sec,
		AttrTimeout:     &sec,
		NegativeTimeout: &sec,
	}
	srv, err := fs.Mount(mnt, root, opts)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	unmounted := make(chan struct{})
	go func() {
		srv.Wait()
		close(unmounted)
	}()
	fmt.Fprintf(g.stdout, "mounted tenant's snapshots at %s; SIGINT or SIGTERM unmounts\n", mnt)
	select {
	case <-unmounted: // fusermount3 -u from outside
		return nil
	case <-ctx.Done():
	}
	if err := unmount(srv, mnt, unmounted); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "unmounted %s\n", mnt)
	return nil
}

// unmount ends the mount: a clean unmount, retried while the mount is busy
// for up to 5 s, then a lazy one (the kernel detaches it when its last user
// leaves).
func unmount(srv *fuse.Server, mnt string, done <-chan struct{}) error {
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = srv.Unmount(); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		if out, lerr := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput(); lerr != nil {
			return fmt.Errorf("unmount %s: %v; lazy unmount: %v %s (run fusermount3 -u %s)", mnt, err, lerr, out, mnt)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return errors.New("unmounted, but the file system did not stop within 10 s")
	}
	return nil
}
