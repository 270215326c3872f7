package engine

import (
	"context"
	"fmt"
	"io"
	"path"
	"strings"
)

// This file holds what the remote server (engine/remote) needs from a tenant
// beyond the local API. Only the read side is here so far; the upload side
// (chunker parameters, "which IDs are missing", verified chunk ingest and
// snapshot commit) is left for a later change (docs/remote.md).

// ExportEntry is one node of a snapshot walk by Export. For a file, Content
// writes its bytes to w (each chunk verified against its content ID); it
// is nil for every other type, and valid only during the callback.
type ExportEntry struct {
	Entry
	Content func(w io.Writer) error
}

// Export walks snapshot s, depth first with folders before their entries,
// and calls fn for every node selected by includes (snapshot paths; empty
// means everything), including the folders on the way to an included path.
// A hard link's Content gives its target's bytes. fn runs on the caller's
// goroutine; an error from fn stops the walk and is returned. The walk is
// audited once, as "restore" with the detail "remote=1".
func (t *Tenant) Export(ctx context.Context, s *Snapshot, includes []string, fn func(ExportEntry) error) (err error) {
	var files, bytes int64
	defer func() {
		err = t.e.audited(ctx, "restore", t.id, fmt.Sprintf("snapshot=%s remote=1 files=%d bytes=%d", s.ID, files, bytes), err)
	}()
	var inc []string
	for _, p := range includes {
		inc = append(inc, strings.Trim(path.Clean("/"+p), "/"))
	}
	return t.List(ctx, s, "/", func(en Entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := strings.TrimPrefix(en.Path, "/")
		in, need := selected(inc, rel)
		if !in && !(need && en.Type == "dir") {
			return nil
		}
		ee := ExportEntry{Entry: en}
		if en.Type == "file" || en.Type == "hardlink" {
			p := en.Path
			ee.Content = func(w io.Writer) error {
				cw := &countWriter{w: w}
				err := t.dump(ctx, s, p, cw)
				bytes += cw.n
				return err
			}
			files++
		}
		return fn(ee)
	})
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
