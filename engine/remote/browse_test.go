package remote

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"coffer/engine"
)

// TestRemoteBrowseAndEdit: a restore key reads snapshots through
// OpenSnapshot for the engine's browsing functions; an admin key tags
// and rewrites; hostile tag and rewrite requests get one invalid answer
// and change nothing; another tenant's snapshot is not found.
func TestRemoteBrowseAndEdit(t *testing.T) {
	f := newIngestFixture(t)
	ctx := context.Background()
	src := t.TempDir()
	writeRandomTree(t, src, 1<<20)
	alice, err := f.e.OpenTenant(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	s, err := alice.Backup(ctx, []string{src}, engine.BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc := f.dial(t, f.key(t, "alice", "restore"))
	rs, r, err := rc.OpenSnapshot(ctx, s.ID[:8])
	if err != nil || rs.ID != s.ID {
		t.Fatalf("open: %v %+v", err, rs)
	}
	st, err := engine.Stats(ctx, r, []*engine.Snapshot{rs}, "")
	if err != nil || st.Files == 0 || st.UniqueBytes == 0 {
		t.Fatalf("stats through the remote reader: %+v %v", st, err)
	}
	if _, err := engine.WriteArchive(ctx, r, rs, src, engine.ArchiveTar, io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Tag(ctx, []string{s.ID}, engine.TagOptions{Add: []string{"x"}}); !errors.Is(err, ErrRefused) {
		t.Fatalf("restore key tag: %v", err)
	}
	// Bob's key does not see Alice's snapshot.
	bc := f.dial(t, f.key(t, "bob", "admin"))
	if _, _, err := bc.OpenSnapshot(ctx, s.ID); !errors.Is(err, engine.ErrSnapshotNotFound) {
		t.Fatalf("bob opens alice's snapshot: %v", err)
	}
	if _, err := bc.Tag(ctx, []string{s.ID}, engine.TagOptions{Add: []string{"x"}}); !errors.Is(err, engine.ErrSnapshotNotFound) {
		t.Fatalf("bob tags alice's snapshot: %v", err)
	}

	ac := f.dial(t, f.key(t, "alice", "admin"))
	many := make([]string, maxExcludes+1)
	for i := range many {
		many[i] = "x"
	}
	longGlob := strings.Repeat("a", maxExcludeLen+1)
	for name, call := range map[string]func() error{
		"too many patterns": func() error {
			_, err := ac.admin(ctx, request{Op: opRewrite, Excludes: many})
			return err
		},
		"a comma": func() error {
			_, err := ac.Tag(ctx, []string{s.ID}, engine.TagOptions{Add: []string{"a,b"}})
			return err
		},
		"nothing to do": func() error { _, err := ac.Tag(ctx, []string{s.ID}, engine.TagOptions{}); return err },
		"bad glob": func() error {
			_, err := ac.admin(ctx, request{Op: opRewrite, Excludes: []string{"["}})
			return err
		},
		"long glob": func() error {
			_, err := ac.admin(ctx, request{Op: opRewrite, Excludes: []string{longGlob}})
			return err
		},
		"no pattern": func() error { _, err := ac.admin(ctx, request{Op: opRewrite}); return err },
		"no change":  func() error { _, err := ac.admin(ctx, request{Op: opTag, IDs: []string{s.ID}}); return err },
	} {
		if err := call(); !errors.Is(err, engine.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	ss, _ := alice.Snapshots(ctx)
	if len(ss) != 1 || len(ss[0].Tags) != 0 {
		t.Fatalf("hostile requests changed snapshots: %+v", ss)
	}
	rep, err := ac.Tag(ctx, []string{"latest"}, engine.TagOptions{Add: []string{"wire"}})
	if err != nil || rep.Changed != 1 {
		t.Fatalf("tag: %+v %v", rep, err)
	}
	exc, _ := engine.ParsePattern(filepath.Base(src), false)
	rw, err := ac.Rewrite(ctx, nil, engine.RewriteOptions{Exclude: []engine.Pattern{exc}, Forget: true})
	if err != nil || rw.Rewritten != 1 || rw.Forgotten != 1 {
		t.Fatalf("rewrite: %+v %v", rw, err)
	}
	ss, _ = alice.Snapshots(ctx)
	if len(ss) != 1 || ss[0].Original != s.ID || len(ss[0].Tags) != 1 {
		t.Fatalf("after rewrite: %+v", ss)
	}
}
