package remote

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"coffer/engine"
	"coffer/engine/policy"
)

// Config bounds a server. Zero fields take the defaults.
type Config struct {
	MaxConns       int // admitted sessions at once (default 64)
	MaxTenantConns int // admitted sessions of one tenant at once (default 16)
	// MaxHandshakes bounds the connections not yet admitted (in the TLS
	// handshake or being refused), apart from MaxConns. When it is full, a
	// newcomer takes the place of the oldest connection that has sent
	// nothing for 100 ms, else of the oldest of a source over its share,
	// else it is closed (default 64; see gate).
	MaxHandshakes int
	// MaxHandshakesPerAddr is the share of one source address (an IPv6
	// /64) in a full handshake gate (default 8).
	MaxHandshakesPerAddr int
	// RefusalDelay is the time from the end of the handshake at which a
	// refused key gets its answer, whatever the reason (unknown key,
	// removed key, locked or shredded tenant), so the answer's timing does
	// not tell them apart (default 100ms).
	RefusalDelay time.Duration
	// MaxBackups bounds the backup sessions open at once, and so the
	// server's memory for them (each holds pack buffers: about two pack
	// sizes). Others wait for a place up to BackupWait, then get busy
	// (default 8).
	MaxBackups int
	// BackupWait is the longest a backup waits for a place and for its
	// tenant's lock (held by another backup, forget or prune of the
	// tenant) (default: IdleTimeout).
	BackupWait       time.Duration
	IdleTimeout      time.Duration // longest wait for the next request (default 5m)
	HandshakeTimeout time.Duration // longest time from accept to admission (default 5s)
	WriteTimeout     time.Duration // longest wait for the client to take one frame (default 1m)
	ShutdownTimeout  time.Duration // how long Serve waits for requests in flight after ctx ends (default 30s)
	// Log, if set, receives events: a short event name and key/value pairs
	// that never carry tenant content or names (fingerprints, remote
	// addresses, operations and outcomes only). It may be called from many
	// goroutines at once.
	Log func(event string, kv ...any)
}

func (c *Config) fill() {
	if c.MaxConns <= 0 {
		c.MaxConns = 64
	}
	if c.MaxTenantConns <= 0 {
		c.MaxTenantConns = 16
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 64
	}
	if c.MaxHandshakesPerAddr <= 0 {
		c.MaxHandshakesPerAddr = 8
	}
	if c.RefusalDelay <= 0 {
		c.RefusalDelay = 100 * time.Millisecond
	}
	if c.MaxBackups <= 0 {
		c.MaxBackups = 8
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.BackupWait <= 0 {
		c.BackupWait = c.IdleTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = time.Minute
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
}

// Server serves one open repository to remote clients.
type Server struct {
	e    *engine.Engine
	cfg  Config
	cert tls.Certificate // none (and fp empty) for a server of local sessions only
	fp   string

	mu    sync.Mutex // guards conns and the sessions' tenant and fp
	conns map[*serverConn]struct{}

	backups chan struct{} // a place per open backup session (MaxBackups)
}

// NewServer makes a server for e with the server key key. e must stay open
// until Serve and ServeLocal return. The server registers with e.OnRevoke,
// so removing a client key, or locking or shredding a tenant, through e
// cuts the sessions concerned at once. With a nil key the server has no
// TLS side: it serves only local sessions (ServeLocal).
func NewServer(e *engine.Engine, key ed25519.PrivateKey, cfg Config) (*Server, error) {
	cfg.fill()
	s := &Server{e: e, cfg: cfg, conns: map[*serverConn]struct{}{}, backups: make(chan struct{}, cfg.MaxBackups)}
	if key != nil {
		cert, err := selfSigned(key)
		if err != nil {
			return nil, fmt.Errorf("make server certificate: %w", err)
		}
		s.cert, s.fp = cert, engine.KeyFingerprint(key.Public().(ed25519.PublicKey))
	}
	e.OnRevoke(s.revoke)
	return s, nil
}

// revoke cuts the sessions whose access r withdraws.
func (s *Server) revoke(r engine.Revocation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sc := range s.conns {
		if sc.tenant == r.Tenant && (r.Fingerprint == "" || sc.fp == r.Fingerprint) {
			sc.cut()
			s.cfg.Log("conn.cut", "remote", sc.c.RemoteAddr().String(), "fingerprint", sc.fp)
		}
	}
}

// admit records the tenant and key of a session whose key was accepted,
// or returns why not: the server has MaxConns admitted sessions
// ("server-limit") or the tenant MaxTenantConns ("tenant-limit").
func (s *Server) admit(sc *serverConn, tenant, fp string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	all, n := 0, 0
	for o := range s.conns {
		if o.tenant != "" {
			all++
			if o.tenant == tenant {
				n++
			}
		}
	}
	if all >= s.cfg.MaxConns {
		return "server-limit"
	}
	if n >= s.cfg.MaxTenantConns {
		return "tenant-limit"
	}
	sc.tenant, sc.fp = tenant, fp
	return ""
}

// Fingerprint is the server key's fingerprint, which clients pin.
func (s *Server) Fingerprint() string { return s.fp }

func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cert},
		// Clients present a certificate for their key (self-signed; no CA).
		// The handshake takes any ed25519 key and checks only that the
		// client holds it (its CertificateVerify signature). Which keys are
		// registered is decided after the handshake (serverConn.serve): Go's
		// TLS 1.3 server runs VerifyConnection before it checks that
		// signature, so a check here would answer a forged signature over a
		// registered key differently from one over an unknown key, and
		// anyone holding a public key could learn whether it is a customer's.
		ClientAuth: tls.RequireAnyClientCert,
		// A client offers its protocol version as ALPN; one of version 1
		// offers none (and is told so after admission, serve).
		NextProtos: []string{alpnProto},
		// No resumption: every connection shows its key again, so a removed
		// key cannot come back on an old ticket.
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if _, ok := peerKey(cs); !ok {
				return engine.ErrClientRefused // not an ed25519 key: the same for everyone
			}
			return nil
		},
	}
}

