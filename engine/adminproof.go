package engine

import (
	"crypto/hmac"
	"crypto/sha256"
)

// The admin socket of coffer serve runs operator commands in the server's
// process. Its file mode (0600) keeps other users out; on top of that the
// operator proves to hold the master key, without sending it: the server
// sends a random nonce and the operator answers with an HMAC-SHA256 of it
// under a key derived from the master key (label coffer/v1/mk/socket).

// AdminProofs answers an admin socket's nonce with the master key file of
// the repository in dir (keyFile, or DIR/master.key when empty): one answer
// per epoch the file holds (two during a master-key rotation). Errors are
// those of opening the repository with that file (ErrNoMasterKey,
// ErrBadKeyFile).
func AdminProofs(dir, keyFile string, nonce []byte) ([][]byte, error) {
	if keyFile == "" {
		keyFile = defaultKeyFile(dir)
	}
	kf, err := readKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	out := [][]byte{kf.cur.socketProof(nonce)}
	if kf.next != nil {
		out = append(out, kf.next.socketProof(nonce))
	}
	return out, nil
}

// CheckAdminProof reports whether proof answers nonce under the
// repository's master key (the current epoch, or the next one while a
// rotation is in progress).
func (e *Engine) CheckAdminProof(nonce, proof []byte) bool {
	e.mu.Lock()
	keys := []*masterKey{e.mk, e.mkNext}
	e.mu.Unlock()
	ok := false
	for _, mk := range keys {
		if mk != nil && hmac.Equal(mk.socketProof(nonce), proof) {
			ok = true
		}
	}
	return ok
}

func (mk *masterKey) socketProof(nonce []byte) []byte {
	var k [KeySize]byte
	deriveKey(mk.raw[:], mk.repo[:], labelSocket, k[:])
	m := hmac.New(sha256.New, k[:])
	m.Write(nonce)
	return m.Sum(nil)
}
