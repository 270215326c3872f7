package main

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/cobra"

	"coffer/engine"
	"coffer/engine/remote"
)

// session is what the data commands (backup, snapshots, ls, dump,
// restore, forget, prune, find, diff, stats, tag, rewrite, mount) run on: a tenant opened in this process
// (localSession), or a remote.Client (remoteSession) over TLS (--remote)
// or over the data socket of the coffer process that holds the repository
// (holder.go). Each command picks its session once (g.session) and writes
// its output once, whatever the session.
type session interface {
	// Tenant is the tenant's name ("" while a --remote session has not
	// learnt it; Prune tells it).
	Tenant() string
	Snapshots(ctx context.Context) ([]*engine.Snapshot, error)
	// List, Dump and Restore take a snapshot reference (ID, unique prefix
	// of 4+ hex digits, or latest).
	List(ctx context.Context, ref, dir string, fn func(engine.Entry) error) error
	Dump(ctx context.Context, ref, path string, w io.Writer) error
	Restore(ctx context.Context, ref, target string, o engine.RestoreOptions) (*engine.RestoreStats, error)
	Backup(ctx context.Context, paths []string, o engine.BackupOptions) (*engine.Snapshot, error)
	BackupStream(ctx context.Context, r io.Reader, name string, o engine.BackupOptions) (*engine.Snapshot, error)
	Forget(ctx context.Context, ids []string, o engine.ForgetOptions) (*engine.ForgetReport, error)
	Prune(ctx context.Context, o engine.PruneOptions) (*engine.PruneReport, error)
	Tag(ctx context.Context, refs []string, o engine.TagOptions) (*engine.TagReport, error)
	Rewrite(ctx context.Context, refs []string, o engine.RewriteOptions) (*engine.RewriteReport, error)
	// OpenSnapshot resolves ref and returns the snapshot and a reader of
	// its trees and blobs (remotely, the server audits each one opened).
	OpenSnapshot(ctx context.Context, ref string) (*engine.Snapshot, engine.SnapshotReader, error)
	// Opener gives random access to the tenant's files (coffer mount).
	Opener(ctx context.Context, o engine.OpenerOptions) (*engine.Opener, error)
	// Server is the --remote address ("" for a repository on this host),
	// and Sent the bytes sent to it so far.
	Server() string
	Sent() int64
	Close() error
}

// session opens the --tenant tenant's session for a data command: on the
// --remote server, on the process that holds the repository, or here.
// rebuild allows an index rebuild first when the index is missing or
// behind the drives (the reading commands; see openTenantRebuilding).
func (g *globals) session(cmd *cobra.Command, rebuild bool) (session, error) {
	if g.remote != "" {
		cl, err := g.dialRemote(cmd.Context())
		if err != nil {
			return nil, err
		}
		return &remoteSession{cl: cl, server: g.remote}, nil
	}
	open := g.openTenant
	if rebuild {
		open = g.openTenantRebuilding
	}
	e, t, err := open(cmd)
	var held *heldSession
	if errors.As(err, &held) {
		return held.s, nil
	}
	if err != nil {
		return nil, err
	}
	return &localSession{e: e, t: t}, nil
}

// localSession is a tenant of a repository this process opened.
type localSession struct {
	e *engine.Engine
	t *engine.Tenant
}

func (s *localSession) Tenant() string { return s.t.Name() }
func (s *localSession) Server() string { return "" }
func (s *localSession) Sent() int64    { return 0 }
func (s *localSession) Close() error   { return s.e.Close() }

func (s *localSession) Snapshots(ctx context.Context) ([]*engine.Snapshot, error) {
	return s.t.Snapshots(ctx)
}

func (s *localSession) List(ctx context.Context, ref, dir string, fn func(engine.Entry) error) error {
	snap, err := s.t.FindSnapshot(ctx, ref)
	if err != nil {
		return err
	}
	return s.t.List(ctx, snap, dir, fn)
}

func (s *localSession) Dump(ctx context.Context, ref, path string, w io.Writer) error {
	snap, err := s.t.FindSnapshot(ctx, ref)
	if err != nil {
		return err
	}
	return s.t.Dump(ctx, snap, path, w)
}

func (s *localSession) Restore(ctx context.Context, ref, target string, o engine.RestoreOptions) (*engine.RestoreStats, error) {
	snap, err := s.t.FindSnapshot(ctx, ref)
	if err != nil {
		return nil, err
	}
	return s.t.Restore(ctx, snap, target, o)
}

func (s *localSession) Backup(ctx context.Context, paths []string, o engine.BackupOptions) (*engine.Snapshot, error) {
	return s.t.Backup(ctx, paths, o)
}

func (s *localSession) BackupStream(ctx context.Context, r io.Reader, name string, o engine.BackupOptions) (*engine.Snapshot, error) {
	return s.t.BackupStream(ctx, r, name, o)
}

