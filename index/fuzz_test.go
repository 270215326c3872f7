package index

import (
	"bytes"
	"errors"
	"testing"
)

// Every decoder of bytes read from disk is fuzzed: it must not panic, must
// fail only with ErrCorrupt, and what it accepts must re-encode to the same
// bytes (the encodings are canonical).

func FuzzDecodeBlobLoc(f *testing.F) {
	f.Add(appendBlobLoc(nil, BlobLoc{Pack: packID(1), Type: 1, Offset: 4096, Length: 100, RawLength: 90}))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, v []byte) {
		l, err := decodeBlobLoc(v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if re := appendBlobLoc(nil, l); !bytes.Equal(re, v) {
			t.Fatalf("re-encoded %x, want %x", re, v)
		}
	})
}

func FuzzDecodePackRec(f *testing.F) {
	f.Add(appendPackRec(nil, samplePack(packID(1), 4, 2)))
	f.Add(appendPackRec(nil, samplePack(packID(1), 1, 0)))
	f.Add([]byte{1, 4, 2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, v []byte) {
		p, err := decodePackRec(packID(7), v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if err := checkPackRec(p); err != nil {
			t.Fatalf("decoded record fails checkPackRec: %v", err)
		}
		if re := appendPackRec(nil, p); !bytes.Equal(re, v) {
			t.Fatalf("re-encoded %x, want %x", re, v)
		}
	})
}

func FuzzDecodeTenantRec(f *testing.F) {
	f.Add(appendTenantRec(nil, TenantRec{Version: 3, Epoch: 1, Wrapped: pattern(0, 72), Meta: pattern(5, 40)}))
	f.Add(appendTenantRec(nil, TenantRec{}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, v []byte) {
		r, err := decodeTenantRec(tenantID(1), v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if re := appendTenantRec(nil, r); !bytes.Equal(re, v) {
			t.Fatalf("re-encoded %x, want %x", re, v)
		}
	})
}

func FuzzDecodeSnapshotRec(f *testing.F) {
	f.Add(appendSnapshotRec(nil, SnapshotRec{Version: 9, Sealed: pattern(1, 50)}))
	f.Add(appendSnapshotRec(nil, SnapshotRec{}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0x80})
	f.Fuzz(func(t *testing.T, v []byte) {
		s, err := decodeSnapshotRec(snapID(1), v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if re := appendSnapshotRec(nil, s); !bytes.Equal(re, v) {
			t.Fatalf("re-encoded %x, want %x", re, v)
		}
	})
}

func FuzzDecodeForgottenRec(f *testing.F) {
	f.Add(appendForgottenRec(nil, ForgottenRec{Version: 2}))
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		r, err := decodeForgottenRec(snapID(1), v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if re := appendForgottenRec(nil, r); !bytes.Equal(re, v) {
			t.Fatalf("re-encoded %x, want %x", re, v)
		}
	})
}
