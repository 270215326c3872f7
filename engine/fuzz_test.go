package engine

import (
	"bytes"
	"testing"
)

func FuzzDecodePackHeader(f *testing.F) {
	h := &packHeader{K: 2, M: 1, BlockSize: 4096, DataLen: 100, ShardLen: 50, Hashes: make([][32]byte, 3),
		Blobs: []packBlob{{Type: DataBlob, Length: 60, Raw: 10}, {Type: TreeBlob, Offset: 60, Length: 40, Raw: 5}}}
	f.Add(h.encode())
	f.Add([]byte("CFP1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodePackHeader(b)
		if err != nil {
			return
		}
		if !bytes.Equal(h.encode(), b) {
			t.Fatal("a decoded pack header does not re-encode to the same bytes")
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	k := [KeySize]byte{9}
	f.Add(sealRecord(&k, recSnapshot, 0, 7, [16]byte{1}, "t/x/s/y", []byte(`{"hostname":"h"}`)))
	f.Add((&record{Kind: recConfig, Version: 1, Body: []byte("{}")}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.encode(), b) {
			t.Fatal("a decoded record does not re-encode to the same bytes")
		}
		// Opening must fail cleanly (never panic) for arbitrary bodies.
		_, _ = openRecord(&k, r, [16]byte{1}, "t/x/s/y")
	})
}

func FuzzDecodeMasterKeyFile(f *testing.F) {
	f.Add(encodeMasterKeyFile(newMasterKey([16]byte{1}, 1, [KeySize]byte{2})))
	f.Add([]byte("coffer master key\nversion: 1\n"))
	f.Add(encodeKeyFile(keyFile{cur: newMasterKey([16]byte{1}, 4, [KeySize]byte{2}), next: newMasterKey([16]byte{1}, 5, [KeySize]byte{3})}))
	f.Fuzz(func(t *testing.T, b []byte) {
		kf, err := decodeKeyFile(b)
		if err != nil {
			return
		}
		again, err := decodeKeyFile(encodeKeyFile(kf))
		if err != nil || again.cur.raw != kf.cur.raw || again.cur.epoch != kf.cur.epoch || again.cur.repo != kf.cur.repo || (kf.next == nil) != (again.next == nil) {
			t.Fatal("a decoded key file does not survive re-encoding")
		}
	})
}

func FuzzOpenBlob(f *testing.F) {
	k := [KeySize]byte{3}
	f.Add(sealBlob(&k, [16]byte{}, DataBlob, [32]byte{}, []byte("some data some data some data")))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = openBlob(&k, [16]byte{}, DataBlob, [32]byte{}, b, 64)
	})
}

func TestSealRoundTripAndBinding(t *testing.T) {
	k := [KeySize]byte{5}
	tenant := [16]byte{1}
	for _, plain := range [][]byte{{}, []byte("x"), bytes.Repeat([]byte("compressible "), 1000)} {
		id := [32]byte{byte(len(plain))}
		s := sealBlob(&k, tenant, DataBlob, id, plain)
		got, err := openBlob(&k, tenant, DataBlob, id, s, len(plain))
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("round trip of %d bytes: %v", len(plain), err)
		}
		if len(plain) > 1000 && len(s) >= len(plain) {
			t.Fatalf("compressible blob of %d bytes sealed to %d", len(plain), len(s))
		}
		cases := []struct {
			name   string
			key    [KeySize]byte
			tenant [16]byte
			typ    BlobType
			id     [32]byte
		}{
			{"other key", [KeySize]byte{6}, tenant, DataBlob, id},
			{"other tenant", k, [16]byte{2}, DataBlob, id},
			{"other type", k, tenant, TreeBlob, id},
			{"other id", k, tenant, DataBlob, [32]byte{0xff}},
		}
		for _, c := range cases {
			if _, err := openBlob(&c.key, c.tenant, c.typ, c.id, s, len(plain)); err == nil {
				t.Errorf("%s: opened", c.name)
			}
		}
		s[len(s)-1] ^= 1
		if _, err := openBlob(&k, tenant, DataBlob, id, s, len(plain)); err == nil {
			t.Error("flipped tag: opened")
		}
	}
}

func TestRecordVersionIsAuthenticated(t *testing.T) {
	k := [KeySize]byte{7}
	b := sealRecord(&k, recSnapshot, 0, 3, [16]byte{1}, "t/a/s/b", []byte("{}"))
	b[6] = 9 // claim a higher version
	r, err := decodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openRecord(&k, r, [16]byte{1}, "t/a/s/b"); err == nil {
		t.Fatal("a record relabelled with a higher version opened")
	}
}
