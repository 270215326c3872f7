package remote

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"coffer/engine"
)

// dialAttempts is how many times Dial connects when the server closes the
// connection before the handshake ends.
const dialAttempts = 3

// Client is a connection to a Coffer server, authenticated with a client
// key and pinned to the server's key. Its methods are safe for concurrent
// use; requests are served one at a time.
type Client struct {
	mu    sync.Mutex // guards the connection's request/response stream
	c     net.Conn   // TLS (Dial) or a Unix socket (DialLocal)
	bw    *bufio.Writer
	br    *bufio.Reader
	roles []string
	cnt   *countingConn
}

// countingConn counts the bytes a client's connection moves (TLS records
// included).
type countingConn struct {
	net.Conn
	sent, received atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.received.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.sent.Add(int64(n))
	return n, err
}

// Traffic returns the bytes the connection has sent and received so far,
// TLS handshake and framing included.
func (cl *Client) Traffic() (sent, received int64) {
	return cl.cnt.sent.Load(), cl.cnt.received.Load()
}

// Dial connects to the server at addr with identity, and checks that the
// server's key has the fingerprint serverFP (or one of several,
// comma-separated, while the server's key is being rotated) before the
// client shows its own certificate or sends anything. A mismatch is
// ErrFingerprint; a refused key is ErrRefused.
func Dial(ctx context.Context, addr string, identity ed25519.PrivateKey, serverFP string) (*Client, error) {
	// Several fingerprints, comma-separated, are accepted during a server
	// key rotation (docs/design.md chapter 15).
	var pins []string
	for _, fp := range strings.Split(serverFP, ",") {
		fp = NormalizeFingerprint(fp)
		if !strings.HasPrefix(fp, "SHA256:") {
			return nil, fmt.Errorf("%w: server fingerprint %q must look like SHA256:… (as coffer serve prints it)", engine.ErrInvalid, fp)
		}
		pins = append(pins, fp)
	}
	cert, err := selfSigned(identity)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{alpnProto},
		// The server's certificate is self-signed: its key is pinned in
		// VerifyConnection instead of checked against a CA. Go runs
		// VerifyConnection before the client sends its certificate.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			pub, ok := peerKey(cs)
			if !ok {
				return ErrFingerprint
			}
			got := engine.KeyFingerprint(pub)
			for _, fp := range pins {
				if subtle.ConstantTimeCompare([]byte(got), []byte(fp)) == 1 {
					return nil
				}
			}
			return fmt.Errorf("%w: expected %s, the server at %s has %s", ErrFingerprint, strings.Join(pins, " or "), addr, got)
		},
	}
	// A server whose handshake places are all taken (a flood of
	// connections) closes new ones before their handshake: try again a
	// few times, after a short wait.
	var c *tls.Conn
	var cnt *countingConn
	for attempt := 0; ; attempt++ {
		d := &net.Dialer{Timeout: 15 * time.Second}
		raw, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", addr, err)
		}
		cnt = &countingConn{Conn: raw}
		c = tls.Client(cnt, cfg)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		err = c.HandshakeContext(ctx)
		if err == nil {
			break
		}
		c.Close()
		if errors.Is(err, ErrFingerprint) {
			return nil, err
		}
		closed := errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
		if !closed || attempt == dialAttempts-1 || ctx.Err() != nil {
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		select {
		case <-time.After(time.Duration(attempt+1) * 250 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	cl := &Client{c: c, bw: bufio.NewWriterSize(c, 64<<10), br: bufio.NewReaderSize(c, 64<<10), cnt: cnt}
	// In TLS 1.3 the server checks the client's key after the client's
	// handshake is done: wait for the server's hello before sending any
	// request, so a refused key moves no data.
	var hello response
	if _, err := readFrame(cl.br, &hello); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w (server %s)", ErrRefused, addr)
	}
	if hello.Kind == kindError {
		c.Close()
		return nil, fmt.Errorf("%w (server %s)", codeError(hello.Code, hello.Message), addr)
	}
	if hello.Kind != kindHello {
		c.Close()
		return nil, fmt.Errorf("%w: unexpected greeting from %s", ErrProtocol, addr)
	}
	if hello.Version != ProtocolVersion {
		c.Close()
		return nil, fmt.Errorf("%w: the server at %s speaks protocol version %d and this client version %d; install the same coffer version on both", ErrProtocol, addr, hello.Version, ProtocolVersion)
	}
	c.SetDeadline(time.Time{})
	cl.roles = hello.Roles
	return cl, nil
}

// Roles are the roles of the client's key, as the server reported them.
func (cl *Client) Roles() []string { return cl.roles }

// Close closes the connection.
func (cl *Client) Close() error { return cl.c.Close() }

// call sends req and returns a reader of its response frames. The caller
// holds cl.mu until it has read the last frame.
func (cl *Client) send(ctx context.Context, req request) error {
	if dl, ok := ctx.Deadline(); ok {
		cl.c.SetDeadline(dl)
	} else {
		cl.c.SetDeadline(time.Time{})
	}
	return cl.explain(writeFrame(cl.bw, req, nil), cl.bw.Flush())
}

// explain turns a failed send into the server's reason when the server
// closed the session after saying why (a cut session: its key was removed
// or its tenant locked).
func (cl *Client) explain(errs ...error) error {
	err := errors.Join(errs...)
	if err == nil {
		return nil
	}
	cl.c.SetReadDeadline(time.Now().Add(time.Second))
	var resp response
	if _, rerr := readFrame(cl.br, &resp); rerr == nil && resp.Kind == kindError {
		return codeError(resp.Code, resp.Message)
	}
	return err
}

// sendBody is send with a request body.
func (cl *Client) sendBody(ctx context.Context, req request, body []byte) error {
	if dl, ok := ctx.Deadline(); ok {
		cl.c.SetDeadline(dl)
	} else {
		cl.c.SetDeadline(time.Time{})
	}
	return cl.explain(writeFrame(cl.bw, req, body), cl.bw.Flush())
}

// next reads one response frame; an "error" frame becomes an error.
func (cl *Client) next(resp *response) ([]byte, error) {
	*resp = response{}
	body, err := readFrame(cl.br, resp)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrClosed
		}
		return nil, err
	}
	if resp.Kind == kindError {
		return nil, codeError(resp.Code, resp.Message)
	}
	return body, nil
}

