package engine

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"

	"coffer/chunk"
	"coffer/internal/durable"
)

// KeySize is the size of the master key and of every tenant key.
const KeySize = 32

// HKDF labels. Each is used exactly once; a label is never reused for a new
// purpose, so the format can evolve by adding labels.
const (
	labelWrap    = "coffer/v1/mk/wrap"    // MK → key that wraps tenant keys
	labelAdmin   = "coffer/v1/mk/admin"   // MK → key that seals tenant metadata
	labelCheck   = "coffer/v1/mk/check"   // MK → public check value of the key
	labelSocket  = "coffer/v1/mk/socket"  // MK → key that answers the admin socket's challenge
	labelData    = "coffer/v1/tk/data"    // TK → seals data blobs
	labelID      = "coffer/v1/tk/id"      // TK → keyed content IDs
	labelChunker = "coffer/v1/tk/chunker" // TK → chunker polynomial seed stream
	labelMeta    = "coffer/v1/tk/meta"    // TK → seals trees, pack headers, snapshots
)

// masterKey is one epoch of the master key with the subkeys derived from it.
type masterKey struct {
	repo  [16]byte
	epoch uint32
	raw   [KeySize]byte
	wrap  [KeySize]byte
	admin [KeySize]byte
	check [16]byte
}

func deriveKey(secret, salt []byte, label string, out []byte) {
	r := hkdf.New(sha256.New, secret, salt, []byte(label))
	if _, err := io.ReadFull(r, out); err != nil {
		// HKDF-SHA256 can produce 255*32 bytes; we never ask for more.
		panic(err)
	}
}

func newMasterKey(repoID [16]byte, epoch uint32, raw [KeySize]byte) *masterKey {
	mk := &masterKey{repo: repoID, epoch: epoch, raw: raw}
	deriveKey(raw[:], repoID[:], labelWrap, mk.wrap[:])
	deriveKey(raw[:], repoID[:], labelAdmin, mk.admin[:])
	deriveKey(raw[:], repoID[:], labelCheck, mk.check[:])
	return mk
}

// Master key file format (text, one "name: value" per line, in this order):
//
//	coffer master key
//	version: 1
//	repository: <32 hex digits>
//	epoch: <decimal>
//	key: <64 hex digits>
//	next-epoch: <decimal>      only while a rotation is in progress
//	next-key: <64 hex digits>  only while a rotation is in progress
const mkFileHeader = "coffer master key"

// keyFile is the content of a master key file: the current epoch and, while a
// rotation is in progress, the next one.
type keyFile struct {
	cur, next *masterKey
}

func encodeMasterKeyFile(mk *masterKey) []byte { return encodeKeyFile(keyFile{cur: mk}) }

func encodeKeyFile(kf keyFile) []byte {
	var b bytes.Buffer
	mk := kf.cur
	fmt.Fprintf(&b, "%s\nversion: 1\nrepository: %x\nepoch: %d\nkey: %x\n", mkFileHeader, mk.repo[:], mk.epoch, mk.raw[:])
	if kf.next != nil {
		fmt.Fprintf(&b, "next-epoch: %d\nnext-key: %x\n", kf.next.epoch, kf.next.raw[:])
	}
	return b.Bytes()
}

// decodeMasterKeyFile parses a master key file and returns its current key.
// Errors wrap ErrBadKeyFile.
func decodeMasterKeyFile(data []byte) (*masterKey, error) {
	kf, err := decodeKeyFile(data)
	if err != nil {
		return nil, err
	}
	return kf.cur, nil
}

// decodeKeyFile parses a master key file. Errors wrap ErrBadKeyFile.
func decodeKeyFile(data []byte) (keyFile, error) {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrBadKeyFile, what) }
	sc := bufio.NewScanner(bytes.NewReader(data))
	want := []string{"", "version", "repository", "epoch", "key", "next-epoch", "next-key"}
	vals := make([]string, len(want))
	i := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if i >= len(want) {
			return keyFile{}, bad("unexpected extra line")
		}
		if i == 0 {
			if line != mkFileHeader {
				return keyFile{}, bad("missing header line")
			}
			i++
			continue
		}
		name, val, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != want[i] {
			return keyFile{}, bad("expected field " + want[i])
		}
		vals[i] = strings.TrimSpace(val)
		i++
	}
	if i != 5 && i != len(want) {
		return keyFile{}, bad("truncated")
	}
	if vals[1] != "1" {
		return keyFile{}, bad("unsupported version " + strconv.Quote(vals[1]))
	}
	var repoID [16]byte
	if err := decodeHexInto(repoID[:], vals[2]); err != nil {
		return keyFile{}, bad("repository: " + err.Error())
	}
	parse := func(e, k string) (*masterKey, error) {
		epoch, err := strconv.ParseUint(e, 10, 32)
		if err != nil || epoch == 0 || strconv.FormatUint(epoch, 10) != e {
			return nil, bad("epoch is not a positive number")
		}
		var raw [KeySize]byte
		if err := decodeHexInto(raw[:], strings.ToLower(k)); err != nil || hex.EncodeToString(raw[:]) != k {
			return nil, bad("key is not 64 lowercase hex digits")
		}
		return newMasterKey(repoID, uint32(epoch), raw), nil
	}
	var kf keyFile
	var err error
	if kf.cur, err = parse(vals[3], vals[4]); err != nil {
		return keyFile{}, err
	}
	if i == len(want) {
		if kf.next, err = parse(vals[5], vals[6]); err != nil {
			return keyFile{}, err
		}
		if kf.next.epoch != kf.cur.epoch+1 {
			return keyFile{}, bad("next-epoch must follow epoch")
		}
	}
	return kf, nil
}

