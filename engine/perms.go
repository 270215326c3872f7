package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
)

// ErrKeyFileExposed is wrapped by the error of a key file that its group or
// others may read or write: the master key file, a client identity, the
// server key. Like ssh, Coffer refuses to use it (exit 12) and says how
// to fix it.
var ErrKeyFileExposed = errors.New("engine: key file readable by others")

// KeyFileModeError says which key file is exposed and how to fix it.
type KeyFileModeError struct {
	What string // "master key file", "identity", "server key"
	Path string
	Mode os.FileMode
}

func (e *KeyFileModeError) Error() string {
	return fmt.Sprintf("%s %s has mode %04o: others than its owner may read it, so it is not used; run chmod 600 %s",
		e.What, e.Path, uint32(e.Mode), e.Path)
}

func (e *KeyFileModeError) Unwrap() error { return ErrKeyFileExposed }

// CheckKeyFileMode returns a *KeyFileModeError when the file fi (of a key
// at path; what names it) grants any permission to its group or others.
func CheckKeyFileMode(what, path string, fi os.FileInfo) error {
	if runtime.GOOS == "windows" {
		return nil // no Unix modes
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return &KeyFileModeError{What: what, Path: path, Mode: m}
	}
	return nil
}

// ReadKeyFile reads a small key file (at most max bytes) after checking
// that only its owner may read it (CheckKeyFileMode). A missing file's
// error wraps os.ErrNotExist.
func ReadKeyFile(what, path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	if err := CheckKeyFileMode(what, path, fi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s %s is larger than %d bytes", what, path, max)
	}
	return data, nil
}

// makePrivateDir makes the folder path (and its parents) and gives it mode
// 0700, also when it existed with a wider mode: a repository's own folders
// (the repository folder, index/) hold tenant IDs and key fingerprints that
// other local users must not read.
func makePrivateDir(path string) error {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(path, 0o700); err != nil {
			return fmt.Errorf("make %s private to its owner: %w", path, err)
		}
	}
	return nil
}
