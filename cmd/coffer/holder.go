package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"coffer/engine"
	"coffer/engine/remote"
)

// One client, so commands don't queue (docs/design.md chapter 15, "One
// client"). The index lets one process hold a repository. Whichever coffer
// process holds it serves the other coffer processes of the host while it
// runs, on two Unix sockets in the repository folder: REPO/admin.sock runs
// operator commands inside it (admin.go), and REPO/data.sock serves the
// data commands (backup, restore, snapshots, ls, dump, forget, prune) with
// the remote protocol, the client walking, chunking and restoring itself
// as a remote client does. The holder lives until its own command and the
// ones it serves are done: it closes its sockets only when no connection
// is open, then closes the repository. A command that finds the repository
// held and no socket answering (the holder is between closing its sockets
// and the repository, or has not opened them yet) tries again, with
// backoff, for holderWait (or --retry-lock, if longer) before exit 11.

const (
	dataSocketName = "data.sock"
	// holderWait bounds the retries of a command that finds the repository
	// held but no socket answering.
	holderWait = 3 * time.Second
)

// holder is what this process serves while it holds the repository.
type holder struct {
	e      *engine.Engine // retained: closed by finish
	tr     *connTracker
	cancel context.CancelFunc
	wg     sync.WaitGroup // the socket servers
	stop   []func()
}

// holds reports whether the process that runs cmd serves others while it
// holds the repository: not init and index rebuild, which need the
// repository to themselves, nor serve, which serves them itself.
func holds(cmd *cobra.Command) bool {
	switch strings.TrimPrefix(cmd.CommandPath(), "coffer ") {
	case "init", "index rebuild", "serve":
		return false
	}
	return true
}

// listenUnix listens on the Unix socket path with mode 0600. The caller
// holds the repository lock, so a socket file there is left over from a
// process that died.
func listenUnix(path string) (*net.UnixListener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the stale socket %s: %w", path, err)
	}
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return ln, nil
}

// startHolder makes this process serve the repository e that it holds to
// the other coffer processes of the host, on REPO/admin.sock and
// REPO/data.sock. srv serves the data socket (coffer serve passes its TLS
// server, so both share one set of limits; nil makes one without TLS).
// The holder keeps a reference to e until finish.
func (g *globals) startHolder(ctx context.Context, e *engine.Engine, srv *remote.Server, log func(string, ...any)) (*holder, error) {
	if srv == nil {
		var err error
		if srv, err = remote.NewServer(e, nil, remote.Config{Log: log}); err != nil {
			return nil, err
		}
	}
	adminLn, err := listenUnix(filepath.Join(e.Dir(), adminSocketName))
	if err != nil {
		return nil, err
	}
	dataLn, err := listenUnix(filepath.Join(e.Dir(), dataSocketName))
	if err != nil {
		adminLn.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	h := &holder{e: e.Retain(), tr: newConnTracker(ctx), cancel: cancel}
	h.stop = append(h.stop, startAdmin(ctx, e, h.tr.listener(adminLn), log))
	data := h.tr.listener(dataLn)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		srv.ServeLocal(ctx, data)
	}()
	return h, nil
}

// finish waits until no other process is served (or ctx ends), closes the
// sockets, waits for the servers, and drops the holder's reference to the
// repository.
func (h *holder) finish(ctx context.Context) {
	h.tr.closeWhenIdle(ctx)
	if ctx.Err() != nil {
		h.cancel() // interrupted: so are the commands it serves
	}
	h.wg.Wait()
	for _, stop := range h.stop {
		stop()
	}
	h.cancel()
	h.e.Close()
}

// releaseHolder ends this process's holder, if any (before it opens the
// repository again, and when its command is done).
func (g *globals) releaseHolder(ctx context.Context) {
	if g.holder != nil {
		g.holder.finish(ctx)
		g.holder = nil
	}
}

// serveHeld starts serving the repository e, which this process just
// opened, when the command allows it. A socket that cannot be made (a
// read-only folder, a path too long for a socket) leaves the command
// alone: others then find the repository busy, as before.
func (g *globals) serveHeld(cmd *cobra.Command, e *engine.Engine) {
	if !holds(cmd) {
		return
	}
	h, err := g.startHolder(context.WithoutCancel(cmd.Context()), e, nil, func(string, ...any) {})
	if err == nil {
		g.holder = h
	}
}

// connTracker counts the open connections of a holder's listeners, so the
// holder closes them only when idle.
type connTracker struct {
	mu     sync.Mutex
	idle   *sync.Cond
	active int
	closed bool
	lns    []net.Listener
}

func newConnTracker(ctx context.Context) *connTracker {
	tr := &connTracker{}
	tr.idle = sync.NewCond(&tr.mu)
	context.AfterFunc(ctx, func() {
		tr.mu.Lock()
		tr.idle.Broadcast()
		tr.mu.Unlock()
	})
	return tr
}

// listener wraps ln so that its connections are counted.
func (tr *connTracker) listener(ln *net.UnixListener) net.Listener {
	tr.mu.Lock()
	tr.lns = append(tr.lns, ln)
	tr.mu.Unlock()
	return trackedListener{ln, tr}
}

