package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
	"coffer/engine/remote"
)

// The admin socket. While a coffer process holds a repository (the index
// allows one process; coffer serve, or any command: holder.go), an
// operator's command on the same --repo cannot open it. Instead g.open
// finds REPO/admin.sock, and the command line is run inside the holder's
// process, on its open engine, with its output streamed back. The data
// commands use REPO/data.sock instead (holder.go, session.go).
// docs/design.md (chapter 15, "The admin socket") describes it.
//
// Access: the socket file has mode 0600 in the repository folder; the
// server accepts only peers of its own user (or root), checked with
// SO_PEERCRED; and the operator proves to hold the master key by answering
// a random nonce with an HMAC under a key derived from it
// (engine.AdminProofs), so the key never crosses the socket.
//
// Frames, both ways: one type byte, a 4-byte big-endian length, the
// payload. Server → client: 'N' nonce (once, first), 'O' stdout bytes,
// 'E' stderr bytes, 'X' exit code (4 bytes, last), or 'K' (empty, instead
// of everything after the nonce) when the proof of the master key fails. Client → server: 'R'
// the request (JSON adminRequest, once). The client closing its end
// interrupts the command.

const (
	adminSocketName = "admin.sock"
	maxAdminFrame   = 1 << 20
	adminNonceSize  = 32
)

type adminRequest struct {
	Args   []string          `json:"args"`
	Env    map[string]string `json:"env"` // the client's COFFER_* variables
	Cwd    string            `json:"cwd"` // for relative paths in Args
	Proofs [][]byte          `json:"proofs"`
}

func writeAdminFrame(w io.Writer, typ byte, p []byte) error {
	var h [5]byte
	h[0] = typ
	binary.BigEndian.PutUint32(h[1:], uint32(len(p)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// readAdminFrame reads one frame of at most max bytes of payload.
func readAdminFrame(r io.Reader, max int) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if uint64(n) > uint64(max) {
		return 0, nil, fmt.Errorf("admin socket frame of %d bytes (at most %d)", n, max)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, fmt.Errorf("admin socket frame: %w", io.ErrUnexpectedEOF)
	}
	return h[0], p, nil
}

// socketCommand reports whether the command runs through the admin socket.
// The data commands (dataCommand) go through the data socket instead; init,
// serve and index rebuild need the repository to themselves.
func socketCommand(cmd *cobra.Command) (bool, string) {
	switch strings.TrimPrefix(cmd.CommandPath(), "coffer ") {
	case "backup", "restore":
		// Only an older client sends these here; this version's use the
		// data socket.
		return false, "back up and restore with the coffer version it runs"
	case "serve":
		return false, "it is served already"
	case "init", "index rebuild":
		return false, "wait until it is done"
	}
	return true, ""
}

// forwardedError carries the exit code of a command that ran through the
// admin socket; its output has been printed already.
type forwardedError struct{ code int }

func (f forwardedError) Error() string { return fmt.Sprintf("exit %d", f.code) }

// forward runs the command through the admin socket of the coffer process
// that holds the repository in dir. ok is false when nothing answers there
// (no socket, or a stale one): the command then opens the repository
// itself. errNoHolder says the socket closed before it answered (its
// holder is stopping).
func (g *globals) forward(cmd *cobra.Command, dir string) (ok bool, err error) {
	// A proof made from the key file just before a master-key rotation on
	// the server finished names an epoch the server has dropped: the
	// server refuses it before running anything ('K'), and one more try
	// reads the rewritten key file.
	for try := 0; ; try++ {
		c, pid, ok := dialHolder(cmd.Context(), dir, adminSocketName)
		if !ok {
			return false, nil
		}
		if yes, why := socketCommand(cmd); !yes {
			c.Close()
			return true, fmt.Errorf("%w: coffer process %d holds %s; %s", engine.ErrRepoLocked, pid, dir, why)
		}
		err = g.forwardOn(cmd, &heldBy{dir: dir, pid: pid}, c)
		c.Close()
		if errors.Is(err, errKeyRefused) && try == 0 {
			continue
		}
		return true, err
	}
}

// errKeyRefused: the server did not accept the proof of the master key.
var errKeyRefused = fmt.Errorf("%w: the master key file does not hold the key of the repository another coffer process holds; give the right one with --master-key-file", engine.ErrWrongKey)

// forwardOn runs the command through the admin socket connection c to the
// holder h.
func (g *globals) forwardOn(cmd *cobra.Command, h *heldBy, c net.Conn) error {
	ctx := cmd.Context()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	typ, nonce, err := readAdminFrame(c, adminNonceSize)
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return errNoHolder
	}
	if err != nil || typ != 'N' {
		return fmt.Errorf("%w: coffer process %d holds %s and its admin socket did not answer (%v)", engine.ErrRepoLocked, h.pid, h.dir, err)
	}
	c.SetReadDeadline(time.Time{})
	proofs, err := engine.AdminProofs(h.dir, g.keyFile, nonce)
	if err != nil {
		return err
	}
	req := adminRequest{Args: g.args, Env: map[string]string{}, Cwd: g.cwd, Proofs: proofs}
	if req.Cwd == "" {
		req.Cwd, _ = os.Getwd()
	}
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "COFFER_") {
			req.Env[k] = v
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := writeAdminFrame(c, 'R', body); err != nil {
		return h.ended(cmd.Name(), fmt.Errorf("send the command to the admin socket: %w", err))
	}
	for {
		typ, p, err := readAdminFrame(c, maxAdminFrame)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return h.ended(cmd.Name(), fmt.Errorf("%w (%v)", remote.ErrClosed, err))
		}
		switch typ {
		case 'O':
			if _, err := g.stdout.Write(p); err != nil {
				return err
			}
		case 'E':
			if _, err := g.stderr.Write(p); err != nil {
				return err
			}
		case 'K':
			return errKeyRefused
		case 'X':
			if len(p) != 4 {
				return errors.New("the admin socket sent a malformed exit code")
			}
			return forwardedError{int(binary.BigEndian.Uint32(p))}
		default:
			return fmt.Errorf("the admin socket sent an unknown frame %q", typ)
		}
	}
}

