// Package remote is Coffer's backup server and its client: TLS 1.3 with
// pinned ed25519 keys on both sides (no CA, no passwords), and a small
// framed request/response protocol on top (docs/design.md, chapter 15).
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

	"coffer/chunk"
	"coffer/engine"
	"coffer/engine/policy"
	"coffer/engine/tree"
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
	// ProtocolVersion is sent in the server's hello; a client offers it in
	// the TLS handshake as the ALPN protocol "coffer/2" (alpnProto). Version
	// 2 restores with the one restore pipeline of the engine on the client
	// (restore, tree, locate, blobs); version 1 sent a lossy entry list.
	ProtocolVersion = 2
)

// alpnProto is the ALPN protocol a client of this version offers. A client
// that offers none is of protocol version 1: the server answers it with one
// sentence instead of the hello.
var alpnProto = fmt.Sprintf("coffer/%d", ProtocolVersion)

// Operations.
const (
	opSnapshots = "snapshots" // → one "snapshots" frame, then "end"
	opLs        = "ls"        // snapshot, path → "entry" frames, then "end"
	opDump      = "dump"      // snapshot, path → "data" frames, then "end"
	opRestore   = "restore"   // snapshot → "params" (snapshot, content-ID key), then "end"; audited as the start of a restore
	opOpen      = "open"      // restore/admin → "params" (id_key), then "end"; audited as "open" (a mount's start)
	opTree      = "tree"      // id → "data" frames with the tree blob's plaintext, then "end"
	opLocate    = "locate"    // restore/admin; body: n × 32-byte data blob IDs (n ≤ engine.MaxReadGroup) → "places" (body: n × placeLen bytes, see appendPlaces), then "end"
	opBlobs     = "blobs"     // restore/admin; body: n × 32-byte data blob IDs (n ≤ engine.MaxReadGroup, plaintext ≤ engine.MaxReadGroupBytes) → per blob its plaintext as "data" frames and an "eof" frame, then "end"
	opBegin     = "backup"    // → "params" (chunker polynomial, ID key), then "end"; starts the connection's ingest session
	opHave      = "have"      // body: n × 32-byte IDs → "have" (body: n-bit bitmap, bit i = ID i known, LSB first), then "end"
	opPut       = "put"       // frames: N, followed by N "data" frames of a padded payload (see putPayload) → "end"
	opCommit    = "commit"    // commit: snapshot description → "snapshot", then "end"; ends the session
	opForget    = "forget"    // admin only; ids or policy, dry_run → "data" frames with the JSON adminReport (forget), then "end" (or "error" after a partial report)
	opPrune     = "prune"     // admin only; max_unused, dry_run → "data" frames with the JSON adminReport (prune), then "end" (or "error" after a partial report)
	opTag       = "tag"       // admin only; ids, tag → "data" frames with the JSON adminReport (tag), then "end" (or "error" after a partial report)
	opRewrite   = "rewrite"   // admin only; ids, excludes, forget, dry_run → "data" frames with the JSON adminReport (rewrite), then "end" (or "error" after a partial report)
)

// Upload limits. A put's payload is padded to a size class (padClass) and
// sent as frames: one frame of the class size below MaxBody, else whole
// frames of MaxBody bytes, at most maxPutFrames of them.
const (
	maxPutFrames = 32
	maxHaveIDs   = MaxBody / 32
	minPadClass  = 64 << 10
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
	kindParams    = "params"
	kindHave      = "have"
	kindPlaces    = "places"
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
	codeNoBlob    = "no_blob"  // blob not found (for this tenant)
	codeQuota     = "quota"    // the tenant's quota would be exceeded
	codeProtocol  = "protocol" // the request broke the protocol; the connection is closed
	codeLimit     = "limit"    // a snapshot's tree is over a limit (engine.ErrTreeLimit)
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
	// ErrClosed: the server closed the connection in the middle of a
	// request (it stopped, or its process ended).
	ErrClosed = fmt.Errorf("%w: the server closed the connection", ErrServer)
)

// request is a request header.
type request struct {
	Op       string   `json:"op"`
	Snapshot string   `json:"snapshot,omitempty"`
	Path     string   `json:"path,omitempty"`
	Includes []string `json:"includes,omitempty"`
	ID       string   `json:"id,omitempty"`     // tree: blob ID, hex
	Frames   int      `json:"frames,omitempty"` // put: payload frames that follow
	// Commit is the snapshot a commit records; the server fills in the ID
	// and the blob counts.
	Commit *engine.Snapshot `json:"commit,omitempty"`
	// Forget: snapshot references, or a retention policy (not both).
	IDs    []string       `json:"ids,omitempty"`
	Policy *policy.Policy `json:"policy,omitempty"`
	// Forget and prune: decide and report, change nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Prune: repack packs with more than this share unused (0: default).
	MaxUnused float64 `json:"max_unused,omitempty"`
	// Tag: the change of tags (IDs name the snapshots).
	Tag *engine.TagOptions `json:"tag,omitempty"`
	// Rewrite: the exclude patterns (a full-path one starts with "/"), and
	// whether to forget the rewritten snapshots.
	Excludes []string `json:"excludes,omitempty"`
	Forget   bool     `json:"forget,omitempty"`
	// The hello of a local session (local.go): the tenant, the proofs of
	// the master key and the client's protocol version.
	Tenant  string   `json:"tenant,omitempty"`
	Proofs  [][]byte `json:"proofs,omitempty"`
	Version int      `json:"version,omitempty"`
}

