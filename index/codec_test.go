package index

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestBlobLocRoundTrip(t *testing.T) {
	for _, l := range []BlobLoc{
		{},
		{Pack: packID(1), Type: DataBlob, Offset: 4096, Length: 65580, RawLength: 65536},
		{Pack: packID(0xf0), Type: 0xff, Offset: ^uint32(0), Length: ^uint32(0), RawLength: ^uint32(0)},
	} {
		v := appendBlobLoc(nil, l)
		if len(v) != blobLocLen {
			t.Fatalf("encoded length %d, want %d", len(v), blobLocLen)
		}
		got, err := decodeBlobLoc(v)
		if err != nil || got != l {
			t.Fatalf("decode(%x) = %+v, %v; want %+v", v, got, err, l)
		}
	}
}

func TestPackRecRoundTrip(t *testing.T) {
	for _, p := range []PackRec{
		samplePack(packID(1), 4, 2),
		samplePack(packID(2), 1, 0),
		samplePack(packID(3), 17, 3),
		func() PackRec { p := samplePack(packID(4), 2, 1); p.Created = -5; return p }(),
	} {
		if err := checkPackRec(p); err != nil {
			t.Fatal(err)
		}
		v := appendPackRec(nil, p)
		got, err := decodePackRec(p.ID, v)
		if err != nil || !reflect.DeepEqual(got, p) {
			t.Fatalf("decode = %+v, %v; want %+v", got, err, p)
		}
	}
}

func TestTenantRecRoundTrip(t *testing.T) {
	for _, r := range []TenantRec{
		{ID: tenantID(1)},
		{ID: tenantID(2), Version: 7, Epoch: 3, Wrapped: pattern(0xa0, 72)},
		{ID: tenantID(3), Version: ^uint64(0), Epoch: ^uint32(0), Wrapped: pattern(0, 72), Meta: pattern(9, 300)},
	} {
		v := appendTenantRec(nil, r)
		got, err := decodeTenantRec(r.ID, v)
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("decode = %+v, %v; want %+v", got, err, r)
		}
	}
}

func TestSnapshotRecRoundTrip(t *testing.T) {
	for _, s := range []SnapshotRec{
		{ID: snapID(1)},
		{ID: snapID(2), Version: 1, Sealed: pattern(3, 200)},
	} {
		v := appendSnapshotRec(nil, s)
		got, err := decodeSnapshotRec(s.ID, v)
		if err != nil || !reflect.DeepEqual(got, s) {
			t.Fatalf("decode = %+v, %v; want %+v", got, err, s)
		}
	}
}