func (s *localSession) Forget(ctx context.Context, ids []string, o engine.ForgetOptions) (*engine.ForgetReport, error) {
	return s.t.Forget(ctx, ids, o)
}

func (s *localSession) Prune(ctx context.Context, o engine.PruneOptions) (*engine.PruneReport, error) {
	return s.t.Prune(ctx, o)
}

func (s *localSession) Tag(ctx context.Context, refs []string, o engine.TagOptions) (*engine.TagReport, error) {
	return s.t.Tag(ctx, refs, o)
}

func (s *localSession) Rewrite(ctx context.Context, refs []string, o engine.RewriteOptions) (*engine.RewriteReport, error) {
	return s.t.Rewrite(ctx, refs, o)
}

func (s *localSession) OpenSnapshot(ctx context.Context, ref string) (*engine.Snapshot, engine.SnapshotReader, error) {
	snap, err := s.t.FindSnapshot(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	return snap, s.t.Reader(), nil
}

func (s *localSession) Opener(ctx context.Context, o engine.OpenerOptions) (*engine.Opener, error) {
	return s.t.Opener(ctx, o)
}

// remoteSession is a remote.Client: on a --remote server (TLS, the key's
// tenant), or on the data socket of the process that holds the repository
// (held set; the --tenant tenant). An error from a holder that ended in
// the middle of a command becomes held.ended's sentence.
type remoteSession struct {
	cl     *remote.Client
	tenant string
	server string  // --remote address
	held   *heldBy // the holder, for a session over its data socket
}

func (s *remoteSession) Tenant() string { return s.tenant }
func (s *remoteSession) Server() string { return s.server }
func (s *remoteSession) Close() error   { return s.cl.Close() }

func (s *remoteSession) Sent() int64 {
	sent, _ := s.cl.Traffic()
	return sent
}

// fail explains err of the command what.
func (s *remoteSession) fail(what string, err error) error {
	if s.held == nil {
		return err
	}
	return s.held.ended(what, err)
}

func (s *remoteSession) Snapshots(ctx context.Context) ([]*engine.Snapshot, error) {
	ss, err := s.cl.Snapshots(ctx)
	return ss, s.fail("snapshots", err)
}

func (s *remoteSession) List(ctx context.Context, ref, dir string, fn func(engine.Entry) error) error {
	return s.fail("ls", s.cl.List(ctx, ref, dir, fn))
}

func (s *remoteSession) Dump(ctx context.Context, ref, path string, w io.Writer) error {
	return s.fail("dump", s.cl.Dump(ctx, ref, path, w))
}

func (s *remoteSession) Restore(ctx context.Context, ref, target string, o engine.RestoreOptions) (*engine.RestoreStats, error) {
	st, err := s.cl.Restore(ctx, ref, target, o)
	return st, s.fail("restore", err)
}

func (s *remoteSession) Backup(ctx context.Context, paths []string, o engine.BackupOptions) (*engine.Snapshot, error) {
	snap, err := s.cl.Backup(ctx, paths, o)
	return snap, s.fail("backup", err)
}

func (s *remoteSession) BackupStream(ctx context.Context, r io.Reader, name string, o engine.BackupOptions) (*engine.Snapshot, error) {
	snap, err := s.cl.BackupStream(ctx, r, name, o)
	return snap, s.fail("backup", err)
}

func (s *remoteSession) Forget(ctx context.Context, ids []string, o engine.ForgetOptions) (*engine.ForgetReport, error) {
	rep, err := s.cl.Forget(ctx, ids, o)
	return rep, s.fail("forget", err)
}

func (s *remoteSession) Prune(ctx context.Context, o engine.PruneOptions) (*engine.PruneReport, error) {
	rep, name, err := s.cl.Prune(ctx, o)
	if name != "" {
		s.tenant = name
	}
	return rep, s.fail("prune", err)
}

func (s *remoteSession) Tag(ctx context.Context, refs []string, o engine.TagOptions) (*engine.TagReport, error) {
	rep, err := s.cl.Tag(ctx, refs, o)
	return rep, s.fail("tag", err)
}

func (s *remoteSession) Rewrite(ctx context.Context, refs []string, o engine.RewriteOptions) (*engine.RewriteReport, error) {
	rep, err := s.cl.Rewrite(ctx, refs, o)
	return rep, s.fail("rewrite", err)
}

func (s *remoteSession) OpenSnapshot(ctx context.Context, ref string) (*engine.Snapshot, engine.SnapshotReader, error) {
	snap, r, err := s.cl.OpenSnapshot(ctx, ref)
	return snap, r, s.fail("reading a snapshot", err)
}

func (s *remoteSession) Opener(ctx context.Context, o engine.OpenerOptions) (*engine.Opener, error) {
	op, err := s.cl.Opener(ctx, o)
	return op, s.fail("mount", err)
}
