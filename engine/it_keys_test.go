package engine

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestITMasterKeyErrors opens a repository with every kind of wrong master
// key file; each must fail with its own error class, and none may leave the
// repository locked.
func TestITMasterKeyErrors(t *testing.T) {
	dir := itInit(t, InitOptions{})
	other := itInit(t, InitOptions{})
	good, err := os.ReadFile(defaultKeyFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(keys, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Same repository and epoch, another key.
	var otherKey [KeySize]byte
	randomBytes(otherKey[:])
	var lines []string
	for _, l := range strings.Split(string(good), "\n") {
		if strings.HasPrefix(l, "key:") {
			l = "key: " + hex.EncodeToString(otherKey[:])
		}
		lines = append(lines, l)
	}
	sameRepoOtherKey := strings.Join(lines, "\n")
	if sameRepoOtherKey == string(good) {
		t.Fatal("key file has no key line")
	}
	garbled := []byte(strings.Replace(string(good), "key: ", "key: zz", 1))

	for _, tc := range []struct {
		name    string
		keyFile string
		want    error
	}{
		{"key of another repository", defaultKeyFile(other), ErrWrongKey},
		{"right repository, another key", write("other-key", []byte(sameRepoOtherKey)), ErrWrongKey},
		{"missing key file", filepath.Join(keys, "does-not-exist"), ErrNoMasterKey},
		{"truncated key file", write("truncated", good[:len(good)/2]), ErrBadKeyFile},
		{"empty key file", write("empty", nil), ErrBadKeyFile},
		{"garbled key digits", write("garbled", garbled), ErrBadKeyFile},
		{"random bytes", write("random", itRandBytes(7, 200)), ErrBadKeyFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Open(dir, Options{MasterKeyFile: tc.keyFile})
			if err == nil {
				e.Close()
				t.Fatalf("Open succeeded, want %v", tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
		})
	}
	// After all the failures the right key still opens it, at once.
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open with the right key after failed attempts: %v", err)
	}
	if _, err := e.CreateTenant(context.Background(), "acme", TenantOptions{}); err != nil {
		t.Errorf("CreateTenant: %v", err)
	}
	e.Close()
}

// TestITLocking checks that one Engine owns a repository at a time.
func TestITLocking(t *testing.T) {
	dir := itInit(t, InitOptions{})
	first, err := Open(dir, Options{Command: "coffer backup"})
	if err != nil {
		t.Fatal(err)
	}
	// The goroutine below closes first; closed tells the end of the test
	// (and the race detector, which cannot see the flock) that it did.
	closed := make(chan struct{})
	started := false
	defer func() {
		if started {
			<-closed
		} else {
			first.Close()
		}
	}()

	start := time.Now()
	e, err := Open(dir, Options{})
	if err == nil {
		e.Close()
		t.Fatal("second Open of a held repository succeeded")
	}
	if !errors.Is(err, ErrRepoLocked) {
		t.Fatalf("second Open: %v, want ErrRepoLocked", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Open with RetryLock 0 took %s to fail; it must not wait", d)
	}
	var le *LockedError
	if !errors.As(err, &le) || !strings.Contains(le.Holder, "coffer backup") {
		t.Errorf("error %v does not name the holder", err)
	}

	started = true
	go func() {
		defer close(closed)
		time.Sleep(200 * time.Millisecond)
		first.Close()
	}()
	start = time.Now()
	e, err = Open(dir, Options{RetryLock: 2 * time.Second})
	if err != nil {
		t.Fatalf("Open with RetryLock 2s while the holder closes after 200ms: %v", err)
	}
	defer e.Close()
	<-closed
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("Open waited %s; want about 200ms", d)
	}
	// The new owner works.
	if _, err := e.CreateTenant(context.Background(), "acme", TenantOptions{}); err != nil {
		t.Errorf("CreateTenant after taking over the lock: %v", err)
	}
}