// adminReport is the body of a forget or prune response: the local
// command's report, and the name of the key's own tenant (for printing).
type adminReport struct {
	Tenant  string                `json:"tenant"`
	Forget  *engine.ForgetReport  `json:"forget,omitempty"`
	Prune   *engine.PruneReport   `json:"prune,omitempty"`
	Tag     *engine.TagReport     `json:"tag,omitempty"`
	Rewrite *engine.RewriteReport `json:"rewrite,omitempty"`
}

// Bounds of the admin requests: snapshot references in one forget, and the
// size of a report the client accepts.
const (
	maxForgetIDs   = 10000
	maxReportBytes = 64 << 20
	// Rewrite: patterns per request and bytes per pattern.
	maxExcludes   = 256
	maxExcludeLen = 4096
)

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
	Pol       uint64             `json:"pol,omitempty"`    // params: chunker polynomial
	IDKey     []byte             `json:"id_key,omitempty"` // params: content-ID key (32 bytes)
	Nonce     []byte             `json:"nonce,omitempty"`  // challenge of a local session
}

// Places of a locate answer (all integers big-endian), one per ID asked,
// in order:
//
//	[16]byte pack ID | u32 offset | u32 sealed length | u32 plaintext length
const placeLen = 16 + 4 + 4 + 4

func appendPlaces(buf []byte, places []engine.BlobPlace) []byte {
	for _, p := range places {
		buf = append(buf, p.Pack[:]...)
		buf = binary.BigEndian.AppendUint32(buf, p.Offset)
		buf = binary.BigEndian.AppendUint32(buf, p.Length)
		buf = binary.BigEndian.AppendUint32(buf, p.Size)
	}
	return buf
}

// parsePlaces decodes the places of ids from a locate answer's body.
func parsePlaces(b []byte, ids []tree.ID) ([]engine.BlobPlace, error) {
	if len(b) != len(ids)*placeLen {
		return nil, fmt.Errorf("%w: %d bytes of places for %d blobs", ErrProtocol, len(b), len(ids))
	}
	out := make([]engine.BlobPlace, len(ids))
	for i := range out {
		e := b[i*placeLen:]
		out[i].ID = ids[i]
		copy(out[i].Pack[:], e[:16])
		out[i].Offset = binary.BigEndian.Uint32(e[16:20])
		out[i].Length = binary.BigEndian.Uint32(e[20:24])
		out[i].Size = binary.BigEndian.Uint32(e[24:28])
		if out[i].Size > chunk.MaxSize {
			return nil, fmt.Errorf("%w: a blob of %d bytes, more than a chunk", ErrProtocol, out[i].Size)
		}
	}
	return out, nil
}

// parseIDs decodes a body of 32-byte IDs, 1 to max of them.
func parseIDs(body []byte, max int) ([]tree.ID, bool) {
	if len(body) == 0 || len(body)%32 != 0 || len(body)/32 > max {
		return nil, false
	}
	ids := make([]tree.ID, len(body)/32)
	for i := range ids {
		copy(ids[i][:], body[i*32:])
	}
	return ids, true
}

// padClass is the padded size of a put payload of n bytes: the next power
// of two from 64 KiB up to MaxBody, then the next multiple of MaxBody. Only
// the class is visible on the wire, never the sizes of the blobs inside.
func padClass(n int) int {
	if n > MaxBody {
		return (n + MaxBody - 1) / MaxBody * MaxBody
	}
	c := minPadClass
	for c < n {
		c *= 2
	}
	return c
}

// validClass reports whether a put of frames frames may have a frame of
// size n.
func validClass(frames, n int) bool {
	if frames > 1 {
		return n == MaxBody
	}
	return n >= minPadClass && n <= MaxBody && n&(n-1) == 0
}

// Put payload (all integers big-endian), padded with zero bytes to its class:
//
//	u32 count | count × (u8 type | [32]byte ID | u32 length) | blob bytes in order | zeros
const putEntryLen = 1 + 32 + 4

// putBlob is one blob of a put.
type putBlob struct {
	typ  engine.BlobType
	id   [32]byte
	data []byte
}

// appendPutPayload encodes blobs into buf (reused) and pads it.
func appendPutPayload(buf []byte, blobs []putBlob) []byte {
	buf = binary.BigEndian.AppendUint32(buf[:0], uint32(len(blobs)))
	for _, b := range blobs {
		buf = append(buf, byte(b.typ))
		buf = append(buf, b.id[:]...)
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(b.data)))
	}
	for _, b := range blobs {
		buf = append(buf, b.data...)
	}
	n := padClass(len(buf))
	buf = append(buf, make([]byte, n-len(buf))...)
	return buf
}

// parsePutPayload decodes a payload; the blobs' Data alias p.
func parsePutPayload(p []byte) ([]engine.IngestBlob, error) {
	bad := fmt.Errorf("%w: malformed put payload", ErrProtocol)
	if len(p) < 4 {
		return nil, bad
	}
	n := int(binary.BigEndian.Uint32(p))
	if n <= 0 || n > (len(p)-4)/putEntryLen {
		return nil, bad
	}
	tab, data := p[4:4+n*putEntryLen], p[4+n*putEntryLen:]
	out := make([]engine.IngestBlob, n)
	for i := range out {
		e := tab[i*putEntryLen:]
		out[i].Type = engine.BlobType(e[0])
		copy(out[i].ID[:], e[1:33])
		l := int(binary.BigEndian.Uint32(e[33:37]))
		if l > len(data) {
			return nil, bad
		}
		out[i].Data, data = data[:l], data[l:]
	}
	for _, b := range data {
		if b != 0 {
			return nil, bad
		}
	}
	return out, nil
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
