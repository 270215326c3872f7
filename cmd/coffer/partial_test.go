package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPartialBackupExit3: a source file that cannot be read (here
// /proc/self/mem, which fails with EIO even for root, reached through the
// /proc/self symlink) gives exit 3, one line naming it, and a snapshot of the
// rest.
func TestPartialBackupExit3(t *testing.T) {
	if _, err := os.Stat("/proc/self/mem"); err != nil {
		t.Skip("no /proc/self/mem on this system")
	}
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "ok"), []byte("fine"))
	res := r.run(t, nil, "backup", src, "/proc/self/mem")
	if res.code != exitPartial || !strings.Contains(res.stderr, "/proc/self/mem") {
		t.Fatalf("want exit 3 naming the unreadable file:\n%s", res)
	}
	checkErrorLine(t, res)
	if got := r.must(t, nil, "dump", "latest", filepath.Join(src, "ok")); got.stdout != "fine" {
		t.Fatalf("the readable file was not saved: %q", got.stdout)
	}
}