// closeWhenIdle closes the listeners once no counted connection is open,
// or at once when ctx ends. A connection accepted after that is closed
// unanswered; its client tries again and finds the repository free.
func (tr *connTracker) closeWhenIdle(ctx context.Context) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for tr.active > 0 && ctx.Err() == nil {
		tr.idle.Wait()
	}
	tr.closed = true
	for _, ln := range tr.lns {
		ln.Close() // removes the socket file
	}
}

type trackedListener struct {
	*net.UnixListener
	tr *connTracker
}

func (l trackedListener) Accept() (net.Conn, error) {
	c, err := l.UnixListener.AcceptUnix()
	if err != nil {
		return nil, err
	}
	l.tr.mu.Lock()
	defer l.tr.mu.Unlock()
	if l.tr.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.tr.active++
	return &trackedConn{UnixConn: c, tr: l.tr}, nil
}

// trackedConn is a counted connection; it keeps *net.UnixConn's methods
// (SyscallConn for SO_PEERCRED).
type trackedConn struct {
	*net.UnixConn
	tr   *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(func() {
		c.tr.mu.Lock()
		c.tr.active--
		c.tr.idle.Broadcast()
		c.tr.mu.Unlock()
	})
	return err
}

// untilFree runs try until it reports done, or until the repository has
// been found held for holderWait (or --retry-lock, if longer): try returns
// engine.ErrRepoLocked when the repository is held and no socket answered.
func (g *globals) untilFree(ctx context.Context, try func() error) error {
	deadline := time.Now().Add(max(holderWait, g.retryLock))
	delay := 20 * time.Millisecond
	for {
		err := try()
		if !errors.Is(err, engine.ErrRepoLocked) || !time.Now().Before(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// dialHolder connects to the socket name of the process that holds the
// repository in dir and returns the connection and the holder's process
// ID; ok is false when nothing answers there.
func dialHolder(ctx context.Context, dir, name string) (c *net.UnixConn, pid int32, ok bool) {
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "unix", filepath.Join(dir, name))
	if err != nil {
		return nil, 0, false
	}
	uc := nc.(*net.UnixConn)
	pid, _, err = remote.PeerCred(uc)
	if err != nil {
		uc.Close()
		return nil, 0, false
	}
	return uc, pid, true
}

// errNoHolder: the socket closed before it answered (its holder is
// stopping): try again.
var errNoHolder = fmt.Errorf("%w: its holder is stopping", engine.ErrRepoLocked)

// heldSession is what g.open returns, as an error, for a data command when
// another process holds the repository and serves it on REPO/data.sock: a
// session on that process (g.session takes it).
type heldSession struct{ s *remoteSession }

func (h *heldSession) Error() string { return "served by the process that holds the repository" }

// dialData opens a session on the data socket of the process that holds
// the repository in dir, for the --tenant tenant. ok is false when nothing
// answers there.
func (g *globals) dialData(ctx context.Context, dir string) (*remoteSession, bool, error) {
	uc, pid, ok := dialHolder(ctx, dir, dataSocketName)
	if !ok {
		return nil, false, nil
	}
	prove := func(nonce []byte) ([][]byte, error) { return engine.AdminProofs(dir, g.keyFile, nonce) }
	cl, err := remote.DialLocal(ctx, uc, g.tenant, prove)
	if errors.Is(err, remote.ErrClosed) {
		return nil, true, errNoHolder
	}
	if errors.Is(err, remote.ErrRefused) {
		return nil, true, fmt.Errorf("%w: the master key file does not hold the key of the repository that coffer process %d holds; give the right one with --master-key-file", engine.ErrWrongKey, pid)
	}
	if err != nil {
		return nil, true, err
	}
	return &remoteSession{cl: cl, tenant: g.tenant, held: &heldBy{dir: dir, pid: pid}}, true, nil
}

// heldBy names the process that serves a session on its repository.
type heldBy struct {
	dir string
	pid int32
}

// ended turns err, an error of a session served by another process, into
// the one sentence for a holder that ended in the middle of the command
// (it was killed): nothing the command did was confirmed, and the exit
// code is 11, as for a busy repository, so it is safe to run again.
func (h *heldBy) ended(what string, err error) error {
	if err == nil || !connLost(err) {
		return err
	}
	advice, ok := endedAdvice[what]
	if !ok {
		advice = "run it again"
	}
	return holderEnded(fmt.Sprintf("the coffer process that held %s (pid %d) ended before the %s finished; %s", h.dir, h.pid, what, advice))
}

// holderEnded is the sentence of heldBy.ended; it exits 11
// (engine.ErrRepoLocked) without that class's own words.
type holderEnded string

func (h holderEnded) Error() string        { return string(h) }
func (h holderEnded) Is(target error) bool { return target == engine.ErrRepoLocked }

// endedAdvice says what to do after a holder ended mid-way (other commands
// than these: run the command again).
var endedAdvice = map[string]string{
	"backup":  "the backup was not confirmed (coffer snapshots shows whether it was committed); run it again",
	"restore": "the restore is incomplete; run it again",
	"forget":  "run coffer forget again (coffer snapshots shows what is left)",
	"prune":   "run coffer prune again",
}

// connLost reports whether err says the connection to the server broke
// (rather than the server answering with an error).
func connLost(err error) bool {
	return errors.Is(err, remote.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF)
}
