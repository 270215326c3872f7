// Package remote is Coffer's backup server and its client: TLS 1.3 with
// pinned ed25519 keys on both sides (no CA, no passwords), and a small
// framed request/response protocol on top (docs/remote.md).
//
// The server decides the tenant from the client's key alone, and checks the
// key again on every request. It never names or lists other tenants: an
// unknown key, a removed key and a locked tenant get one refusal, and a
// probe for another tenant's snapshot gets the answer of a random ID.
//
// The package returns errors and logs nothing; the server reports events
// through Config.Log, which carries no tenant content.
package remote

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"coffer/engine"
)

// Frame format (all integers big-endian):
//
//	u32 header length | u32 body length | header (JSON object) | body (bytes)
//
// A request is one frame; a response is one or more frames, the last with
// kind "end" or "error". Headers are at most MaxHeader bytes and bodies at
// most MaxBody; a peer that sends more is cut off.
const (
	MaxHeader = 64 << 10
	MaxBody   = 1 << 20
	// ProtocolVersion is sent in the server's hello.
	ProtocolVersion = 1
)

// Operations.
const (
	opSnapshots = "snapshots" // → one "snapshots" frame, then "end"
	opLs        = "ls"        // snapshot, path → "entry" frames, then "end"
	opDump      = "dump"      // snapshot, path → "data" frames, then "end"
	opRestore   = "restore"   // snapshot, includes → per node an "entry" frame; a file's entry is followed by its "data" frames and an "eof" frame; then "end"
)

// Response kinds.
const (
	kindHello     = "hello"
	kindSnapshots = "snapshots"
	kindEntry     = "entry"
	kindData      = "data"
	kindEOF       = "eof"
	kindEnd       = "end"
	kindError     = "error"
)

// Error codes in an "error" frame.
const (
	codeRefused   = "refused"   // key unknown or removed, tenant locked, or role missing
	codeNotFound  = "not_found" // snapshot not found
	codeNoPath    = "no_path"   // path not in the snapshot
	codeAmbiguous = "ambiguous"
	codeInvalid   = "invalid"
	codeInternal  = "internal"
	codeBusy      = "busy"
)

// Errors a client sees. Codes from the server map onto engine classes where
// one exists, so the CLI gives the usual exit codes.
var (
	// ErrRefused: the server refused the key (unknown, removed, tenant
	// locked) or the request for the key's roles. The cases are not told
	// apart on purpose.
	ErrRefused = errors.New("remote: the server refused this key")
	// ErrFingerprint: the server's key is not the one given.
	ErrFingerprint = errors.New("remote: the server's key does not match the expected fingerprint")
	// ErrProtocol: the peer broke the protocol (oversized or malformed frame).
	ErrProtocol = errors.New("remote: protocol error")
	// ErrServer: the server failed on its side.
	ErrServer = errors.New("remote: server error")
	// ErrBusy: the server has too many connections.
	ErrBusy = errors.New("remote: the server is busy")
)

// request is a request header.
type request struct {
	Op       string   `json:"op"`
	Snapshot string   `json:"snapshot,omitempty"`
	Path     string   `json:"path,omitempty"`
	Includes []string `json:"includes,omitempty"`
}

// response is a response frame header.
type response struct {
	Kind      string             `json:"kind"`
	Version   int                `json:"version,omitempty"`
	Roles     []string           `json:"roles,omitempty"`
	Snapshots []*engine.Snapshot `json:"snapshots,omitempty"`
	Snapshot  *engine.Snapshot   `json:"snapshot,omitempty"`
	Entry     *engine.Entry      `json:"entry,omitempty"`
	Code      string             `json:"code,omitempty"`
	Message   string             `json:"message,omitempty"`
}

// writeFrame writes one frame. It does not retain body.
func writeFrame(w io.Writer, hdr any, body []byte) error {
	h, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	if len(h) > MaxHeader || len(body) > MaxBody {
		return fmt.Errorf("%w: frame too large", ErrProtocol)
	}
	buf := make([]byte, 8, 8+len(h)+len(body))
	binary.BigEndian.PutUint32(buf[0:4], uint32(len(h)))
	binary.BigEndian.PutUint32(buf[4:8], uint32(len(body)))
	buf = append(buf, h...)
	buf = append(buf, body...)
	_, err = w.Write(buf)
	return err
}

// readFrame reads one frame, decoding its header into hdr. The body is a
// fresh slice owned by the caller. io.EOF means the peer closed between
// frames.
func readFrame(r io.Reader, hdr any) ([]byte, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, err
	}
	hl, bl := binary.BigEndian.Uint32(pre[0:4]), binary.BigEndian.Uint32(pre[4:8])
	if hl == 0 || hl > MaxHeader || bl > MaxBody {
		return nil, fmt.Errorf("%w: frame of %d+%d bytes", ErrProtocol, hl, bl)
	}
	buf := make([]byte, int(hl)+int(bl))
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if err := json.Unmarshal(buf[:hl], hdr); err != nil {
		return nil, fmt.Errorf("%w: bad frame header", ErrProtocol)
	}
	if bl == 0 {
		return nil, nil
	}
	return buf[hl:], nil
}

// frameWriter turns a byte stream into "data" frames of at most MaxBody.
type frameWriter struct {
	w io.Writer
}

func (f frameWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), MaxBody)
		if err := writeFrame(f.w, response{Kind: kindData}, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}
