package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"coffer/engine"
)

// Example shows the embedded API: create a repository, add a tenant, back up
// a folder, restore it and read one file back from the snapshot.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "coffer-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	// A repository with the default six drive folders under repo/drives.
	// In production the master key file is kept away from the drives.
	repoDir := filepath.Join(dir, "repo")
	if _, err := engine.Init(ctx, repoDir, engine.InitOptions{PackSize: 1 << 20}); err != nil {
		fmt.Println(err)
		return
	}
	e, err := engine.Open(repoDir, engine.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	if _, err := e.CreateTenant(ctx, "acme", engine.TenantOptions{Contact: "ops@acme.example"}); err != nil {
		fmt.Println(err)
		return
	}
	acme, err := e.OpenTenant(ctx, "acme")
	if err != nil {
		fmt.Println(err)
		return
	}

	// Some data to protect.
	src := filepath.Join(dir, "website")
	files := map[string]string{
		"index.html":      "<h1>hello</h1>\n",
		"css/site.css":    "h1 { color: teal }\n",
		"img/logo.txt":    "(a logo)\n",
		"docs/readme.txt": "hello, coffer\n",
	}
	for name, content := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			fmt.Println(err)
			return
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			fmt.Println(err)
			return
		}
	}

	// A backup that could not read some of its source still saves a
	// snapshot of the rest: it returns the snapshot together with an
	// *engine.PartialError (errors.Is(err, engine.ErrPartialBackup)) that
	// names every entry left out. Keep the snapshot, report the entries.
	snap, err := acme.Backup(ctx, []string{src}, engine.BackupOptions{Host: "web1", Tags: []string{"daily"}})
	var partial *engine.PartialError
	if errors.As(err, &partial) {
		for _, w := range partial.Warnings {
			fmt.Println("left out:", w)
		}
	} else if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("backed up %d files (%d bytes)\n", snap.Stats.Files, snap.Stats.Bytes)

	// Snapshots keep absolute paths: the folder comes back below the target
	// at its original path.
	target := filepath.Join(dir, "restore")
	st, err := acme.Restore(ctx, snap, target, engine.RestoreOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	same := 0
	for name, content := range files {
		b, err := os.ReadFile(filepath.Join(target, src, name))
		if err == nil && string(b) == content {
			same++
		}
	}
	fmt.Printf("restored %d files, %d identical; as many folders as backed up: %v\n", st.Files, same, st.Dirs == snap.Stats.Dirs)

	// One file straight from the latest snapshot.
	latest, err := acme.FindSnapshot(ctx, "latest")
	if err != nil {
		fmt.Println(err)
		return
	}
	var out bytes.Buffer
	if err := acme.Dump(ctx, latest, filepath.Join(src, "docs/readme.txt"), &out); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("readme: %s", out.String())

	// Output:
	// backed up 4 files (57 bytes)
	// restored 4 files, 4 identical; as many folders as backed up: true
	// readme: hello, coffer
}
