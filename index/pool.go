package index

import "sync"

// keyPool recycles blob-key-sized buffers. Pointers to arrays are pooled so
// that put does not allocate. The zero value is ready to use.
type keyPool struct{ p sync.Pool }

func (kp *keyPool) get() *[blobKeyLen]byte {
	if b, ok := kp.p.Get().(*[blobKeyLen]byte); ok {
		return b
	}
	return new([blobKeyLen]byte)
}

func (kp *keyPool) put(b *[blobKeyLen]byte) { kp.p.Put(b) }