// Serve accepts connections on ln until ctx ends, then stops accepting,
// lets requests in flight finish (up to Config.ShutdownTimeout), closes
// every connection and returns nil. It closes ln.
//
// A connection passes two budgets: until its key is admitted it is in the
// handshake gate (MaxHandshakes, MaxHandshakesPerAddr, HandshakeTimeout;
// see gate), then it is a session (MaxConns, MaxTenantConns). Idle or slow
// connections that never finish a handshake therefore cannot take the
// places of customers' sessions.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.fp == "" {
		ln.Close()
		return errors.New("remote: this server has no key; it serves local sessions only")
	}
	cfg := s.tlsConfig()
	g := newGate(s.cfg.MaxHandshakes, s.cfg.MaxHandshakesPerAddr)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		ln.Close()
	}()
	var acceptErr error
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				acceptErr = fmt.Errorf("accept: %w", err)
			}
			break
		}
		remote := c.RemoteAddr().String()
		p, evicted, why := g.enter(c)
		if p == nil {
			s.cfg.Log("conn.busy", "remote", remote, "reason", "handshakes")
			continue
		}
		if evicted != "" {
			s.cfg.Log("conn.evicted", "source", evicted, "reason", why)
		}
		tc := tls.Server(p.conn, cfg)
		sc := &serverConn{s: s, c: tc, tc: tc, raw: p.conn, gate: g, pend: p}
		s.mu.Lock()
		s.conns[sc] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc.serveTLS()
			g.leave(p)
			s.mu.Lock()
			delete(s.conns, sc)
			s.mu.Unlock()
		}()
	}
	close(stop)
	s.drain(&wg, func(sc *serverConn) bool { return sc.tc != nil })
	return acceptErr
}

// drain ends the connections that mine selects (those of one listener) and
// waits for wg: idle connections are woken and close; busy ones finish
// their request first, for up to Config.ShutdownTimeout.
func (s *Server) drain(wg *sync.WaitGroup, mine func(*serverConn) bool) {
	s.mu.Lock()
	for sc := range s.conns {
		if mine(sc) {
			sc.shutdown()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.ShutdownTimeout):
		s.mu.Lock()
		for sc := range s.conns {
			if mine(sc) {
				sc.c.Close()
			}
		}
		s.mu.Unlock()
		<-done
	}
}

type serverConn struct {
	s    *Server
	c    net.Conn  // the session's stream: tc, or a Unix socket (ServeLocal)
	tc   *tls.Conn // nil for a local session
	raw  net.Conn  // the connection under c (closed to cut the session)
	gate *gate     // TLS only
	pend *pending  // its place in the gate until admitted or refused (TLS only)

	tenant, fp string // set by Server.admit once the key is accepted (fp: "" for a local session)
	// auth checks the session's right again before each request and gives
	// its tenant and roles: the client key (TLS) or the tenant named by an
	// operator who proved the master key (local).
	auth func(context.Context) (*engine.Tenant, []string, error)

	mu      sync.Mutex // guards closing, busy, w and the read deadline
	closing bool
	busy    bool            // a request is in flight
	w       *deadlineWriter // the session's writer once it is admitted

	ing *engine.Ingest // the open backup session, or nil; serve's goroutine only
}

