package repo_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/zeebo/blake3"

	"coffer/repo"
)

func sampleHeader() repo.ShardHeader {
	id, _ := repo.ParsePackID("00112233445566778899aabbccddeeff")
	return repo.ShardHeader{Index: 1, K: 4, M: 2, Pack: id, BlockSize: 4096, DataLen: 50000, ShardLen: 12500, TrailerLen: 7}
}

func sampleShardFile(t testing.TB) []byte {
	t.Helper()
	h := sampleHeader()
	f, err := repo.EncodeShardFile(h, randBytes(1, int(h.ShardLen)), []byte("trailer"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestShardHeaderRoundTrip(t *testing.T) {
	h := sampleHeader()
	data := randBytes(1, int(h.ShardLen))
	f := sampleShardFile(t)
	if int64(len(f)) != h.FileSize() {
		t.Fatalf("file of %d bytes, FileSize says %d", len(f), h.FileSize())
	}
	got, crcs, err := repo.DecodeShardHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	if got != h {
		t.Errorf("decoded %+v, want %+v", got, h)
	}
	if len(crcs) != 4 || h.Blocks() != 4 || h.DataOffset() != 52+16+4 {
		t.Errorf("%d CRCs, %d blocks, data at %d", len(crcs), h.Blocks(), h.DataOffset())
	}
	for j, c := range crcs {
		block := data[j*4096 : min((j+1)*4096, len(data))]
		if want := crc32.Checksum(block, crc32.MakeTable(crc32.Castagnoli)); c != want {
			t.Errorf("CRC of block %d = %08x, want %08x", j, c, want)
		}
	}
	if !bytes.Equal(f[h.DataOffset():h.TrailerOffset()], data) || string(f[h.TrailerOffset():]) != "trailer" {
		t.Error("data or trailer not where the header says")
	}
	// The decoder reads only the header and table.
	if _, _, err := repo.DecodeShardHeader(f[:h.DataOffset()]); err != nil {
		t.Errorf("decode of header and table only: %v", err)
	}
}

// withCRC recomputes the header CRC (and table CRC) after a field was changed, so
// that the field check itself is exercised.
func withCRC(b []byte) []byte {
	c := crc32.MakeTable(crc32.Castagnoli)
	binary.LittleEndian.PutUint32(b[48:], crc32.Checksum(b[:48], c))
	return b
}

func TestDecodeShardHeaderRejects(t *testing.T) {
	put32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return withCRC(b) }
	}
	put64 := func(off int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint64(b[off:], v); return withCRC(b) }
	}
	setByte := func(off int, v byte) func([]byte) []byte {
		return func(b []byte) []byte { b[off] = v; return withCRC(b) }
	}
	tests := []struct {
		name   string
		mutate func([]byte) []byte
	}{
		{"empty", func(b []byte) []byte { return nil }},
		{"short header", func(b []byte) []byte { return b[:51] }},
		{"no table", func(b []byte) []byte { return b[:52] }},
		{"short table", func(b []byte) []byte { return b[:52+4*4+3] }},
		{"bad magic", setByte(0, 'X')},
		{"version 0", setByte(4, 0)},
		{"version 2", setByte(4, 2)},
		{"header CRC", func(b []byte) []byte { b[10] ^= 1; return b }},
		{"stored CRC", func(b []byte) []byte { b[49] ^= 1; return b }},
		{"k = 0", setByte(6, 0)},
		{"k+m = 256", func(b []byte) []byte { b[6], b[7] = 200, 56; return withCRC(b) }},
		{"index = k+m", setByte(5, 6)},
		{"block size not a power of two", put32(24, 5000)},
		{"block size too small", put32(24, 2048)},
		{"block size too big", put32(24, 32<<20)},
		{"block size huge", put32(24, 0xffffffff)},
		{"L = 0", put64(28, 0)},
		{"L too big", put64(28, 1<<30+1)},
		{"L overflows", put64(28, 1<<63)},
		{"S wrong", put64(36, 12501)},
		{"S overflows", put64(36, 0xffffffffffffffff)},
		{"T too big", put32(44, 1<<30+1)},
		{"table entry", func(b []byte) []byte { b[53] ^= 1; return b }},
		{"table CRC", func(b []byte) []byte { b[52+16] ^= 1; return b }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(sampleShardFile(t))
			_, _, err := repo.DecodeShardHeader(b)
			if !errors.Is(err, repo.ErrCorrupt) {
				t.Errorf("DecodeShardHeader = %v, want ErrCorrupt", err)
			}
		})
	}
}

