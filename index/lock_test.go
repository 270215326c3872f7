package index

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestLockedInProcess(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(filepath.Join(dir, "db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Open(filepath.Join(dir, "db"), Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if _, err := Open(filepath.Join(dir, "db"), Options{ReadOnly: true}); !errors.Is(err, ErrLocked) {
		t.Fatalf("read-only second Open = %v, want ErrLocked", err)
	}
	// The same directory spelled differently is still the same directory.
	t.Chdir(dir)
	if _, err := Open("./db/", Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open of relative path = %v, want ErrLocked", err)
	}
}

func TestLockedMemFS(t *testing.T) {
	fs := vfs.NewMem()
	db := openMem(t, fs, "db")
	defer db.Close()
	if _, err := Open("db", Options{FS: fs}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestReopenAfterClose(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 {
		db, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		commit(t, db, func(b *Batch) { b.PutAudit(uint64(i), []byte("x")) })
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// lockHelperEnv names the directory the helper process holds open.
const lockHelperEnv = "COFFER_INDEX_LOCK_HELPER_DIR"

// TestLockedByOtherProcess runs this test binary again as a helper that holds
// the database open, and checks that Open here fails with ErrLocked, then
// succeeds once the helper has exited.
func TestLockedByOtherProcess(t *testing.T) {
	if dir := os.Getenv(lockHelperEnv); dir != "" {
		lockHelper(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockedByOtherProcess$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper said %q, %v", line, err)
	}
	_, openErr := Open(dir, Options{})
	_ = stdin.Close() // tells the helper to close and exit
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	t.Logf("Open: %v", openErr)
	if !errors.Is(openErr, ErrLocked) {
		t.Fatalf("Open while helper holds the database = %v, want ErrLocked", openErr)
	}
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after helper exited: %v", err)
	}
	if v, err := db.Meta("helper"); err != nil || string(v) != "was here" {
		t.Errorf("helper's write: %q, %v", v, err)
	}
	_ = db.Close()
}

// lockHelper opens dir, writes a marker, reports "ready" on stdout, and
// holds the database until stdin is closed.
func lockHelper(dir string) {
	db, err := Open(dir, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	b := db.NewBatch()
	b.PutMeta("helper", []byte("was here"))
	if err := b.Commit(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	_ = b.Close()
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	if err := db.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}
