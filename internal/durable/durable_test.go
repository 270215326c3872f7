package durable

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	for _, data := range []string{"first", "second, longer"} {
		if err := WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != data {
			t.Fatalf("read %q, %v; want %q", got, err, data)
		}
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	assertOnly(t, dir, "key")
	// A folder that does not exist: an error, nothing left behind.
	if err := WriteFile(filepath.Join(dir, "no", "key"), nil, 0o600); err == nil {
		t.Fatal("write into a missing folder succeeded")
	}
}

func TestCreateNew(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "id")
	if err := CreateNew(p, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CreateNew(p, []byte("other"), 0o600); !errors.Is(err, ErrExists) {
		t.Fatalf("second CreateNew: %v, want ErrExists", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "secret" {
		t.Fatalf("the existing file was replaced: %q", got)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	assertOnly(t, dir, "id")
}

// assertOnly fails unless dir holds exactly name (no temporary files).
func assertOnly(t *testing.T, dir, name string) {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Name() != name {
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		t.Fatalf("folder holds %v, want only %s", names, name)
	}
}