func FuzzDecodeShardHeader(f *testing.F) {
	f.Add(sampleShardFile(f))
	f.Add(sampleShardFile(f)[:60])
	f.Add(docExample(f, "shard-header"))
	f.Add([]byte("CFS1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, crcs, err := repo.DecodeShardHeader(b)
		if err != nil {
			if !errors.Is(err, repo.ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if len(crcs) != h.Blocks() || int64(len(b)) < h.DataOffset() {
			t.Fatalf("accepted %+v with %d CRCs from %d bytes", h, len(crcs), len(b))
		}
		// What decodes must re-encode to the same prefix.
		if h.ShardLen > 1<<20 || h.TrailerLen > 1<<20 {
			return
		}
		data := make([]byte, h.ShardLen)
		copy(data, b[min(int64(len(b)), h.DataOffset()):])
		enc, err := repo.EncodeShardFile(h, data, make([]byte, h.TrailerLen))
		if err != nil {
			t.Fatalf("re-encode %+v: %v", h, err)
		}
		if !bytes.Equal(enc[:repo.FixedHeaderLen], b[:repo.FixedHeaderLen]) {
			t.Fatalf("fixed header does not round-trip")
		}
	})
}

func TestEncodeShapes(t *testing.T) {
	tests := []struct {
		k, m, l int
		wantErr bool
	}{
		{4, 2, 1, false}, {4, 2, 3, false}, {4, 2, 4097, false}, {1, 0, 10, false}, {1, 1, 10, false},
		{10, 4, 12345, false}, {200, 55, 1000, false},
		{4, 2, 0, true}, {0, 2, 10, true}, {4, -1, 10, true}, {200, 56, 10, true},
	}
	for _, tc := range tests {
		data := randBytes(uint64(tc.l), tc.l)
		enc, err := repo.Encode(tc.k, tc.m, data)
		if tc.wantErr {
			if err == nil {
				t.Errorf("Encode(%d, %d, %d bytes) succeeded", tc.k, tc.m, tc.l)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Encode(%d, %d, %d bytes): %v", tc.k, tc.m, tc.l, err)
		}
		s := (tc.l + tc.k - 1) / tc.k
		if enc.ShardLen != int64(s) || enc.DataLen != int64(tc.l) || len(enc.Shards) != tc.k+tc.m || len(enc.Hashes) != tc.k+tc.m {
			t.Fatalf("Encode(%d, %d, %d bytes): S=%d L=%d %d shards", tc.k, tc.m, tc.l, enc.ShardLen, enc.DataLen, len(enc.Shards))
		}
		joined := bytes.Join(enc.Shards[:tc.k], nil)
		if !bytes.Equal(joined[:tc.l], data) || bytes.Count(joined[tc.l:], []byte{0}) != len(joined)-tc.l {
			t.Errorf("data shards are not the zero-padded pack")
		}
		for i, sh := range enc.Shards {
			if len(sh) != s || enc.Hashes[i] != repo.Hash(blake3.Sum256(sh)) {
				t.Errorf("shard %d: %d bytes or wrong hash", i, len(sh))
			}
		}
		data[0] ^= 1
		if enc.Shards[0][0] == data[0] {
			t.Error("Encode retained the caller's data")
		}
	}
	if _, err := repo.Encode(4, 2, nil); !errors.Is(err, repo.ErrEmptyPack) {
		t.Errorf("Encode of an empty pack = %v, want ErrEmptyPack", err)
	}
}

// docsDir finds the project's docs folder from the package folder.
func docsDir(t testing.TB) string {
	t.Helper()
	for _, d := range []string{"../docs", "../../docs"} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
	}
	t.Fatal("no docs folder at ../docs or ../../docs")
	return ""
}

// docBlocks returns the bodies of every fenced block with info string
// "<lang> example=<name>" in the Markdown files under docs.
func docBlocks(t testing.TB, lang, name string) []string {
	t.Helper()
	re := regexp.MustCompile("(?ms)^```" + regexp.QuoteMeta(lang) + `\s+example=` + regexp.QuoteMeta(name) + "\\s*\n(.*?)^```")
	var out []string
	err := filepath.WalkDir(docsDir(t), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".md") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			out = append(out, string(m[1]))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("no ```%s example=%s block in the docs", lang, name)
	}
	return out
}

// docExample decodes the single hex example called name ('#' starts a comment).
func docExample(t testing.TB, name string) []byte {
	t.Helper()
	blocks := docBlocks(t, "hex", name)
	if len(blocks) != 1 {
		t.Fatalf("%d hex examples called %s, want 1", len(blocks), name)
	}
	var digits strings.Builder
	for line := range strings.SplitSeq(blocks[0], "\n") {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("hex example %s: %v", name, err)
	}
	return b
}

func TestDocExamples(t *testing.T) {
	t.Run("shard-header", func(t *testing.T) {
		b := docExample(t, "shard-header")
		h, crcs, err := repo.DecodeShardHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := repo.ParsePackID("00112233445566778899aabbccddeeff")
		want := repo.ShardHeader{Index: 0, K: 2, M: 1, Pack: id, BlockSize: 4096, DataLen: 10, ShardLen: 5, TrailerLen: 4}
		if h != want {
			t.Errorf("decoded %+v, want %+v", h, want)
		}
		if len(crcs) != 1 || crcs[0] != 0x9a71bb4c {
			t.Errorf("block table %x", crcs)
		}
		if int64(len(b)) != h.FileSize() {
			t.Fatalf("example is %d bytes, header says the file is %d", len(b), h.FileSize())
		}
		data, trailer := b[h.DataOffset():h.TrailerOffset()], b[h.TrailerOffset():]
		if string(data) != "hello" || string(trailer) != "TRLR" {
			t.Errorf("data %q, trailer %q", data, trailer)
		}
		// The example is exactly what the encoder writes for shard 0 of that pack.
		enc, err := repo.Encode(2, 1, []byte("helloworld"))
		if err != nil {
			t.Fatal(err)
		}
		file, err := repo.EncodeShardFile(want, enc.Shards[0], []byte("TRLR"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(file, b) {
			t.Errorf("encoder writes\n%x\nthe document shows\n%x", file, b)
		}
		if got := enc.Hashes[0].String(); got != "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f" {
			t.Errorf("hash of shard 0 is %s", got)
		}
		if !bytes.Equal(enc.Shards[2], []byte{0x56, 0x71, 0x50, 0x6c, 0x79}) {
			t.Errorf("parity shard is %x, the document says 5671506c79", enc.Shards[2])
		}
	})
	t.Run("drive-identity", func(t *testing.T) {
		for _, b := range docBlocks(t, "json", "drive-identity") {
			id, err := repo.DecodeIdentity([]byte(b))
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(id.Repository[:]) != "00112233445566778899aabbccddeeff" || id.Drive.String() != "0123456789abcdef" || id.Rack != "r1" {
				t.Errorf("decoded %+v", id)
			}
			enc, err := repo.EncodeIdentity(id)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(enc)) != strings.TrimSpace(b) {
				t.Errorf("encoder writes %s, the document shows %s", enc, b)
			}
		}
	})
}

// EncodeInPlace and EncodeWithParity give the same shards and hashes as
// Encode, for several pack lengths (padding or none), and leave the data.
func TestEncodeInPlaceAndWithParity(t *testing.T) {
	const k, m = 4, 2
	var parity []byte
	for _, n := range []int{1, 3, 4, 5, 1000, 64<<10 + 3, 1 << 20} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + n)
		}
		want, err := repo.Encode(k, m, data)
		if err != nil {
			t.Fatal(err)
		}
		inPlace := make([]byte, n, repo.EncodedCap(k, m, n))
		copy(inPlace, data)
		got1, err := repo.EncodeInPlace(k, m, inPlace)
		if err != nil {
			t.Fatal(err)
		}
		sep := make([]byte, n, repo.DataShardsCap(k, n))
		copy(sep, data)
		got2, p2, err := repo.EncodeWithParity(k, m, sep, parity)
		if err != nil {
			t.Fatal(err)
		}
		parity = p2                                 // reused (and grown) across lengths
		small := append([]byte(nil), data...)[:n:n] // no room for padding: falls back to Encode
		got3, _, err := repo.EncodeWithParity(k, m, small, nil)
		if err != nil {
			t.Fatal(err)
		}
		for name, got := range map[string]*repo.Encoded{"in place": got1, "with parity": got2, "fallback": got3} {
			if got.DataLen != want.DataLen || got.ShardLen != want.ShardLen || len(got.Shards) != k+m {
				t.Fatalf("n=%d %s: lengths %d/%d/%d, want %d/%d/%d", n, name, got.DataLen, got.ShardLen, len(got.Shards), want.DataLen, want.ShardLen, k+m)
			}
			for i := range want.Shards {
				if !bytes.Equal(got.Shards[i], want.Shards[i]) || got.Hashes[i] != want.Hashes[i] {
					t.Fatalf("n=%d %s: shard %d differs", n, name, i)
				}
			}
		}
		if !bytes.Equal(sep[:n], data) || !bytes.Equal(inPlace[:n], data) {
			t.Fatalf("n=%d: pack data changed", n)
		}
	}
}