// cut ends the session now, because its key was removed or its tenant
// locked (Server.revoke holds s.mu). An idle client is told, with the
// answer an unknown key gets, before the connection closes; a request in
// flight breaks off, and an open backup session is abandoned (the
// deferred Abort in serve).
func (sc *serverConn) cut() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closing {
		return
	}
	sc.closing = true
	if !sc.busy && sc.w != nil {
		if writeFrame(sc.w, refusedKey, nil) == nil {
			sc.c.SetWriteDeadline(time.Now().Add(time.Second))
			sc.w.w.Flush()
		}
	}
	sc.raw.Close()
}

// oldClient is the answer to a client of an older protocol version.
var oldClient = response{Kind: kindError, Code: codeProtocol,
	Message: fmt.Sprintf("this server speaks protocol version %d, which this client does not; install the server's coffer version on the client", ProtocolVersion)}

// refusedKey is the one answer to an unknown key, a removed key and a
// locked tenant.
var refusedKey = response{Kind: kindError, Code: codeRefused, Message: "the server refused this key"}

func (sc *serverConn) shutdown() {
	sc.mu.Lock()
	sc.closing = true
	if !sc.busy {
		sc.c.SetReadDeadline(time.Now())
	}
	sc.mu.Unlock()
}

// armRead sets the idle deadline for the next request, or reports that the
// server is shutting down.
func (sc *serverConn) armRead() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.busy = false
	if sc.closing {
		return false
	}
	sc.c.SetReadDeadline(time.Now().Add(sc.s.cfg.IdleTimeout))
	return true
}

// startRequest marks a request as in flight, so a shutdown lets it finish
// (its upload frames included), or reports that the server is shutting
// down and the request is dropped.
func (sc *serverConn) startRequest() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closing {
		return false
	}
	sc.busy = true
	sc.c.SetReadDeadline(time.Time{})
	return true
}

// armFrame sets the deadline for the next upload frame of a request in
// flight.
func (sc *serverConn) armFrame() {
	sc.mu.Lock()
	sc.c.SetReadDeadline(time.Now().Add(sc.s.cfg.IdleTimeout))
	sc.mu.Unlock()
}

// guard runs a session's deferred duties: deferred calls run last first,
// so on a panic the log entry, then the abandoned backup, then the close
// the client sees.
func (sc *serverConn) guard(session func()) {
	defer sc.c.Close()
	// A connection that ends without a commit records no snapshot.
	defer func() {
		if sc.ing != nil {
			sc.ing.Abort(context.Background(), errors.New("connection ended before commit"))
			sc.endIngest()
		}
	}()
	// A bug met by one session must not stop the server for every tenant:
	// the session ends (its backup is abandoned above) and the operator's
	// log gets the stack, which holds code locations, not tenant content.
	defer func() {
		if v := recover(); v != nil {
			sc.s.cfg.Log("conn.panic", "remote", sc.c.RemoteAddr().String(), "panic", bounded(fmt.Sprint(v), maxLogValue), "stack", string(debug.Stack()))
		}
	}()
	session()
}

// serveTLS admits a TLS client by its registered key, then serves its
// requests.
func (sc *serverConn) serveTLS() { sc.guard(sc.admitTLS) }

