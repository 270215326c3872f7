package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"coffer/index"
)

// marker is the secret the tenant's data and metadata carry. It must never
// be found in the repository, the index, the logs or temporary files.
const marker = "MARKERc0ffee"

// markerForms are the byte strings that give the marker away: itself, its
// hex, UTF-16 and base64 forms (base64 at the three alignments, since JSON
// encodes []byte that way).
func markerForms() map[string][]byte {
	forms := map[string][]byte{
		"plain":     []byte(marker),
		"hex":       []byte(hex.EncodeToString([]byte(marker))),
		"HEX":       []byte(strings.ToUpper(hex.EncodeToString([]byte(marker)))),
		"lowercase": []byte(strings.ToLower(marker)),
	}
	u := utf16.Encode([]rune(marker))
	le, be := make([]byte, 2*len(u)), make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(le[2*i:], c)
		binary.BigEndian.PutUint16(be[2*i:], c)
	}
	forms["utf16le"], forms["utf16be"] = le, be
	for off := 0; off < 3; off++ {
		in := append(make([]byte, off), marker...)
		for name, enc := range map[string]*base64.Encoding{"base64": base64.StdEncoding, "base64url": base64.URLEncoding} {
			s := enc.EncodeToString(in)
			// Keep the characters whose 6 bits all come from the marker.
			from := (8*off + 5) / 6
			to := 8 * len(in) / 6
			forms[name+"@"+string(rune('0'+off))] = []byte(s[from:to])
		}
	}
	return forms
}

// findMarker returns the names of the marker forms found in data.
func findMarker(data []byte) []string {
	var found []string
	for name, f := range markerForms() {
		if bytes.Contains(data, f) {
			found = append(found, name)
		}
	}
	return found
}

// markerSource builds a source tree that carries the marker in file contents
// (compressible and incompressible), file names, folder names, a symlink's
// name and targets, and a unicode name.
func markerSource(t *testing.T, root string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	// Compressible: zstd shrinks this a lot, so the marker goes through the
	// compressor.
	files["plain.txt"] = bytes.Repeat([]byte("the secret is "+marker+"-compressible, keep it safe\n"), 20000)
	// Incompressible: random bytes with the marker at a few places, so the
	// blob is stored without compression.
	rnd := make([]byte, 600<<10)
	if _, err := rand.Read(rnd); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{0, 1000, 70000, 300000, len(rnd) - len(marker) - 7} {
		copy(rnd[off:], marker+"-random")
	}
	files["random.bin"] = rnd
	files["file-"+marker+".txt"] = []byte("short\n")
	files["dir-"+marker+"/nested-"+marker+"/deep.txt"] = []byte("content " + marker + "-deep\n")
	files["dir-"+marker+"/é-"+marker+"-ü.txt"] = []byte("unicode name\n")
	files["skip-"+marker+"-excluded.tmp"] = []byte("excluded " + marker + "\n")
	for name, data := range files {
		writeFile(t, filepath.Join(root, name), data)
	}
	for link, target := range map[string]string{
		"link-to-nowhere":       "target-" + marker + "-nowhere",
		"link-" + marker:        "plain.txt",
		"dir-" + marker + "/up": "../file-" + marker + ".txt",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "empty-"+marker), 0o755); err != nil {
		t.Fatal(err)
	}
	return files
}

