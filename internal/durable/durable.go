// Package durable writes small files on the head node (key files, the
// config copy, report messages, the notification outbox) so that a crash
// leaves either the old file or the new one, never a part of it: a
// temporary name in the same folder, fsync, rename (or link), fsync of the
// folder. Drives have their own atomic put (repo); this is for the files
// beside them. It never logs and holds no state.
package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrExists: CreateNew found a file at the path.
var ErrExists = errors.New("durable: file exists")

// WriteFile writes data to path atomically and durably with the given mode,
// replacing what was there: when it returns nil, a crash keeps the new file.
// When it fails, the old file (if any) is untouched and no temporary file
// is left.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return write(path, data, mode, os.Rename)
}

// CreateNew is WriteFile for a path that must not exist yet: the file
// appears whole or not at all, and an existing file is never replaced (the
// error wraps ErrExists). It uses a hard link from the temporary name, which
// fails when the path exists.
func CreateNew(path string, data []byte, mode os.FileMode) error {
	return write(path, data, mode, func(tmp, path string) error {
		if err := os.Link(tmp, path); err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%w: %s", ErrExists, path)
			}
			return err
		}
		return os.Remove(tmp)
	})
}

func write(path string, data []byte, mode os.FileMode, place func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := place(tmp, path); err != nil {
		return err
	}
	ok = true
	return SyncDir(dir)
}

// SyncDir makes the entries of folder dir durable (after a create, rename or
// remove in it).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