func (sc *serverConn) admitTLS() {
	log := sc.s.cfg.Log
	remote := sc.c.RemoteAddr().String()
	sc.c.SetDeadline(time.Now().Add(sc.s.cfg.HandshakeTimeout))
	if err := sc.tc.HandshakeContext(context.Background()); err != nil {
		log("conn.refused", "remote", remote, "reason", handshakeReason(err))
		return
	}
	// The client's signature is verified: from here on it holds the key.
	shaken := time.Now()
	pub, _ := peerKey(sc.tc.ConnectionState())
	fp := engine.KeyFingerprint(pub)
	bw := bufio.NewWriterSize(sc.c, 64<<10)
	w := &deadlineWriter{c: sc.c, w: bw, d: sc.s.cfg.WriteTimeout}
	// The hello tells the client it was admitted; clients send nothing
	// before it, so a refused key moves no data.
	t, roles, err := sc.s.e.AuthenticateClient(context.Background(), pub)
	if err != nil {
		reason := "key"
		if !errors.Is(err, engine.ErrClientRefused) {
			reason = "key-check-failed"
		}
		sc.refuse(shaken, w)
		log("conn.refused", "remote", remote, "fingerprint", fp, "reason", reason)
		return
	}
	if why := sc.s.admit(sc, t.ID(), fp); why != "" {
		sc.gate.leave(sc.pend)
		log("conn.refused", "remote", remote, "fingerprint", fp, "reason", why)
		msg := "the server is busy; try again later"
		if why == "tenant-limit" {
			msg = "this account has too many open sessions; try again later"
		}
		if writeFrame(w, response{Kind: kindError, Code: codeBusy, Message: msg}, nil) == nil {
			bw.Flush()
		}
		return
	}
	sc.gate.leave(sc.pend)
	if sc.tc.ConnectionState().NegotiatedProtocol != alpnProto {
		// A client of protocol version 1 checks the hello's version and
		// would only say "unexpected greeting": it shows an error frame's
		// message instead.
		log("conn.refused", "remote", remote, "fingerprint", fp, "reason", "version")
		if writeFrame(w, oldClient, nil) == nil {
			bw.Flush()
		}
		return
	}
	sc.auth = func(ctx context.Context) (*engine.Tenant, []string, error) {
		return sc.s.e.AuthenticateClient(ctx, pub)
	}
	sc.session(w, roles, remote, fp)
}

// session sends the hello of an admitted session and serves its requests
// until it ends.
func (sc *serverConn) session(w *deadlineWriter, roles []string, remote, fp string) {
	log := sc.s.cfg.Log
	bw := w.w
	sc.c.SetDeadline(time.Time{})
	// From the hello on, a cut tells an idle client why; the hello goes
	// out under sc.mu so that a cut's refusal follows it.
	sc.mu.Lock()
	sc.w = w
	err := writeFrame(w, response{Kind: kindHello, Version: ProtocolVersion, Roles: roles}, nil)
	if err == nil {
		err = bw.Flush()
	}
	sc.mu.Unlock()
	if err != nil {
		return
	}
	log("conn.open", "remote", remote, "fingerprint", fp)
	for {
		if !sc.armRead() {
			break
		}
		var req request
		body, err := readFrame(sc.c, &req)
		if err != nil || !sc.startRequest() {
			break
		}
		start := time.Now()
		outcome := sc.handle(w, &req, body)
		// Logged before the flush, so the entry exists by the time the
		// client holds the answer.
		log("request", "fingerprint", fp, "op", opLabel(req.Op), "outcome", outcome, "ms", time.Since(start).Milliseconds())
		if err := bw.Flush(); err != nil {
			break
		}
		if outcome == codeRefused || outcome == codeProtocol {
			break
		}
	}
	log("conn.close", "remote", remote, "fingerprint", fp)
}

// refuse answers a key that is not admitted, whatever the reason, with
// the one refusal frame, sent RefusalDelay after the handshake ended
// (shaken): the bytes and the time are the same for an unknown key, a
// removed key and a locked or shredded tenant. The connection stays in the
// handshake gate meanwhile (an eviction ends the wait).
func (sc *serverConn) refuse(shaken time.Time, w *deadlineWriter) {
	wait := time.NewTimer(time.Until(shaken.Add(sc.s.cfg.RefusalDelay)))
	defer wait.Stop()
	select {
	case <-wait.C:
	case <-sc.pend.evicted:
		return
	}
	if writeFrame(w, refusedKey, nil) == nil {
		w.w.Flush()
	}
}

// endIngest forgets the connection's ended backup session and frees its
// place.
func (sc *serverConn) endIngest() {
	sc.ing = nil
	<-sc.s.backups
}