// TestNoPlaintextMarker backs up a tree full of a marker string and checks
// that the marker is nowhere in the repository: raw file bytes (index and
// drives), pebble keys and values, file and folder names, the commands'
// stderr, and temporary files. The restore must give the marker back, which
// shows the search would find it.
func TestNoPlaintextMarker(t *testing.T) {
	base := t.TempDir()
	repoDir := filepath.Join(base, "repo")
	src := filepath.Join(base, "src-"+marker+"-root")
	target := filepath.Join(base, "restore")
	tmp := filepath.Join(base, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	files := markerSource(t, src)
	// Any temporary file the commands make lands in tmp.
	t.Setenv("TMPDIR", tmp)

	tenantName := "t-" + marker
	host := marker + "-host"
	tag := marker + "-tag"
	stdinName := "stdin-" + marker + ".bin"
	stdinData := bytes.Repeat([]byte("stdin "+marker+"-stdin\n"), 5000)
	g := []string{"--repo", repoDir}
	gt := []string{"--repo", repoDir, "--tenant", tenantName}

	var logs []result // stderr of the commands an operator sees (plays the role of logs)
	logs = append(logs, mustCoffer(t, nil, cat(g, "init")...))
	logs = append(logs, mustCoffer(t, nil, cat(g, "tenant", "create", tenantName, "--contact", "ops@example.com")...))
	logs = append(logs, mustCoffer(t, nil, cat(gt, "backup", src, "--host", host, "--tag", tag, "--tag", "second-"+marker, "--exclude", "*"+marker+"-excluded*")...))
	logs = append(logs, mustCoffer(t, bytes.NewReader(stdinData), cat(gt, "backup", "--stdin", "--stdin-filename", stdinName, "--host", host, "--tag", tag)...))
	// A second backup of the same tree (with its parent snapshot).
	logs = append(logs, mustCoffer(t, nil, cat(gt, "backup", src, "--host", host, "--tag", tag, "--exclude", "*"+marker+"-excluded*")...))
	logs = append(logs, mustCoffer(t, nil, cat(g, "tenant", "list")...))
	logs = append(logs, mustCoffer(t, nil, cat(g, "check", "--read-data")...))

	snaps := mustCoffer(t, nil, cat(gt, "snapshots")...)
	if !strings.Contains(snaps.stdout, host) || !strings.Contains(snaps.stdout, tag) {
		t.Errorf("snapshots does not show the host and tag:\n%s", snaps)
	}
	ls := mustCoffer(t, nil, cat(gt, "ls", "latest")...)
	if !strings.Contains(ls.stdout, "file-"+marker+".txt") {
		t.Errorf("ls does not show the file names:\n%s", ls)
	}
	mustCoffer(t, nil, cat(gt, "restore", "latest", "--target", target)...)
	dump := mustCoffer(t, nil, cat(gt, "dump", firstSnapshotWith(t, gt, stdinName), "/"+stdinName)...)

	// The restore gives the marker back: the search below can find it.
	restored := filepath.Join(target, src)
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(restored, name))
		if strings.Contains(name, "-excluded") {
			if err == nil {
				t.Errorf("%s was excluded but restored", name)
			}
			continue
		}
		if err != nil {
			t.Errorf("restored %s: %v", name, err)
		} else if !bytes.Equal(got, data) {
			t.Errorf("restored %s differs", name)
		} else if bytes.Contains(data, []byte(marker)) && len(findMarker(got)) == 0 {
			t.Errorf("restored %s: the search does not find the marker", name)
		}
	}
	if l, err := os.Readlink(filepath.Join(restored, "link-to-nowhere")); err != nil || !strings.Contains(l, marker) {
		t.Errorf("restored symlink target %q, %v", l, err)
	}
	if !bytes.Equal([]byte(dump.stdout), stdinData) {
		t.Errorf("dump of the stdin backup gave %d bytes, want %d", len(dump.stdout), len(stdinData))
	}

	// (a) every file under the repository, read raw; (c) every name.
	nfiles := 0
	err := filepath.WalkDir(repoDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoDir, p)
		if f := findMarker([]byte(d.Name())); len(f) > 0 {
			t.Errorf("name %s holds the marker (%v)", rel, f)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		nfiles++
		if f := findMarker(data); len(f) > 0 {
			t.Errorf("file %s holds the marker (%v)", rel, f)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(shardFiles(t, repoDir)); n == 0 || nfiles < 10 {
		t.Fatalf("searched only %d files (%d shards): did the backups write anything?", nfiles, n)
	}

	// (b) every key and value of the index, read through pebble, so
	// compressed sstable blocks are searched too.
	db, err := index.Open(filepath.Join(repoDir, "index"), index.Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	nkeys := 0
	err = db.Raw(func(k, v []byte) error {
		nkeys++
		if f := findMarker(k); len(f) > 0 {
			t.Errorf("index key %x holds the marker (%v)", k, f)
		}
		if f := findMarker(v); len(f) > 0 {
			t.Errorf("value of index key %x holds the marker (%v)", k, f)
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if nkeys < 5 {
		t.Errorf("the index holds only %d keys: was the right database searched?", nkeys)
	}

	// (d) stderr of the commands.
	for _, r := range logs {
		if f := findMarker([]byte(r.stderr)); len(f) > 0 {
			t.Errorf("stderr holds the marker (%v):\n%s", f, r)
		}
	}

	// (e) temporary files.
	err = filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == tmp {
			return nil
		}
		rel, _ := filepath.Rel(tmp, p)
		t.Logf("temporary entry left: %s", rel)
		if f := findMarker([]byte(d.Name())); len(f) > 0 {
			t.Errorf("temporary entry %s holds the marker in its name", rel)
		}
		if d.Type().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if f := findMarker(data); len(f) > 0 {
				t.Errorf("temporary file %s holds the marker (%v)", rel, f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// firstSnapshotWith returns the ID of the snapshot whose paths include
// "/"+name (the stdin backup).
func firstSnapshotWith(t *testing.T, gt []string, name string) string {
	t.Helper()
	var ss []struct {
		ID    string   `json:"id"`
		Paths []string `json:"paths"`
	}
	decodeJSON(t, mustCoffer(t, nil, cat(gt, "--json", "snapshots")...), &ss)
	for _, s := range ss {
		for _, p := range s.Paths {
			if p == "/"+name {
				return s.ID
			}
		}
	}
	t.Fatalf("no snapshot of /%s among %d", name, len(ss))
	return ""
}

// TestMarkerForms checks that the search finds the marker in each encoding,
// wherever it starts, so a clean result of TestNoPlaintextMarker means
// something.
func TestMarkerForms(t *testing.T) {
	u16 := func(s string, order binary.AppendByteOrder) []byte {
		var b []byte
		for _, c := range utf16.Encode([]rune(s)) {
			b = order.AppendUint16(b, c)
		}
		return b
	}
	for pre := 0; pre < 4; pre++ {
		in := strings.Repeat("x", pre) + "<" + marker + ">"
		for name, enc := range map[string][]byte{
			"plain":     []byte(in),
			"hex":       []byte(hex.EncodeToString([]byte(in))),
			"HEX":       []byte(strings.ToUpper(hex.EncodeToString([]byte(in)))),
			"utf16le":   u16(in, binary.LittleEndian),
			"utf16be":   u16(in, binary.BigEndian),
			"base64":    []byte(base64.StdEncoding.EncodeToString([]byte(in))),
			"base64raw": []byte(base64.RawURLEncoding.EncodeToString([]byte(in))),
		} {
			if len(findMarker(enc)) == 0 {
				t.Errorf("%s form of %q not found", name, in)
			}
		}
	}
	if f := findMarker([]byte("MARKERc0ffe MARKER c0ffee")); len(f) > 0 {
		t.Errorf("false positive: %v", f)
	}
}
