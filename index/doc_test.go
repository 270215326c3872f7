package index

import (
	"bytes"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// docExamples returns the decoded bytes of every fenced block with info
// string "hex example=NAME" in the Markdown files under ../docs. Whitespace
// is ignored and '#' starts a comment that runs to the end of the line.
func docExamples(t *testing.T, name string) [][]byte {
	t.Helper()
	re := regexp.MustCompile("(?s)```hex example=" + regexp.QuoteMeta(name) + "[ \t]*\n(.*?)```")
	var out [][]byte
	err := filepath.WalkDir(filepath.Join("..", "docs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".md") {
			return err
		}
		text, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllSubmatch(text, -1) {
			var digits strings.Builder
			for _, line := range strings.Split(string(m[1]), "\n") {
				line, _, _ = strings.Cut(line, "#")
				digits.WriteString(strings.Join(strings.Fields(line), ""))
			}
			b, err := hex.DecodeString(digits.String())
			if err != nil {
				t.Errorf("%s: example %s: %v", path, name, err)
				continue
			}
			out = append(out, b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading docs: %v", err)
	}
	if len(out) == 0 {
		t.Fatalf("no ```hex example=%s block under ../docs", name)
	}
	return out
}

// Records printed in docs/design.md.
var (
	docTenant = TenantID(pattern(0x10, 16))
	docBlobID = BlobID(pattern(0x20, 32))
	docPackID = PackID(pattern(0x40, 16))

	docBlobLoc = BlobLoc{Pack: docPackID, Type: DataBlob, Offset: 4096, Length: 65580, RawLength: 65536}

	docPackRec = func() PackRec {
		p := PackRec{
			ID: docPackID, K: 4, M: 2, BlockSize: 65536,
			DataLen: 16790000, ShardLen: 4197500, Blobs: 812, Created: 1767225600,
		}
		for i := range 6 {
			p.Drives = append(p.Drives, DriveID(bytes.Repeat([]byte{0xd1 + byte(i)}, 8)))
			p.Hashes = append(p.Hashes, Hash(bytes.Repeat([]byte{0xa1 + byte(i)}, 32)))
		}
		return p
	}()

	docTenantRec = TenantRec{ID: docTenant, Version: 3, Epoch: 1, Wrapped: pattern(0x80, 72), Meta: pattern(0x00, 40)}

	docForgotten = ForgottenRec{ID: SnapshotID(pattern(0x60, 16)), Version: 2}
)

func TestDocExamples(t *testing.T) {
	tests := []struct {
		name   string
		key    []byte
		value  []byte
		decode func(t *testing.T, key, value []byte)
	}{
		{"index-blobloc", blobKey(docTenant, docBlobID), appendBlobLoc(nil, docBlobLoc),
			func(t *testing.T, key, value []byte) {
				if key[0] != kindBlob || TenantID(key[1:17]) != docTenant || BlobID(key[17:]) != docBlobID {
					t.Errorf("key %x does not name the tenant and blob", key)
				}
				got, err := decodeBlobLoc(value)
				if err != nil || got != docBlobLoc {
					t.Errorf("decoded %+v, %v; want %+v", got, err, docBlobLoc)
				}
			}},
		{"index-packrec", packKey(docTenant, docPackID), appendPackRec(nil, docPackRec),
			func(t *testing.T, key, value []byte) {
				if key[0] != kindPack || TenantID(key[1:17]) != docTenant {
					t.Errorf("key %x does not name the tenant", key)
				}
				got, err := decodePackRec(PackID(key[17:]), value)
				if err != nil || !reflect.DeepEqual(got, docPackRec) {
					t.Errorf("decoded %+v, %v; want %+v", got, err, docPackRec)
				}
			}},
		{"index-tenantrec", tenantKey(docTenant), appendTenantRec(nil, docTenantRec),
			func(t *testing.T, key, value []byte) {
				if key[0] != kindTenant {
					t.Errorf("key %x is not a tenant key", key)
				}
				got, err := decodeTenantRec(TenantID(key[1:]), value)
				if err != nil || !reflect.DeepEqual(got, docTenantRec) {
					t.Errorf("decoded %+v, %v; want %+v", got, err, docTenantRec)
				}
			}},
		{"index-forgotten", forgottenKey(docTenant, docForgotten.ID), appendForgottenRec(nil, docForgotten),
			func(t *testing.T, key, value []byte) {
				if key[0] != kindForgot || TenantID(key[1:17]) != docTenant {
					t.Errorf("key %x does not name the tenant", key)
				}
				got, err := decodeForgottenRec(SnapshotID(key[17:]), value)
				if err != nil || got != docForgotten {
					t.Errorf("decoded %+v, %v; want %+v", got, err, docForgotten)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := append(bytes.Clone(tc.key), tc.value...)
			for _, ex := range docExamples(t, tc.name) {
				// Each example is the key followed by the value; keys of
				// these kinds have a fixed length.
				if len(ex) < len(tc.key) {
					t.Fatalf("example of %d bytes is shorter than a key", len(ex))
				}
				tc.decode(t, ex[:len(tc.key)], ex[len(tc.key):])
				if !bytes.Equal(ex, want) {
					t.Errorf("example differs from the encoder's output:\n got  %x\n want %x", ex, want)
				}
			}
		})
	}
}
