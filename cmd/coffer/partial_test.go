package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPartialBackupExit3: source files that cannot be read (here
// /proc/self/mem, which fails with EIO even for root, reached through the
// /proc/self symlink, and /proc/self/clear_refs), and a source path that does
// not exist, give exit 3, a warning line naming each, the error line last,
// and a snapshot of the rest.
func TestPartialBackupExit3(t *testing.T) {
	if _, err := os.Stat("/proc/self/mem"); err != nil {
		t.Skip("no /proc/self/mem on this system")
	}
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "ok"), []byte("fine"))
	missing := filepath.Join(t.TempDir(), "gone")
	res := r.run(t, nil, "backup", src, "/proc/self/mem", missing, "/proc/self/clear_refs")
	if res.code != exitPartial {
		t.Fatalf("want exit 3:\n%s", res)
	}
	lines := strings.Split(strings.TrimSuffix(res.stderr, "\n"), "\n")
	for _, want := range []string{"/proc/self/mem", "/proc/self/clear_refs", missing} {
		n := 0
		for _, l := range lines[:len(lines)-1] {
			if strings.HasPrefix(l, "warning: ") && strings.Contains(l, want) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s is named on %d warning lines, want 1:\n%s", want, n, res)
		}
	}
	checkErrorLine(t, result{code: res.code, stderr: lines[len(lines)-1] + "\n"})
	if !strings.Contains(lines[len(lines)-1], "3 source entries") {
		t.Errorf("the error line does not count 3 entries: %q", lines[len(lines)-1])
	}
	if got := r.must(t, nil, "dump", "latest", filepath.Join(src, "ok")); got.stdout != "fine" {
		t.Fatalf("the readable file was not saved: %q", got.stdout)
	}
}