// adminServer runs the commands that come through the admin socket on the
// holder's engine.
type adminServer struct {
	e   *engine.Engine
	log func(event string, kv ...any)
	wg  sync.WaitGroup
}

// startAdmin serves REPO/admin.sock on ln until ln is closed or ctx ends;
// stop closes ln and waits for the commands in flight (which ctx
// interrupts).
func startAdmin(ctx context.Context, e *engine.Engine, ln net.Listener, log func(string, ...any)) (stop func()) {
	a := &adminServer{e: e, log: log}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				a.handle(ctx, c)
			}()
		}
	}()
	ctxStop := context.AfterFunc(ctx, func() { ln.Close() })
	return func() {
		ctxStop()
		ln.Close() // removes the socket file
		a.wg.Wait()
	}
}

// frameWriter sends what a command writes as frames of one type; the
// command's stdout and stderr share the connection, hence mu.
type adminWriter struct {
	mu  *sync.Mutex
	c   net.Conn
	typ byte
}

func (w adminWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for rest := p; len(rest) > 0; {
		n := min(len(rest), 64<<10)
		if err := writeAdminFrame(w.c, w.typ, rest[:n]); err != nil {
			return len(p) - len(rest), err
		}
		rest = rest[n:]
	}
	return len(p), nil
}

func (a *adminServer) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	var uid uint32
	sc, ok := c.(syscall.Conn)
	var err error
	if ok {
		_, uid, err = remote.PeerCred(sc)
	}
	if !ok || err != nil || (uid != uint32(os.Getuid()) && uid != 0) {
		a.log("admin.refused", "uid", uid, "reason", "user")
		return
	}
	nonce := make([]byte, adminNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return
	}
	if writeAdminFrame(c, 'N', nonce) != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	typ, body, err := readAdminFrame(c, maxAdminFrame)
	var req adminRequest
	if err != nil || typ != 'R' || json.Unmarshal(body, &req) != nil || len(req.Proofs) > 4 || !filepath.IsAbs(req.Cwd) {
		a.log("admin.refused", "uid", uid, "reason", "protocol")
		return
	}
	c.SetReadDeadline(time.Time{})
	var mu sync.Mutex
	g := &globals{
		stdin:  strings.NewReader(""),
		stdout: adminWriter{&mu, c, 'O'},
		stderr: adminWriter{&mu, c, 'E'},
		getenv: func(k string) string { return req.Env[k] },
		cwd:    req.Cwd,
		lent:   a.e,
	}
	proven := false
	for _, p := range req.Proofs {
		proven = proven || a.e.CheckAdminProof(nonce, p)
	}
	if !proven {
		a.log("admin.refused", "uid", uid, "reason", "key")
		writeAdminFrame(c, 'K', nil) // nothing ran: the client may read its key file again
		return
	}
	// The client closing its end interrupts the command.
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		io.Copy(io.Discard, c)
		cancel()
	}()
	code := a.run(cctx, g, req.Args)
	cancel()
	a.log("admin.command", "uid", uid, "command", g.commandPath, "exit", code)
	var x [4]byte
	binary.BigEndian.PutUint32(x[:], uint32(code))
	mu.Lock()
	writeAdminFrame(c, 'X', x[:])
	mu.Unlock()
}

// run executes one command line for the socket. A bug in a command must
// not stop the server: a panic becomes exit 1 for the caller, and its stack
// goes to the server's log.
func (a *adminServer) run(ctx context.Context, g *globals, args []string) (code int) {
	defer func() {
		if v := recover(); v != nil {
			a.log("admin.panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			fmt.Fprintln(g.stderr, "coffer: internal error in the coffer process that holds the repository (see its log, if it is coffer serve); nothing else was affected.")
			code = exitError
		}
	}()
	return execute(ctx, g, args)
}
