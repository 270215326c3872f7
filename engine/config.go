package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"coffer/repo"
)

// configCopyPath is a plain copy of the repository config in the repository
// folder. It lets Open find the drives when the index is lost (see Rebuild);
// it holds no secrets and no tenant data.
func configCopyPath(dir string) string { return filepath.Join(dir, "config.json") }

// updateConfig applies change to a copy of the config, bumps its record
// version, and stores it: drives first (r/config), then the plain copy in the
// repository folder, then the index. Only then does the engine use it. The
// config record is written through the drive set the new config describes:
// a drive being marked failed is not written (it may refuse writes), a drive
// being added may take a copy. Callers hold the tenantAdmin lock, which
// serialises every change of the config.
func (e *Engine) updateConfig(ctx context.Context, change func(*config) error) error {
	e.mu.Lock()
	cfg := e.cfg
	cfg.Drives = append([]driveConfig(nil), e.cfg.Drives...)
	e.mu.Unlock()
	if err := change(&cfg); err != nil {
		return err
	}
	cfg.Record++
	raw, err := json.Marshal(&cfg)
	if err != nil {
		return err
	}
	r, err := e.openDrivesOf(cfg)
	if err != nil {
		return err
	}
	if err := e.writeConfig(ctx, r, &cfg, raw); err != nil {
		return err
	}
	e.mu.Lock()
	e.cfg = cfg
	e.repo = r
	e.mu.Unlock()
	return nil
}

// writeConfig stores raw (the JSON of cfg) on the drives of r, in the folder
// copy and in the index, in that order.
func (e *Engine) writeConfig(ctx context.Context, r *repo.Repo, cfg *config, raw []byte) error {
	rec := &record{Kind: recConfig, Version: cfg.Record, Body: raw}
	if err := r.PutRecord(ctx, configName, rec.encode()); err != nil {
		return fmt.Errorf("write repository config to drives: %w", err)
	}
	if err := writeFileDurable(configCopyPath(e.dir), raw, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", configCopyPath(e.dir), err)
	}
	b := e.db.NewBatch()
	defer b.Close()
	b.PutConfig(raw)
	if err := b.Commit(); err != nil {
		return fmt.Errorf("write config to index: %w", err)
	}
	return nil
}

// rp returns the current drive set. It changes when drives are added or fail.
func (e *Engine) rp() *repo.Repo {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.repo
}

func (e *Engine) reservePercent() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg.ReservePercent == 0 {
		return DefaultReservePercent
	}
	return e.cfg.ReservePercent
}

// storedDrivePath is how a drive path is kept in the config: relative to the
// repository folder when the drive lies inside it (the default layout), so
// the folder can be moved or copied whole; absolute otherwise.
func storedDrivePath(dir, abs string) string {
	if isDriveURL(abs) {
		return abs // an S3 drive URL is kept as it is
	}
	if rel, err := filepath.Rel(dir, abs); err == nil && filepath.IsLocal(rel) {
		return rel
	}
	return abs
}

// resolveDrivePath turns a configured drive path into an absolute one.
func resolveDrivePath(dir, p string) string {
	if isDriveURL(p) {
		return p
	}
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}
