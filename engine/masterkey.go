package engine

import (
	"fmt"
)

// tenantAdmin is the lock key that serialises changes to the set of tenants
// and to the master key (create, lock, unlock, shred, sweep, rotation).
var tenantAdmin = [16]byte{}

// loadKeys reads the master key file and matches it with the config. The
// file holds the current epoch and, during a rotation, the next one; the
// config says which epoch is current. Either may be ahead after a crash in
// the middle of a rotation, and both cases open (see Rotate).
func (e *Engine) loadKeys() error {
	kf, err := readKeyFile(e.keyFile)
	if err != nil {
		return err
	}
	if kf.cur.repo != e.cfg.repoID() {
		return fmt.Errorf("%w: the master key in %s belongs to repository %x, not %s", ErrWrongKey, e.keyFile, kf.cur.repo[:], e.cfg.Repository)
	}
	switch {
	case kf.cur.epoch == e.cfg.MKEpoch && kf.cur.matches(e.cfg.MKCheck):
		e.mk = kf.cur
		if kf.next != nil && e.cfg.RotatingTo == kf.next.epoch && kf.next.matches(e.cfg.NextCheck) {
			e.mkNext = kf.next
		}
	case kf.next != nil && kf.next.epoch == e.cfg.MKEpoch && kf.next.matches(e.cfg.MKCheck):
		// The rotation switched the config but not yet the key file.
		e.mk = kf.next
		e.keyFileStale = true
	default:
		return fmt.Errorf("%w: the master key in %s (epoch %d) does not open this repository (current epoch %d)", ErrWrongKey, e.keyFile, kf.cur.epoch, e.cfg.MKEpoch)
	}
	if e.cfg.RotatingTo != 0 || len(e.cfg.PendingShred) > 0 || kf.next != nil {
		e.opts.warnf("a master-key rotation or tenant shred was interrupted; run coffer key rotate to finish it")
	}
	return nil
}

// currentKey returns the current master key epoch.
func (e *Engine) currentKey() *masterKey {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mk
}

// mkFor returns the master key of an epoch: the current one or, during a
// rotation, the next one. Older epochs are destroyed.
func (e *Engine) mkFor(epoch uint32) (*masterKey, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.mk != nil && epoch == e.mk.epoch:
		return e.mk, nil
	case e.mkNext != nil && epoch == e.mkNext.epoch:
		return e.mkNext, nil
	}
	return nil, fmt.Errorf("%w: master key epoch %d is not in the key file (it holds epoch %d)", ErrWrongKey, epoch, e.mk.epoch)
}