func decodeHexInto(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("want %d hex digits, got %d", 2*len(dst), len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return errors.New("not hex")
	}
	return nil
}

// readMasterKeyFile reads and parses the key file at path.
func readMasterKeyFile(path string) (*masterKey, error) {
	kf, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	return kf.cur, nil
}

// maxMasterKeyFile bounds the size of a master key file read.
const maxMasterKeyFile = 64 << 10

// readKeyFile reads the master key file at path; one that its group or
// others may read is refused (ErrKeyFileExposed).
func readKeyFile(path string) (keyFile, error) {
	data, err := ReadKeyFile("master key file", path, maxMasterKeyFile)
	if err != nil {
		if errors.Is(err, ErrKeyFileExposed) {
			return keyFile{}, err
		}
		if errors.Is(err, os.ErrNotExist) {
			return keyFile{}, fmt.Errorf("%w: %s does not exist", ErrNoMasterKey, path)
		}
		return keyFile{}, fmt.Errorf("read master key file: %w", err)
	}
	kf, err := decodeKeyFile(data)
	if err != nil {
		return keyFile{}, fmt.Errorf("master key file %s: %w", path, err)
	}
	return kf, nil
}

// tenantKeys are the subkeys of one tenant key. The raw tenant key itself is
// not kept once these are derived.
type tenantKeys struct {
	tenant [16]byte
	data   [KeySize]byte
	meta   [KeySize]byte
	ids    *chunk.Hasher
	idKey  [KeySize]byte // the key of ids, given to remote backup clients (never data or meta)
	pol    chunk.Pol
}

func deriveTenantKeys(tenant [16]byte, tk *[KeySize]byte) (*tenantKeys, error) {
	k := &tenantKeys{tenant: tenant}
	deriveKey(tk[:], tenant[:], labelData, k.data[:])
	deriveKey(tk[:], tenant[:], labelMeta, k.meta[:])
	deriveKey(tk[:], tenant[:], labelID, k.idKey[:])
	k.ids = chunk.NewHasher(k.idKey)
	pol, err := chunk.DerivePol(hkdf.New(sha256.New, tk[:], tenant[:], []byte(labelChunker)))
	if err != nil {
		return nil, err
	}
	k.pol = pol
	return k, nil
}

// wrapAD binds a wrapped tenant key to its tenant and master-key epoch.
func wrapAD(tenant [16]byte, epoch uint32) []byte {
	ad := make([]byte, 0, 8+16+4)
	ad = append(ad, "CFWK0001"...)
	ad = append(ad, tenant[:]...)
	return binary.LittleEndian.AppendUint32(ad, epoch)
}

// wrapTenantKey seals tk under the master key: nonce(24) || ciphertext(32+16).
func wrapTenantKey(mk *masterKey, tenant [16]byte, tk *[KeySize]byte) []byte {
	return sealRaw(&mk.wrap, wrapAD(tenant, mk.epoch), tk[:])
}

func unwrapTenantKey(mk *masterKey, tenant [16]byte, wrapped []byte) (*[KeySize]byte, error) {
	plain, err := openRaw(&mk.wrap, wrapAD(tenant, mk.epoch), wrapped)
	if err != nil || len(plain) != KeySize {
		return nil, fmt.Errorf("unwrap tenant key: %w", ErrWrongKey)
	}
	var tk [KeySize]byte
	copy(tk[:], plain)
	return &tk, nil
}

// sealRaw encrypts plain with XChaCha20-Poly1305 under key with a random
// nonce: nonce(24) || ciphertext || tag(16).
func sealRaw(key *[KeySize]byte, ad, plain []byte) []byte {
	return sealRawTo(make([]byte, 0, chacha20poly1305.NonceSizeX+len(plain)+chacha20poly1305.Overhead), key, ad, plain)
}

// sealRawTo is sealRaw appending to dst, which must not overlap plain.
func sealRawTo(dst []byte, key *[KeySize]byte, ad, plain []byte) []byte {
	aead, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		panic(err) // only for a key of the wrong size, which the type rules out
	}
	n := len(dst)
	dst = append(dst, make([]byte, chacha20poly1305.NonceSizeX)...)
	nonce := dst[n:]
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("engine: system random source failed: %v", err))
	}
	return aead.Seal(dst, nonce, plain, ad)
}

func openRaw(key *[KeySize]byte, ad, sealed []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		panic(err)
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrAuth
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], ad)
	if err != nil {
		return nil, ErrAuth
	}
	return plain, nil
}

// checkValue is the public check value of a master key epoch stored in the
// repository config, so a wrong key file is recognised at once.
func (mk *masterKey) checkHex() string { return hex.EncodeToString(mk.check[:]) }

func (mk *masterKey) matches(check string) bool {
	want, err := hex.DecodeString(check)
	return err == nil && hmac.Equal(want, mk.check[:])
}

func randomBytes(b []byte) {
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("engine: system random source failed: %v", err))
	}
}

// writeFileDurable writes data to path atomically and durably with mode
// (internal/durable).
func writeFileDurable(path string, data []byte, mode os.FileMode) error {
	return durable.WriteFile(path, data, mode)
}

// syncDir makes the entries of folder dir durable.
func syncDir(dir string) error { return durable.SyncDir(dir) }
