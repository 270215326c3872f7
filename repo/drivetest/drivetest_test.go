package drivetest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"coffer/repo"
	"coffer/repo/drivetest"
)

func TestMem(t *testing.T) {
	drivetest.Run(t, func(t *testing.T) repo.Drive { return drivetest.NewMem() })
}

func TestDirDrive(t *testing.T) {
	drivetest.Run(t, func(t *testing.T) repo.Drive {
		d, err := repo.NewDirDrive(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

func TestFaultyWithoutRules(t *testing.T) {
	drivetest.Run(t, func(t *testing.T) repo.Drive { return drivetest.NewFaulty(drivetest.NewMem()) })
}

func TestFaultyOverDirDrive(t *testing.T) {
	drivetest.Run(t, func(t *testing.T) repo.Drive {
		d, err := repo.NewDirDrive(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return drivetest.NewFaulty(d)
	})
}

// noPrefix hides the optional DeletePrefix of Mem.
type noPrefix struct{ repo.Drive }

func TestFaultyDeletePrefixUnsupported(t *testing.T) {
	f := drivetest.NewFaulty(noPrefix{drivetest.NewMem()})
	if err := f.DeletePrefix(context.Background(), "t/"); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("DeletePrefix over a drive without it = %v, want errors.ErrUnsupported", err)
	}
}

func TestFaultyRules(t *testing.T) {
	ctx := context.Background()
	data := []byte("0123456789")
	mine := errors.New("mine")
	tests := []struct {
		name  string
		rules []drivetest.Rule
		check func(t *testing.T, f *drivetest.Faulty, mem *drivetest.Mem)
	}{
		{"fail read by name", []drivetest.Rule{{Op: drivetest.OpRead, Name: ".2", Action: drivetest.Fail}},
			func(t *testing.T, f *drivetest.Faulty, mem *drivetest.Mem) {
				if err := f.ReadAt(ctx, "x.2", make([]byte, 1), 0); !errors.Is(err, drivetest.ErrInjected) {
					t.Errorf("ReadAt(x.2) = %v, want ErrInjected", err)
				}
				if err := f.ReadAt(ctx, "x.1", make([]byte, 1), 0); err != nil {
					t.Errorf("ReadAt(x.1): %v", err)
				}
			}},
		{"own error, skip and times", []drivetest.Rule{{Op: drivetest.OpSize, Skip: 1, Times: 2, Action: drivetest.Fail, Err: mine}},
			func(t *testing.T, f *drivetest.Faulty, mem *drivetest.Mem) {
				var got []bool
				for range 5 {
					_, err := f.Size(ctx, "x.1")
					got = append(got, errors.Is(err, mine))
				}
				if want := []bool{false, true, true, false, false}; !equalBools(got, want) {
					t.Errorf("failures = %v, want %v", got, want)
				}
			}},
		{"corrupt read", []drivetest.Rule{{Op: drivetest.OpRead, Action: drivetest.Corrupt}},
			func(t *testing.T, f *drivetest.Faulty, mem *drivetest.Mem) {
				p := make([]byte, 10)
				if err := f.ReadAt(ctx, "x.1", p, 0); err != nil {
					t.Fatal(err)
				}
				if bytes.Equal(p, data) || p[5] != data[5]^0xff {
					t.Errorf("read %q, want byte 5 flipped", p)
				}
			}},
		{"truncate put", []drivetest.Rule{{Op: drivetest.OpPut, Action: drivetest.Truncate}},
			func(t *testing.T, f *drivetest.Faulty, mem *drivetest.Mem) {
				if err := f.Put(ctx, "y", data); err != nil {
					t.Fatal(err)
				}
				if n, _ := mem.Size(ctx, "y"); n != 5 {
					t.Errorf("stored %d bytes, want 5", n)
				}
			}},
		{"vanishing put", []drivetest.Rule{{Op: drivetest.OpPut, Action: drivetest.Vanish}},
			func(t *testing.T, f *drivetest.Faulty, mem *drivetest.Mem) {
				if err := f.Put(ctx, "y", data); err != nil {
					t.Fatal(err)
				}
				if _, err := mem.Size(ctx, "y"); !errors.Is(err, repo.ErrNotFound) {
					t.Errorf("Size = %v, want ErrNotFound", err)
				}
			}},
		{"drive gone after two calls", []drivetest.Rule{{Skip: 2, Action: drivetest.Gone}},
			func(t *testing.T, f *drivetest.Faulty, mem *drivetest.Mem) {
				for i := range 4 {
					_, err := f.Size(ctx, "x.1")
					if (i >= 2) != errors.Is(err, drivetest.ErrGone) {
						t.Errorf("call %d: %v", i, err)
					}
				}
				if err := f.Delete(ctx, "x.1"); !errors.Is(err, drivetest.ErrGone) {
					t.Errorf("Delete on a gone drive = %v", err)
				}
				f.Revive()
				f.Reset()
				if _, err := f.Size(ctx, "x.1"); err != nil {
					t.Errorf("after Revive: %v", err)
				}
			}},
		{"delay honours ctx", []drivetest.Rule{{Op: drivetest.OpList, Action: drivetest.Delay, Delay: time.Hour}},
			func(t *testing.T, f *drivetest.Faulty, mem *drivetest.Mem) {
				ctx, cancel := context.WithCancel(ctx)
				cancel()
				err := f.List(ctx, "", func(string, int64) error { return nil })
				if !errors.Is(err, context.Canceled) {
					t.Errorf("delayed List = %v, want context.Canceled", err)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem := drivetest.NewMem()
			if err := mem.Put(ctx, "x.1", data); err != nil {
				t.Fatal(err)
			}
			if err := mem.Put(ctx, "x.2", data); err != nil {
				t.Fatal(err)
			}
			f := drivetest.NewFaulty(mem)
			f.Add(tc.rules...)
			tc.check(t, f, mem)
		})
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFaultyCalls(t *testing.T) {
	f := drivetest.NewFaulty(drivetest.NewMem())
	ctx := context.Background()
	f.Put(ctx, "a", []byte("x"))
	f.ReadAt(ctx, "a", make([]byte, 1), 0)
	f.ReadAt(ctx, "a", make([]byte, 1), 0)
	if f.Calls(drivetest.OpRead) != 2 || f.Calls(drivetest.OpPut) != 1 || f.Calls(drivetest.OpAny) != 3 {
		t.Errorf("Calls: read %d put %d any %d", f.Calls(drivetest.OpRead), f.Calls(drivetest.OpPut), f.Calls(drivetest.OpAny))
	}
}

func TestNewDirDriveErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "missing"), file} {
		_, err := repo.NewDirDrive(p)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(p)) {
			t.Errorf("NewDirDrive(%s) = %v, want an error naming the path", p, err)
		}
	}
}

func TestDirDriveLayout(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, err := repo.NewDirDrive(root)
	if err != nil {
		t.Fatal(err)
	}
	if d.Root() != root {
		t.Errorf("Root() = %s, want %s", d.Root(), root)
	}
	if err := d.Put(ctx, "t/abc/p/12/x.0", []byte("data")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "t", "abc", "p", "12", "x.0")); err != nil || string(b) != "data" {
		t.Fatalf("file on disk: %q, %v", b, err)
	}
	// A stray temporary file and a foreign folder are not listed.
	if err := os.WriteFile(filepath.Join(root, "tmp", "123.tmp"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := d.List(ctx, "", func(n string, _ int64) error { names = append(names, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "t/abc/p/12/x.0" {
		t.Errorf("List = %v", names)
	}
	if err := d.RemoveStaleTemp(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) != 0 {
		t.Errorf("tmp still holds %d files", len(ents))
	}
	// Delete removes empty parents up to, not including, the top-level folder.
	if err := d.Delete(ctx, "t/abc/p/12/x.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "t", "abc")); !os.IsNotExist(err) {
		t.Errorf("t/abc still exists after its last object was deleted (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(root, "t")); err != nil {
		t.Errorf("top-level folder t was removed: %v", err)
	}
	// A shorter file than asked for.
	if err := d.Put(ctx, "s", []byte("ab")); err != nil {
		t.Fatal(err)
	}
	if err := d.ReadAt(ctx, "s", make([]byte, 3), 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short read = %v", err)
	}
}