func codeError(code, msg string) error {
	msg = strings.TrimPrefix(msg, "engine: ")
	switch code {
	case codeRefused:
		return fmt.Errorf("%w: %s", ErrRefused, msg)
	case codeNotFound:
		return fmt.Errorf("%w (remote: %s)", engine.ErrSnapshotNotFound, msg)
	case codeNoPath:
		return fmt.Errorf("%w (remote: %s)", engine.ErrPathNotFound, msg)
	case codeAmbiguous:
		return fmt.Errorf("%w (remote: %s)", engine.ErrAmbiguous, msg)
	case codeInvalid:
		return fmt.Errorf("%w (remote: %s)", engine.ErrInvalid, msg)
	case codeBusy:
		return ErrBusy
	case codeNoBlob:
		return fmt.Errorf("%w (remote: %s)", engine.ErrBlobNotFound, msg)
	case codeQuota:
		return fmt.Errorf("%w (remote: %s)", engine.ErrQuotaExceeded, msg)
	case codeProtocol:
		return fmt.Errorf("%w: %s", ErrProtocol, msg)
	case codeLimit:
		return fmt.Errorf("%w (remote: %s)", engine.ErrTreeLimit, msg)
	case codeNoTenant:
		return fmt.Errorf("%w: %s", engine.ErrTenantNotFound, trimClass(msg, engine.ErrTenantNotFound))
	case codeLocked:
		return fmt.Errorf("%w: %s", engine.ErrTenantLocked, trimClass(msg, engine.ErrTenantLocked))
	}
	return fmt.Errorf("%w: %s", ErrServer, msg)
}

// trimClass drops the sentence of the error class class from the front of
// msg (the server's err.Error(), "engine: " already trimmed), so the class
// is not said twice once the client wraps it again.
func trimClass(msg string, class error) string {
	return strings.TrimPrefix(msg, strings.TrimPrefix(class.Error(), "engine: ")+": ")
}

// Snapshots lists the key's tenant's snapshots, oldest first.
func (cl *Client) Snapshots(ctx context.Context) ([]*engine.Snapshot, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.snapshots(ctx)
}

// snapshots is Snapshots with cl.mu held.
func (cl *Client) snapshots(ctx context.Context) ([]*engine.Snapshot, error) {
	if err := cl.send(ctx, request{Op: opSnapshots}); err != nil {
		return nil, err
	}
	out := []*engine.Snapshot{}
	for {
		var r response
		if _, err := cl.next(&r); err != nil {
			return nil, err
		}
		switch r.Kind {
		case kindSnapshots:
			out = append(out, r.Snapshots...)
		case kindEnd:
			return out, nil
		default:
			return nil, fmt.Errorf("%w: unexpected %q frame", ErrProtocol, r.Kind)
		}
	}
}

