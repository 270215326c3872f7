package engine

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docExample returns the bytes of the fenced block "```hex example=NAME" (or
// "```text example=NAME") in any Markdown file under docs/.
func docExample(t *testing.T, name string) []byte {
	t.Helper()
	var found []byte
	re := regexp.MustCompile("(?s)```(hex|text) example=" + regexp.QuoteMeta(name) + "\n(.*?)```")
	err := filepath.Walk("../docs", func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || !strings.HasSuffix(p, ".md") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		m := re.FindSubmatch(b)
		if m == nil {
			return nil
		}
		if string(m[1]) == "text" {
			found = m[2]
			return nil
		}
		var hx strings.Builder
		for _, line := range strings.Split(string(m[2]), "\n") {
			if i := strings.Index(line, "#"); i >= 0 {
				line = line[:i]
			}
			hx.WriteString(strings.Join(strings.Fields(line), ""))
		}
		found, err = hex.DecodeString(hx.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == nil {
		t.Fatalf("no example %q in docs/", name)
	}
	return found
}

// The fixed keys of the documented examples.
var (
	docTenant = [16]byte{0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11}
	docTK     = [KeySize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
)

func docKeys(t *testing.T) *tenantKeys {
	t.Helper()
	k, err := deriveTenantKeys(docTenant, &docTK)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDocMasterKeyFile(t *testing.T) {
	mk, err := decodeMasterKeyFile(docExample(t, "master-key-file"))
	if err != nil {
		t.Fatal(err)
	}
	if mk.epoch != 3 || mk.repo[0] != 0xab || mk.raw[0] != 0x00 || mk.raw[31] != 0x1f {
		t.Fatalf("decoded %+v", mk)
	}
	if got := encodeMasterKeyFile(mk); !bytes.Equal(got, docExample(t, "master-key-file")) {
		t.Fatalf("re-encoding differs:\n%s", got)
	}
}

func TestDocSealedBlob(t *testing.T) {
	k := docKeys(t)
	sealed := docExample(t, "sealed-blob")
	plain := []byte("hello, coffer\n")
	id := k.ids.Sum(plain)
	got, err := openBlob(&k.data, docTenant, DataBlob, id, sealed, len(plain))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatalf("opened %q", got)
	}
	// The same bytes under another type or ID must not open.
	if _, err := openBlob(&k.data, docTenant, TreeBlob, id, sealed, len(plain)); err == nil {
		t.Fatal("a data blob opened as a tree blob")
	}
}

func TestDocPackHeader(t *testing.T) {
	h, err := decodePackHeader(docExample(t, "pack-header"))
	if err != nil {
		t.Fatal(err)
	}
	if h.Tenant != docTenant || h.K != 4 || h.M != 2 || h.DataLen != 200 || h.ShardLen != 50 || h.Created != 1795000000 || len(h.Hashes) != 6 || len(h.Blobs) != 2 {
		t.Fatalf("decoded %+v", h)
	}
	if h.Blobs[0].Type != DataBlob || h.Blobs[0].Length != 120 || h.Blobs[1].Type != TreeBlob || h.Blobs[1].Offset != 120 {
		t.Fatalf("blobs %+v", h.Blobs)
	}
	if !bytes.Equal(h.encode(), docExample(t, "pack-header")) {
		t.Fatal("re-encoding differs")
	}
}

func TestDocSnapshotRecord(t *testing.T) {
	k := docKeys(t)
	r, err := decodeRecord(docExample(t, "snapshot-record"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != recSnapshot || r.Version != 1 || r.tombstone() {
		t.Fatalf("envelope %+v", r)
	}
	var sid [16]byte
	sid[0] = 0x22
	body, err := openRecord(&k.meta, r, docTenant, snapshotRecordName(docTenant, sid))
	if err != nil {
		t.Fatal(err)
	}
	var s Snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatal(err)
	}
	if s.Host != "web1" || len(s.Paths) != 1 || s.Paths[0] != "/srv/www" {
		t.Fatalf("snapshot %+v", s)
	}
}

// TestPrintDocExamples prints fresh examples for docs/design.md when
// COFFER_PRINT_DOC_EXAMPLES is set (nonces are random, so each run differs).
func TestPrintDocExamples(t *testing.T) {
	if os.Getenv("COFFER_PRINT_DOC_EXAMPLES") == "" {
		t.Skip("set COFFER_PRINT_DOC_EXAMPLES=1 to print the examples of docs/design.md")
	}
	k := docKeys(t)
	var repo [16]byte
	repo[0] = 0xab
	var raw [KeySize]byte
	for i := range raw {
		raw[i] = byte(i)
	}
	fmt.Printf("master-key-file:\n%s\n", encodeMasterKeyFile(newMasterKey(repo, 3, raw)))
	plain := []byte("hello, coffer\n")
	id := k.ids.Sum(plain)
	fmt.Printf("content ID: %x\nsealed-blob:\n%s\n", id[:], hexLines(sealBlob(&k.data, docTenant, DataBlob, id, plain)))
	h := &packHeader{Tenant: docTenant, K: 4, M: 2, BlockSize: 65536, DataLen: 200, ShardLen: 50, Created: 1795000000}
	h.Pack[0] = 0x33
	for i := 0; i < 6; i++ {
		var x [32]byte
		x[0] = byte(0xa0 + i)
		h.Hashes = append(h.Hashes, x)
	}
	var b1, b2 [32]byte
	b1[0], b2[0] = 0xd1, 0xd2
	h.Blobs = []packBlob{{Type: DataBlob, ID: b1, Offset: 0, Length: 120, Raw: 100}, {Type: TreeBlob, ID: b2, Offset: 120, Length: 80, Raw: 60}}
	fmt.Printf("pack-header:\n%s\n", hexLines(h.encode()))
	var sid [16]byte
	sid[0] = 0x22
	body, _ := json.Marshal(&Snapshot{Host: "web1", Paths: []string{"/srv/www"}, Tree: strings.Repeat("ab", 32)})
	fmt.Printf("snapshot-record:\n%s\n", hexLines(sealRecord(&k.meta, recSnapshot, 0, 1, docTenant, snapshotRecordName(docTenant, sid), body)))
}

func hexLines(b []byte) string {
	var s strings.Builder
	for i := 0; i < len(b); i += 16 {
		end := min(i+16, len(b))
		for j := i; j < end; j++ {
			fmt.Fprintf(&s, "%02x ", b[j])
		}
		s.WriteString("\n")
	}
	return s.String()
}