func handshakeReason(err error) string {
	if errors.Is(err, engine.ErrClientRefused) {
		return "key"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "handshake"
}

// deadlineWriter gives every write to the connection a deadline, so a
// client that stops reading cannot hold a request open forever.
type deadlineWriter struct {
	c net.Conn
	w *bufio.Writer
	d time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.c.SetWriteDeadline(time.Now().Add(d.d))
	return d.w.Write(p)
}

// opLabel is req.Op as the log shows it: a known operation's name, or
// "unknown" (the client's string never reaches the log).
func opLabel(op string) string {
	if _, ok := roleFor[op]; ok {
		return op
	}
	return "unknown"
}

// maxMessage bounds the message of an error frame.
const maxMessage = 4 << 10

// maxLogValue bounds a value in a log line that may hold text from a
// client (a panic's message).
const maxLogValue = 512

// bounded cuts s to at most n bytes, marking the cut.
func bounded(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// roleFor lists the roles that may make each request.
var roleFor = map[string][]string{
	opSnapshots: {engine.RoleBackup, engine.RoleRestore, engine.RoleAdmin},
	opLs:        {engine.RoleBackup, engine.RoleRestore, engine.RoleAdmin},
	opDump:      {engine.RoleRestore, engine.RoleAdmin},
	opRestore:   {engine.RoleRestore, engine.RoleAdmin},
	opOpen:      {engine.RoleRestore, engine.RoleAdmin},
	opLocate:    {engine.RoleRestore, engine.RoleAdmin},
	opBlobs:     {engine.RoleRestore, engine.RoleAdmin},
	// Trees hold names, metadata and content IDs, never contents: a backup
	// key reads its parent snapshot's trees for an incremental backup.
	opTree:   {engine.RoleBackup, engine.RoleRestore, engine.RoleAdmin},
	opBegin:  {engine.RoleBackup, engine.RoleAdmin},
	opHave:   {engine.RoleBackup, engine.RoleAdmin},
	opPut:    {engine.RoleBackup, engine.RoleAdmin},
	opCommit: {engine.RoleBackup, engine.RoleAdmin},
	// Deleting is for admin keys only: a backup key is append-only.
	opForget: {engine.RoleAdmin},
	opPrune:  {engine.RoleAdmin},
	// Tags and rewrites change snapshots: admin keys only.
	opTag:     {engine.RoleAdmin},
	opRewrite: {engine.RoleAdmin},
}

// handle answers one request and returns its outcome ("ok" or an error
// code). The key is checked again first, so a removed key or a locked
// tenant is cut off at its next request.
func (sc *serverConn) handle(w *deadlineWriter, req *request, body []byte) string {
	ctx := context.Background()
	fail := func(code, msg string) string {
		// Messages may quote the client's own paths: bounded, so the
		// frame stays under MaxHeader.
		writeFrame(w, response{Kind: kindError, Code: code, Message: bounded(msg, maxMessage)}, nil)
		return code
	}
	t, roles, err := sc.auth(ctx)
	if err != nil {
		if errors.Is(err, engine.ErrClientRefused) {
			return fail(refusedKey.Code, refusedKey.Message)
		}
		return fail(codeInternal, "the server could not check this key")
	}
	allowed, known := roleFor[req.Op]
	if !known {
		return fail(codeInvalid, fmt.Sprintf("unknown operation %q", bounded(req.Op, 64)))
	}
	if !slices.ContainsFunc(roles, func(r string) bool { return slices.Contains(allowed, r) }) {
		return fail(codeRefused, fmt.Sprintf("this key's roles do not allow %s", req.Op))
	}
	end := func() string {
		if err := writeFrame(w, response{Kind: kindEnd}, nil); err != nil {
			return codeInternal
		}
		return "ok"
	}
	errOut := func(err error) string {
		code, msg := errorCode(err)
		if sc.tc == nil {
			code, msg = localErrorCode(err)
		}
		return fail(code, msg)
	}
	switch req.Op {
	case opSnapshots:
		ss, err := t.Snapshots(ctx)
		if err != nil {
			return errOut(err)
		}
		if ss == nil {
			ss = []*engine.Snapshot{}
		}
		// A large list may pass MaxHeader: send it in slices.
		for len(ss) > 0 {
			n := min(len(ss), 64)
			if err := writeFrame(w, response{Kind: kindSnapshots, Snapshots: ss[:n]}, nil); err != nil {
				return codeInternal
			}
			ss = ss[n:]
		}
		return end()
	case opLs:
		s, err := t.FindSnapshot(ctx, req.Snapshot)
		if err != nil {
			return errOut(err)
		}
		dir := req.Path
		if dir == "" {
			dir = "/"
		}
		started := false
		err = t.List(ctx, s, dir, func(en engine.Entry) error {
			started = true
			return writeFrame(w, response{Kind: kindEntry, Entry: &en}, nil)
		})
		if err != nil {
			if started && !errors.Is(err, engine.ErrTreeLimit) {
				return codeInternal // the stream is broken mid-way; the connection is dropped
			}
			// A walk stopped by the tree limits ends the entries with
			// its sentence.
			return errOut(err)
		}
		return end()
	case opDump:
		s, err := t.FindSnapshot(ctx, req.Snapshot)
		if err != nil {
			return errOut(err)
		}
		fw := &countingFrameWriter{fw: frameWriter{w: w}}
		if err := t.Dump(ctx, s, req.Path, fw); err != nil {
			if fw.n > 0 {
				return codeInternal
			}
			return errOut(err)
		}
		return end()
	case opRestore, opOpen, opLocate, opBlobs:
		return sc.handleRestore(ctx, w, t, req, body, fail, errOut, end)
	case opForget, opPrune, opTag, opRewrite:
		return sc.handleAdmin(ctx, w, t, req, body, fail, errOut, end)
	case opTree, opBegin, opHave, opPut, opCommit:
		return sc.handleIngest(ctx, w, t, req, body, fail, errOut, end)
	}
	return fail(codeInvalid, "unknown operation")
}

// handleIngest answers the requests of a remote backup (docs/design.md
// chapter 15, "Backup over the wire").
func (sc *serverConn) handleIngest(ctx context.Context, w *deadlineWriter, t *engine.Tenant, req *request, body []byte,
	fail func(code, msg string) string, errOut func(error) string, end func() string) string {
	if req.Op != opPut && req.Op != opHave && len(body) > 0 {
		return fail(codeProtocol, "unexpected request body")
	}
	if req.Op != opTree && req.Op != opBegin && sc.ing == nil {
		if req.Op == opPut {
			return fail(codeProtocol, "no backup session: send backup first")
		}
		return fail(codeInvalid, "no backup session: send backup first")
	}
	switch req.Op {
	case opTree:
		var id [32]byte
		if len(req.ID) != 64 {
			return fail(codeInvalid, "a tree ID is 64 hex digits")
		}
		if _, err := hex.Decode(id[:], []byte(req.ID)); err != nil {
			return fail(codeInvalid, "a tree ID is 64 hex digits")
		}
		data, err := t.TreeBlob(ctx, id)
		if err != nil {
			return errOut(err)
		}
		if _, err := (frameWriter{w: w}).Write(data); err != nil {
			return codeInternal
		}
		return end()
	case opBegin:
		if sc.ing != nil {
			return fail(codeInvalid, "a backup session is already open on this connection")
		}
		// The tenant's lock first (another backup, forget or prune of the
		// tenant may hold it), then a place among MaxBackups: a tenant's
		// extra sessions wait on their own lock and hold no place, so they
		// cannot keep other tenants' backups waiting.
		wctx, cancel := context.WithTimeout(ctx, sc.s.cfg.BackupWait)
		defer cancel()
		ing, err := t.BeginIngest(wctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fail(codeBusy, "another operation of this account is running")
			}
			return errOut(err)
		}
		select {
		case sc.s.backups <- struct{}{}:
		case <-wctx.Done():
			ing.Abort(ctx, errors.New("the server had no place for another backup"))
			return fail(codeBusy, "the server is busy; try again later")
		}
		sc.ing = ing
		p := t.IngestParams()
		if err := writeFrame(w, response{Kind: kindParams, Pol: uint64(p.Pol), IDKey: p.IDKey[:]}, nil); err != nil {
			return codeInternal
		}
		return end()
	case opHave:
		if len(body)%32 != 0 || len(body)/32 > maxHaveIDs {
			return fail(codeInvalid, "have takes a body of 32-byte IDs")
		}
		ids := make([][32]byte, len(body)/32)
		for i := range ids {
			copy(ids[i][:], body[i*32:])
		}
		have, err := sc.ing.Have(ctx, ids)
		if err != nil {
			return errOut(err)
		}
		bits := make([]byte, (len(have)+7)/8)
		for i, h := range have {
			if h {
				bits[i/8] |= 1 << (i % 8)
			}
		}
		if err := writeFrame(w, response{Kind: kindHave}, bits); err != nil {
			return codeInternal
		}
		return end()
	case opPut:
		if req.Frames < 1 || req.Frames > maxPutFrames {
			return fail(codeProtocol, fmt.Sprintf("a put has 1 to %d frames", maxPutFrames))
		}
		payload := make([]byte, 0, req.Frames*MaxBody)
		for i := 0; i < req.Frames; i++ {
			sc.armFrame()
			var h request
			b, err := readFrame(sc.c, &h)
			if err != nil {
				return codeProtocol // the stream is lost; the connection is dropped
			}
			if h.Op != kindData || !validClass(req.Frames, len(b)) {
				return fail(codeProtocol, "put frames must be padded data frames")
			}
			payload = append(payload, b...)
		}
		sc.c.SetReadDeadline(time.Time{})
		blobs, err := parsePutPayload(payload)
		if err != nil {
			return fail(codeProtocol, "malformed put payload")
		}
		if err := sc.ing.Put(ctx, blobs); err != nil {
			return errOut(err)
		}
		return end()
	case opCommit:
		ing := sc.ing
		sc.endIngest() // Commit ends the session whatever the outcome
		s, err := ing.Commit(ctx, req.Commit)
		if err != nil {
			return errOut(err)
		}
		if err := writeFrame(w, response{Kind: kindSnapshots, Snapshot: s}, nil); err != nil {
			return codeInternal
		}
		return end()
	}
	return fail(codeInvalid, "unknown operation")
}

// handleRestore answers the requests of a remote restore (docs/design.md
// chapter 15, "Restore over the wire"): the client runs the engine's
// restore pipeline (engine.RestoreFrom) and reads trees (opTree) and data
// blobs (locate, blobs) by ID. Every blob asked for is looked up in the
// key's tenant's index as a data blob; one that is not (another tenant's,
// a tree, or none) gets the one answer no_blob, and nothing is read.
func (sc *serverConn) handleRestore(ctx context.Context, w *deadlineWriter, t *engine.Tenant, req *request, body []byte,
	fail func(code, msg string) string, errOut func(error) string, end func() string) string {
	if req.Op == opRestore {
		if len(body) > 0 {
			return fail(codeProtocol, "unexpected request body")
		}
		s, err := t.FindSnapshot(ctx, req.Snapshot)
		if err != nil {
			return errOut(err)
		}
		if err := t.RemoteRestore(ctx, s); err != nil {
			return errOut(err)
		}
		// The content-ID key lets the client check every blob it gets; it
		// names blobs but opens none (the data and metadata keys stay here).
		p := t.IngestParams()
		if err := writeFrame(w, response{Kind: kindParams, Snapshot: s, IDKey: p.IDKey[:]}, nil); err != nil {
			return codeInternal
		}
		return end()
	}
	if req.Op == opOpen {
		if len(body) > 0 {
			return fail(codeProtocol, "unexpected request body")
		}
		if err := t.RemoteOpen(ctx); err != nil {
			return errOut(err)
		}
		p := t.IngestParams()
		if err := writeFrame(w, response{Kind: kindParams, IDKey: p.IDKey[:]}, nil); err != nil {
			return codeInternal
		}
		return end()
	}
	ids, ok := parseIDs(body, engine.MaxReadGroup)
	if !ok {
		return fail(codeInvalid, fmt.Sprintf("%s takes a body of 1 to %d 32-byte IDs", req.Op, engine.MaxReadGroup))
	}
	r := t.Reader()
	places, err := r.Locate(ctx, ids)
	if err != nil {
		if errors.Is(err, engine.ErrBlobNotFound) {
			return fail(codeNoBlob, "no such blob")
		}
		return errOut(err)
	}
	if req.Op == opLocate {
		if err := writeFrame(w, response{Kind: kindPlaces}, appendPlaces(nil, places)); err != nil {
			return codeInternal
		}
		return end()
	}
	var total int64
	for _, p := range places {
		total += int64(p.Size)
	}
	if total > engine.MaxReadGroupBytes {
		return fail(codeInvalid, fmt.Sprintf("blobs reads at most %d bytes at once", engine.MaxReadGroupBytes))
	}
	started := false
	err = r.ReadGroup(ctx, places, func(_ int, data []byte) error {
		started = true
		if _, err := (frameWriter{w: w}).Write(data); err != nil {
			return err
		}
		return writeFrame(w, response{Kind: kindEOF}, nil)
	})
	if err != nil {
		if started {
			// Mid-stream: an error frame ends it; the client's restore fails.
			errOut(err)
			return codeInternal
		}
		return errOut(err)
	}
	return end()
}

// handleAdmin answers forget and prune (admin keys only, checked by the
// caller) for the key's own tenant: the local commands' reports as JSON in
// "data" frames, then "end". When the command failed after doing part of
// its work, the partial report is followed by an "error" frame.
func (sc *serverConn) handleAdmin(ctx context.Context, w *deadlineWriter, t *engine.Tenant, req *request, body []byte,
	fail func(code, msg string) string, errOut func(error) string, end func() string) string {
	if len(body) > 0 {
		return fail(codeProtocol, "unexpected request body")
	}
	// The open session holds the tenant's lock: forget and prune would
	// wait for it forever.
	if sc.ing != nil {
		return fail(codeInvalid, "a backup session is open on this connection; commit it before "+req.Op)
	}
	rep := adminReport{Tenant: t.Name()}
	var err error
	switch req.Op {
	case opForget:
		if len(req.IDs) > maxForgetIDs {
			return fail(codeInvalid, fmt.Sprintf("forget takes at most %d snapshots at once", maxForgetIDs))
		}
		var p policy.Policy
		if req.Policy != nil {
			p = *req.Policy
			p.Now = time.Time{} // as locally: the decision never uses a clock
		}
		rep.Forget, err = t.Forget(ctx, req.IDs, engine.ForgetOptions{Policy: p, DryRun: req.DryRun})
		if rep.Forget == nil {
			return errOut(err)
		}
	case opPrune:
		rep.Prune, err = t.Prune(ctx, engine.PruneOptions{MaxUnusedPercent: req.MaxUnused, DryRun: req.DryRun})
		if rep.Prune == nil {
			return errOut(err)
		}
	case opTag:
		if len(req.IDs) > maxForgetIDs || req.Tag == nil {
			return fail(codeInvalid, fmt.Sprintf("tag takes 1 to %d snapshots and a change of tags", maxForgetIDs))
		}
		rep.Tag, err = t.Tag(ctx, req.IDs, *req.Tag)
		if rep.Tag == nil {
			return errOut(err)
		}
	case opRewrite:
		if len(req.IDs) > maxForgetIDs || len(req.Excludes) > maxExcludes {
			return fail(codeInvalid, fmt.Sprintf("rewrite takes at most %d snapshots and %d patterns", maxForgetIDs, maxExcludes))
		}
		o := engine.RewriteOptions{Forget: req.Forget, DryRun: req.DryRun}
		for _, x := range req.Excludes {
			if len(x) > maxExcludeLen {
				return fail(codeInvalid, fmt.Sprintf("a pattern is at most %d bytes", maxExcludeLen))
			}
			p, perr := engine.ParsePattern(x, false)
			if perr != nil {
				return errOut(perr)
			}
			o.Exclude = append(o.Exclude, p)
		}
		rep.Rewrite, err = t.Rewrite(ctx, req.IDs, o)
		if rep.Rewrite == nil {
			return errOut(err)
		}
	}
	b, jerr := json.Marshal(rep)
	if jerr != nil {
		return fail(codeInternal, "the server failed to answer; its operator has the details")
	}
	if _, werr := (frameWriter{w: w}).Write(b); werr != nil {
		return codeInternal
	}
	if err != nil {
		return errOut(err)
	}
	return end()
}

type countingFrameWriter struct {
	fw frameWriter
	n  int64
}

func (c *countingFrameWriter) Write(p []byte) (int, error) {
	n, err := c.fw.Write(p)
	c.n += int64(n)
	return n, err
}

// errorCode maps an engine error to a code and a message for the client.
// Messages come from the tenant's own request (its snapshot reference or
// path), never from another tenant; internal failures get a fixed text.
func errorCode(err error) (string, string) {
	switch {
	case errors.Is(err, engine.ErrSnapshotNotFound):
		return codeNotFound, err.Error()
	case errors.Is(err, engine.ErrPathNotFound):
		return codeNoPath, err.Error()
	case errors.Is(err, engine.ErrAmbiguous):
		return codeAmbiguous, err.Error()
	case errors.Is(err, engine.ErrTreeLimit):
		// The sentence after the error classes' prefixes.
		msg := err.Error()
		if i := strings.LastIndex(msg, engine.ErrTreeLimit.Error()+": "); i >= 0 {
			msg = msg[i+len(engine.ErrTreeLimit.Error())+2:]
		}
		return codeLimit, msg
	case errors.Is(err, engine.ErrInvalid):
		return codeInvalid, err.Error()
	case errors.Is(err, engine.ErrBlobNotFound):
		return codeNoBlob, "no such tree"
	case errors.Is(err, engine.ErrQuotaExceeded):
		return codeQuota, "this account's storage quota would be exceeded; nothing of this backup was kept"
	case errors.Is(err, engine.ErrTenantLocked):
		return codeRefused, "the server refused this key"
	}
	return codeInternal, "the server failed to answer; its operator has the details"
}
