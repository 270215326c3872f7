package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// acquireLock takes an exclusive flock on DIR/lock and writes who holds it.
// It retries until wait has passed, then returns a *LockedError naming the
// holder. The kernel drops the lock when the process dies, so a crash never
// leaves a stale lock.
func acquireLock(ctx context.Context, dir string, wait time.Duration, command string) (*os.File, error) {
	f, err := os.OpenFile(lockPath(dir), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	deadline := time.Now().Add(wait)
	delay := 50 * time.Millisecond
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock repository: %w", err)
		}
		if !time.Now().Before(deadline) {
			holder, _ := os.ReadFile(lockPath(dir))
			f.Close()
			return nil, &LockedError{Dir: dir, Holder: strings.TrimSpace(string(holder))}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		if delay < time.Second {
			delay *= 2
		}
	}
	if command == "" {
		command = "coffer"
	}
	info := fmt.Sprintf("pid %d (%s) since %s\n", os.Getpid(), command, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(info), 0) // holder text is advisory
	}
	return f, nil
}

func releaseLock(f *os.File) {
	_ = f.Truncate(0)
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	_ = f.Close()
}
