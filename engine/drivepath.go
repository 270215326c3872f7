package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"coffer/repo"
)

// A drive path is either a folder or an S3 drive URL (s3://HOST[:PORT]/BUCKET
// [/PREFIX], or s3+http:// for a loopback server; see repo.S3Drive). This
// file is the one place that tells them apart: every place that opens a drive
// from a path (Init, Open, AddDrive, Rebuild) goes through openDrivePath, and
// URLs never go through filepath.Abs or the relative-path logic of the config.

// isDriveURL reports whether a drive path is an S3 URL rather than a folder.
func isDriveURL(p string) bool { return repo.IsS3URL(p) }

// canonicalDrivePath returns the form of a drive path that the config keeps
// and compares: the canonical URL of an S3 drive (no credentials; they are
// refused in URLs), the absolute path of a folder.
func canonicalDrivePath(p string) (string, error) {
	if isDriveURL(p) {
		u, err := repo.CanonicalS3URL(p)
		if err != nil {
			return "", invalidf("%v", err)
		}
		return u, nil
	}
	return filepath.Abs(p)
}

// s3Options are the repo.S3Options of the engine's options.
func s3Options(caFile string, allowVersioning bool) repo.S3Options {
	return repo.S3Options{CAFile: caFile, AllowVersioning: allowVersioning}
}

// openDrivePath opens the drive at path (a canonical path from
// canonicalDrivePath or the config). A folder is created first when create is
// set (Init, AddDrive); a bucket must already exist. It does not read the
// drive identity.
func openDrivePath(ctx context.Context, path string, s3 repo.S3Options, create bool) (repo.Drive, error) {
	if isDriveURL(path) {
		d, err := repo.OpenS3Drive(ctx, path, s3)
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	if create {
		if err := os.MkdirAll(path, 0o700); err != nil {
			return nil, fmt.Errorf("create drive folder %s: %w", path, err)
		}
	}
	d, err := repo.NewDirDrive(path)
	if err != nil {
		return nil, err
	}
	return d, nil
}
