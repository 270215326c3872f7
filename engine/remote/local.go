package remote

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"coffer/engine"
)

// Local sessions (docs/design.md chapter 15, "One client"). The process
// that holds a repository serves the other coffer processes of its host
// over a Unix socket in the repository folder, with the same requests and
// handlers as a TLS session. Instead of a registered client key the peer
// shows it runs as the server's user (or root), by SO_PEERCRED, and that
// it holds the master key: the server sends a random nonce ("challenge"),
// the client answers with a "hello" request carrying the HMAC proofs of
// engine.AdminProofs and the tenant it works on. A proven operator has the
// admin role on any tenant. Only then does the usual hello follow; the
// rest of the session is the TLS protocol's.

const (
	opHello       = "hello"     // local only: tenant, proofs → the session's hello
	kindChallenge = "challenge" // local only: the nonce the hello's proofs answer
	codeNoTenant  = "no_tenant" // local only: no tenant of that name
	codeLocked    = "locked"    // local only: the tenant is locked
	nonceSize     = 32
	maxProofs     = 4
)

// errKeyProof is the one answer to a hello whose proofs do not match.
var errKeyProof = response{Kind: kindError, Code: codeRefused, Message: "the master key file does not hold the key of this repository"}

// PeerCred returns the process ID and user ID of the process at the other
// end of the Unix socket connection c (a *net.UnixConn, or a wrapper that
// keeps its SyscallConn).
func PeerCred(c syscall.Conn) (pid int32, uid uint32, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, err
	}
	if cerr != nil {
		return 0, 0, cerr
	}
	return cred.Pid, cred.Uid, nil
}

// ServeLocal serves local sessions on ln (a Unix socket listener) until
// ln is closed or ctx ends, then lets requests in flight finish (up to
// Config.ShutdownTimeout), closes its sessions and returns nil. A peer of
// another user than this process's (root excepted) is closed at once.
func (s *Server) ServeLocal(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		uc, ok := c.(syscall.Conn)
		var uid uint32
		if ok {
			_, uid, err = PeerCred(uc)
		}
		if !ok || err != nil || (uid != uint32(os.Getuid()) && uid != 0) {
			s.cfg.Log("conn.refused", "remote", "local", "uid", uid, "reason", "user")
			c.Close()
			continue
		}
		sc := &serverConn{s: s, c: c, raw: c}
		s.mu.Lock()
		s.conns[sc] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc.guard(func() { sc.admitLocal(ctx) })
			s.mu.Lock()
			delete(s.conns, sc)
			s.mu.Unlock()
		}()
	}
	s.drain(&wg, func(sc *serverConn) bool { return sc.tc == nil })
	return nil
}

// admitLocal challenges a local peer for the master key and opens the
// tenant it names, then serves its requests.
func (sc *serverConn) admitLocal(ctx context.Context) {
	log := sc.s.cfg.Log
	bw := bufio.NewWriterSize(sc.c, 64<<10)
	w := &deadlineWriter{c: sc.c, w: bw, d: sc.s.cfg.WriteTimeout}
	fail := func(r response, reason string) {
		log("conn.refused", "remote", "local", "reason", reason)
		if writeFrame(w, r, nil) == nil {
			bw.Flush()
		}
	}
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return
	}
	sc.c.SetDeadline(time.Now().Add(sc.s.cfg.HandshakeTimeout))
	if writeFrame(w, response{Kind: kindChallenge, Nonce: nonce}, nil) != nil || bw.Flush() != nil {
		return
	}
	var req request
	body, err := readFrame(sc.c, &req)
	if err != nil || req.Op != opHello || len(body) > 0 || len(req.Proofs) > maxProofs || req.Tenant == "" {
		fail(response{Kind: kindError, Code: codeProtocol, Message: "a local session starts with a hello that answers the challenge"}, "protocol")
		return
	}
	if req.Version != ProtocolVersion {
		fail(response{Kind: kindError, Code: codeProtocol, Message: fmt.Sprintf("the coffer process that holds the repository speaks protocol version %d and this one %d; run the same coffer version", ProtocolVersion, req.Version)}, "version")
		return
	}
	proven := false
	for _, p := range req.Proofs {
		proven = sc.s.e.CheckAdminProof(nonce, p) || proven
	}
	if !proven {
		fail(errKeyProof, "key")
		return
	}
	t, err := sc.s.e.OpenTenant(ctx, req.Tenant)
	if err != nil {
		code, msg := localErrorCode(err)
		fail(response{Kind: kindError, Code: code, Message: bounded(msg, maxMessage)}, code)
		return
	}
	if why := sc.s.admit(sc, t.ID(), ""); why != "" {
		fail(response{Kind: kindError, Code: codeBusy, Message: "the coffer process that holds the repository has too many sessions; try again later"}, why)
		return
	}
	// The tenant is opened once: locking or shredding it goes through
	// this process (it holds the repository), whose OnRevoke cuts the
	// session at once.
	roles := []string{engine.RoleAdmin}
	sc.auth = func(context.Context) (*engine.Tenant, []string, error) { return t, roles, nil }
	sc.session(w, roles, "local", "")
}

// localErrorCode is errorCode for a local session, whose operator holds
// the master key and may be told that a tenant does not exist or is
// locked.
func localErrorCode(err error) (string, string) {
	switch {
	case errors.Is(err, engine.ErrTenantNotFound):
		return codeNoTenant, err.Error()
	case errors.Is(err, engine.ErrTenantLocked):
		return codeLocked, err.Error()
	}
	return errorCode(err)
}

// DialLocal starts a local session on c, a connection to the Unix socket
// of the process that holds a repository, for the tenant named tenant.
// prove answers the server's nonce with proofs of the master key
// (engine.AdminProofs). A wrong key is ErrRefused; a connection closed
// before the challenge (the holder is stopping) is ErrClosed. DialLocal
// takes c over: it is closed on failure and by Client.Close.
func DialLocal(ctx context.Context, c net.Conn, tenant string, prove func(nonce []byte) ([][]byte, error)) (*Client, error) {
	cnt := &countingConn{Conn: c}
	cl := &Client{c: cnt, bw: bufio.NewWriterSize(cnt, 64<<10), br: bufio.NewReaderSize(cnt, 64<<10), cnt: cnt}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var ch response
	if _, err := cl.next(&ch); err != nil || ch.Kind != kindChallenge || len(ch.Nonce) != nonceSize {
		c.Close()
		if err == nil {
			err = fmt.Errorf("%w: unexpected greeting on the local socket", ErrProtocol)
		}
		return nil, err
	}
	proofs, err := prove(ch.Nonce)
	if err != nil {
		c.Close()
		return nil, err
	}
	// A failed send shows as the answer that does not come.
	if writeFrame(cl.bw, request{Op: opHello, Tenant: tenant, Proofs: proofs, Version: ProtocolVersion}, nil) == nil {
		cl.bw.Flush()
	}
	var hello response
	if _, err := cl.next(&hello); err != nil {
		c.Close()
		return nil, err
	}
	if hello.Kind != kindHello || hello.Version != ProtocolVersion {
		c.Close()
		return nil, fmt.Errorf("%w: unexpected answer to the local hello", ErrProtocol)
	}
	c.SetDeadline(time.Time{})
	cl.roles = hello.Roles
	return cl, nil
}