// TestDecodeCorrupt checks that malformed values are rejected with ErrCorrupt.
func TestDecodeCorrupt(t *testing.T) {
	blob := appendBlobLoc(nil, BlobLoc{Pack: packID(1), Type: 1, Offset: 1, Length: 2, RawLength: 3})
	pack := appendPackRec(nil, samplePack(packID(1), 4, 2))
	tenant := appendTenantRec(nil, TenantRec{Version: 1, Epoch: 1, Wrapped: pattern(0, 72), Meta: pattern(1, 10)})
	snap := appendSnapshotRec(nil, SnapshotRec{Version: 1, Sealed: pattern(1, 10)})
	with := func(v []byte, i int, b byte) []byte {
		c := bytes.Clone(v)
		c[i] = b
		return c
	}
	decBlob := func(v []byte) error { _, err := decodeBlobLoc(v); return err }
	decPack := func(v []byte) error { _, err := decodePackRec(PackID{}, v); return err }
	decTenant := func(v []byte) error { _, err := decodeTenantRec(TenantID{}, v); return err }
	decSnap := func(v []byte) error { _, err := decodeSnapshotRec(SnapshotID{}, v); return err }
	tests := []struct {
		name string
		dec  func([]byte) error
		v    []byte
	}{
		{"blob empty", decBlob, nil},
		{"blob short", decBlob, blob[:len(blob)-1]},
		{"blob long", decBlob, append(bytes.Clone(blob), 0)},
		{"blob version 0", decBlob, with(blob, 0, 0)},
		{"blob version 2", decBlob, with(blob, 0, 2)},
		{"pack empty", decPack, nil},
		{"pack fixed part only", decPack, pack[:packRecFixedLen]},
		{"pack short", decPack, pack[:len(pack)-1]},
		{"pack long", decPack, append(bytes.Clone(pack), 0)},
		{"pack version", decPack, with(pack, 0, 9)},
		{"pack k=0", decPack, with(pack, 1, 0)},
		{"pack m too big", decPack, with(pack, 2, 3)},
		{"tenant empty", decTenant, nil},
		{"tenant version", decTenant, with(tenant, 0, 0)},
		{"tenant truncated", decTenant, tenant[:len(tenant)-1]},
		{"tenant trailing", decTenant, append(bytes.Clone(tenant), 0)},
		{"tenant wrapped overruns", decTenant, with(tenant, 13, 0x7f)},
		{"tenant bad varint", decTenant, append(bytes.Clone(tenant[:13]), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)},
		{"tenant huge length", decTenant, append(bytes.Clone(tenant[:13]), 0xff, 0xff, 0xff, 0xff, 0x0f, 0)},
		{"snapshot empty", decSnap, nil},
		{"snapshot version", decSnap, with(snap, 0, 2)},
		{"snapshot truncated", decSnap, snap[:len(snap)-1]},
		{"snapshot trailing", decSnap, append(bytes.Clone(snap), 1)},
		{"snapshot no length", decSnap, snap[:9]},
		{"snapshot long-form length", decSnap, append(bytes.Clone(snap[:9]), 0x80, 0x00)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.dec(tc.v); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode(%x) = %v, want ErrCorrupt", tc.v, err)
			}
		})
	}
}

func TestCheckPackRec(t *testing.T) {
	good := samplePack(packID(1), 4, 2)
	tests := []struct {
		name string
		mod  func(p *PackRec)
	}{
		{"k zero", func(p *PackRec) { p.K = 0; p.M = 6 }},
		{"too few drives", func(p *PackRec) { p.Drives = p.Drives[:5] }},
		{"too many hashes", func(p *PackRec) { p.Hashes = append(p.Hashes, Hash{}) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := samplePack(good.ID, 4, 2)
			tc.mod(&p)
			if err := checkPackRec(p); !errors.Is(err, ErrInvalid) {
				t.Fatalf("checkPackRec = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestSuccessor(t *testing.T) {
	tests := []struct{ in, want []byte }{
		{[]byte{0x04, 0x00}, []byte{0x04, 0x01}},
		{[]byte{0x04, 0x00, 0xff}, []byte{0x04, 0x01}},
		{[]byte{0x04, 0xff, 0xff}, []byte{0x05}},
		{[]byte{0x07}, []byte{0x08}},
	}
	for _, tc := range tests {
		if got := successor(tc.in); !bytes.Equal(got, tc.want) {
			t.Errorf("successor(%x) = %x, want %x", tc.in, got, tc.want)
		}
	}
}

func TestIDStringAndParse(t *testing.T) {
	id := tenantID(0xab, 0x01)
	s := id.String()
	if s != "0000000000000000000000000000ab01" {
		t.Fatalf("String = %q", s)
	}
	got, err := ParseTenantID(s)
	if err != nil || got != id {
		t.Fatalf("ParseTenantID = %v, %v", got, err)
	}
	if _, err := ParseTenantID(s[:30]); err == nil {
		t.Fatal("short tenant ID parsed")
	}
	if _, err := ParseBlobID(blobID(1).String()); err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePackID("zz" + packID(1).String()[2:]); err == nil {
		t.Fatal("non-hex pack ID parsed")
	}
	if h, err := ParseHash(Hash{1}.String()); err != nil || h != (Hash{1}) {
		t.Fatal(h, err)
	}
	if d, err := ParseDriveID("0102030405060708"); err != nil || d.String() != "0102030405060708" {
		t.Fatal(d, err)
	}
	if s, err := ParseSnapshotID(snapID(4).String()); err != nil || s != snapID(4) {
		t.Fatal(s, err)
	}
}
