package remote

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"coffer/engine"
	"coffer/internal/durable"
)

// ErrBadKey: a key file is not an ed25519 key in a supported format.
var ErrBadKey = errors.New("remote: not an ed25519 key in a supported format")

// ServerKeyName is the server key's file name in the repository folder.
const ServerKeyName = "server.key"

// maxKeyFile bounds the size of a key file read.
const maxKeyFile = 64 << 10

// GenerateKey makes a new ed25519 key pair.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	return priv, err
}

// EncodePrivateKey is priv as PEM "PRIVATE KEY" (PKCS#8).
func EncodePrivateKey(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey reads an ed25519 private key: PEM PKCS#8 ("PRIVATE KEY",
// as coffer keygen writes) or an unencrypted OpenSSH private key
// ("OPENSSH PRIVATE KEY", as ssh-keygen -t ed25519 writes). Errors wrap
// ErrBadKey.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrBadKey)
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		if priv, ok := k.(ed25519.PrivateKey); ok {
			return priv, nil
		}
		return nil, fmt.Errorf("%w: the key is not ed25519", ErrBadKey)
	case "OPENSSH PRIVATE KEY":
		k, err := ssh.ParseRawPrivateKey(data)
		if err != nil {
			var pp *ssh.PassphraseMissingError
			if errors.As(err, &pp) {
				return nil, fmt.Errorf("%w: the OpenSSH key has a passphrase; coffer needs a key without one", ErrBadKey)
			}
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		switch p := k.(type) {
		case *ed25519.PrivateKey:
			return *p, nil
		case ed25519.PrivateKey:
			return p, nil
		}
		return nil, fmt.Errorf("%w: the key is not ed25519", ErrBadKey)
	}
	return nil, fmt.Errorf("%w: PEM block %q", ErrBadKey, block.Type)
}

// ReadPrivateKey reads and parses the private key file at path. A file
// that its group or others may read is refused, as ssh refuses it: the
// error wraps engine.ErrKeyFileExposed and says to run chmod 600.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := engine.ReadKeyFile("private key file", path, maxKeyFile)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// ParsePublicKey reads an OpenSSH public key line ("ssh-ed25519 AAAA…
// comment") and returns the key and its comment. Errors wrap ErrBadKey.
func ParsePublicKey(data []byte) (ed25519.PublicKey, string, error) {
	pk, comment, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	cpk, ok := pk.(ssh.CryptoPublicKey)
	if !ok {
		return nil, "", fmt.Errorf("%w: key type %s", ErrBadKey, pk.Type())
	}
	pub, ok := cpk.CryptoPublicKey().(ed25519.PublicKey)
	if !ok {
		return nil, "", fmt.Errorf("%w: key type %s (coffer takes ssh-ed25519)", ErrBadKey, pk.Type())
	}
	return pub, comment, nil
}

// ReadPublicKey reads the public key file at path (see ParsePublicKey).
func ReadPublicKey(path string) (ed25519.PublicKey, string, error) {
	data, err := readSmall(path)
	if err != nil {
		return nil, "", err
	}
	pub, c, err := ParsePublicKey(data)
	if err != nil {
		return nil, "", fmt.Errorf("public key file %s: %w", path, err)
	}
	return pub, c, nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, maxKeyFile+1)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if n > maxKeyFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadKey, path, maxKeyFile)
	}
	return buf[:n], nil
}

// WriteKeyPair writes priv to path (PEM PKCS#8, mode 0600) and its public
// key to path+".pub" (OpenSSH form with comment). It refuses to overwrite
// either file.
func WriteKeyPair(path string, priv ed25519.PrivateKey, comment string) error {
	pemKey, err := EncodePrivateKey(priv)
	if err != nil {
		return err
	}
	pub := engine.AuthorizedKey(priv.Public().(ed25519.PublicKey), comment) + "\n"
	if _, err := os.Stat(path + ".pub"); err == nil {
		return fmt.Errorf("%s already exists; choose another name or remove it", path+".pub")
	}
	if err := writeNew(path, pemKey, 0o600); err != nil {
		return err
	}
	if err := writeNew(path+".pub", []byte(pub), 0o644); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// LoadOrCreateServerKey reads the server key REPODIR/server.key, creating it
// (mode 0600) if it does not exist. A key file with wider permissions is
// refused.
func LoadOrCreateServerKey(repoDir string) (ed25519.PrivateKey, bool, error) {
	path := filepath.Join(repoDir, ServerKeyName)
	st, err := os.Stat(path)
	if err == nil {
		if err := engine.CheckKeyFileMode("server key", path, st); err != nil {
			return nil, false, err
		}
		k, err := ReadPrivateKey(path)
		return k, false, err
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	priv, err := GenerateKey()
	if err != nil {
		return nil, false, err
	}
	data, err := EncodePrivateKey(priv)
	if err != nil {
		return nil, false, err
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	if err := writeNew(tmp, data, 0o600); err != nil {
		return nil, false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, false, err
	}
	if d, err := os.Open(repoDir); err == nil {
		d.Sync()
		d.Close()
	}
	return priv, true, nil
}

// selfSigned makes a throwaway self-signed certificate for priv. Peers pin
// the key, not the certificate, so its fields do not matter beyond being
// valid X.509.
func selfSigned(priv ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// peerKey returns the ed25519 key of the leaf certificate of a connection.
func peerKey(cs tls.ConnectionState) (ed25519.PublicKey, bool) {
	if len(cs.PeerCertificates) == 0 {
		return nil, false
	}
	pub, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	return pub, ok
}

// NormalizeFingerprint trims spaces; fingerprints compare exactly otherwise
// (base64 is case-sensitive).
func NormalizeFingerprint(fp string) string { return strings.TrimSpace(fp) }

// writeNew creates path with mode and data, whole or not at all; an
// existing file is never replaced.
func writeNew(path string, data []byte, mode os.FileMode) error {
	err := durable.CreateNew(path, data, mode)
	if errors.Is(err, durable.ErrExists) {
		return fmt.Errorf("%s already exists; choose another name or remove it", path)
	}
	return err
}
