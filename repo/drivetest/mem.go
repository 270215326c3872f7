package drivetest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"coffer/repo"
)

// Mem is an in-memory repo.Drive. It is safe for concurrent use. Its zero value is
// not ready; use NewMem.
type Mem struct {
	mu      sync.RWMutex
	objects map[string][]byte // guarded by mu; values are never modified in place
}

var (
	_ repo.Drive         = (*Mem)(nil)
	_ repo.PrefixDeleter = (*Mem)(nil)
)

// NewMem returns an empty in-memory drive.
func NewMem() *Mem { return &Mem{objects: map[string][]byte{}} }

// Put implements repo.Drive.
func (m *Mem) Put(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := repo.ValidateName(name); err != nil {
		return err
	}
	b := append([]byte{}, data...)
	m.mu.Lock()
	m.objects[name] = b
	m.mu.Unlock()
	return nil
}

// ReadAt implements repo.Drive.
func (m *Mem) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := repo.ValidateName(name); err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("read %s: negative offset %d", name, off)
	}
	m.mu.RLock()
	b, ok := m.objects[name]
	m.mu.RUnlock()
	if !ok {
		return fmt.Errorf("read %s: %w", name, repo.ErrNotFound)
	}
	if off > int64(len(b)) || int64(len(p)) > int64(len(b))-off {
		return fmt.Errorf("read %s: %d bytes at %d of %d: %w", name, len(p), off, len(b), io.ErrUnexpectedEOF)
	}
	copy(p, b[off:])
	return nil
}

// Size implements repo.Drive.
func (m *Mem) Size(ctx context.Context, name string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := repo.ValidateName(name); err != nil {
		return 0, err
	}
	m.mu.RLock()
	b, ok := m.objects[name]
	m.mu.RUnlock()
	if !ok {
		return 0, fmt.Errorf("size of %s: %w", name, repo.ErrNotFound)
	}
	return int64(len(b)), nil
}

// List implements repo.Drive. fn is called without the drive's lock held, so it
// may call the drive.
func (m *Mem) List(ctx context.Context, prefix string, fn func(name string, size int64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := repo.ValidatePrefix(prefix); err != nil {
		return err
	}
	type entry struct {
		name string
		size int64
	}
	var found []entry
	m.mu.RLock()
	for name, b := range m.objects {
		if strings.HasPrefix(name, prefix) {
			found = append(found, entry{name, int64(len(b))})
		}
	}
	m.mu.RUnlock()
	for _, e := range found {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e.name, e.size); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements repo.Drive.
func (m *Mem) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := repo.ValidateName(name); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.objects, name)
	m.mu.Unlock()
	return nil
}

// DeletePrefix implements repo.PrefixDeleter.
func (m *Mem) DeletePrefix(ctx context.Context, prefix string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if prefix == "" {
		return fmt.Errorf("%w: DeletePrefix needs a non-empty prefix", repo.ErrInvalidName)
	}
	if err := repo.ValidatePrefix(prefix); err != nil {
		return err
	}
	m.mu.Lock()
	for name := range m.objects {
		if strings.HasPrefix(name, prefix) {
			delete(m.objects, name)
		}
	}
	m.mu.Unlock()
	return nil
}