// List calls fn for each node at or below dir in the snapshot (see
// engine.Tenant.List). fn runs on the caller's goroutine; if it fails, the
// connection is closed (the rest of the stream is not read).
func (cl *Client) List(ctx context.Context, snapshot, dir string, fn func(engine.Entry) error) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.send(ctx, request{Op: opLs, Snapshot: snapshot, Path: dir}); err != nil {
		return err
	}
	for {
		var r response
		if _, err := cl.next(&r); err != nil {
			return err
		}
		switch {
		case r.Kind == kindEntry && r.Entry != nil:
			if err := fn(*r.Entry); err != nil {
				cl.c.Close()
				return err
			}
		case r.Kind == kindEnd:
			return nil
		default:
			return fmt.Errorf("%w: unexpected %q frame", ErrProtocol, r.Kind)
		}
	}
}

// Dump writes the content of the file at p in the snapshot to w.
func (cl *Client) Dump(ctx context.Context, snapshot, p string, w io.Writer) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.send(ctx, request{Op: opDump, Snapshot: snapshot, Path: p}); err != nil {
		return err
	}
	for {
		var r response
		body, err := cl.next(&r)
		if err != nil {
			return err
		}
		switch r.Kind {
		case kindData:
			if _, err := w.Write(body); err != nil {
				cl.c.Close()
				return fmt.Errorf("write output: %w", err)
			}
		case kindEnd:
			return nil
		default:
			return fmt.Errorf("%w: unexpected %q frame", ErrProtocol, r.Kind)
		}
	}
}

// Forget removes snapshots of the key's tenant on the server, as
// engine.Tenant.Forget does locally: those named by ids, or, when ids is
// empty, those o.Policy does not keep (o.Policy.Now is not sent). It needs
// an admin key. On an error after part of the work, the report lists what
// was done.
func (cl *Client) Forget(ctx context.Context, ids []string, o engine.ForgetOptions) (*engine.ForgetReport, error) {
	req := request{Op: opForget, IDs: ids, DryRun: o.DryRun}
	if !o.Policy.Empty() {
		p := o.Policy
		p.Now = time.Time{}
		req.Policy = &p
	}
	rep, err := cl.admin(ctx, req)
	if rep == nil || rep.Forget == nil {
		if err == nil {
			err = fmt.Errorf("%w: forget answered without a report", ErrProtocol)
		}
		return nil, err
	}
	return rep.Forget, err
}

// Prune frees the space of data no snapshot of the key's tenant needs, as
// engine.Tenant.Prune does locally. It needs an admin key. It returns the
// report and the name of the key's tenant; on an error after part of the
// work, the report says what was done.
func (cl *Client) Prune(ctx context.Context, o engine.PruneOptions) (*engine.PruneReport, string, error) {
	rep, err := cl.admin(ctx, request{Op: opPrune, MaxUnused: o.MaxUnusedPercent, DryRun: o.DryRun})
	if rep == nil || rep.Prune == nil {
		if err == nil {
			err = fmt.Errorf("%w: prune answered without a report", ErrProtocol)
		}
		return nil, "", err
	}
	return rep.Prune, rep.Tenant, err
}

// admin sends a forget or prune request and reads its report: "data"
// frames holding JSON, then "end", or "error" (after a partial report, or
// instead of one).
func (cl *Client) admin(ctx context.Context, req request) (*adminReport, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.send(ctx, req); err != nil {
		return nil, err
	}
	var buf []byte
	parse := func() (*adminReport, error) {
		rep := &adminReport{}
		if err := json.Unmarshal(buf, rep); err != nil {
			return nil, fmt.Errorf("%w: malformed %s report", ErrProtocol, req.Op)
		}
		return rep, nil
	}
	for {
		var r response
		body, err := cl.next(&r)
		if err != nil {
			if len(buf) > 0 && r.Kind == kindError {
				if rep, perr := parse(); perr == nil {
					return rep, err
				}
			}
			return nil, err
		}
		switch r.Kind {
		case kindData:
			if len(buf)+len(body) > maxReportBytes {
				cl.c.Close()
				return nil, fmt.Errorf("%w: %s report over %d bytes", ErrProtocol, req.Op, maxReportBytes)
			}
			buf = append(buf, body...)
		case kindEnd:
			return parse()
		default:
			return nil, fmt.Errorf("%w: unexpected %q frame", ErrProtocol, r.Kind)
		}
	}
}
