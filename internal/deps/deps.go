// Package deps pins the project's module dependencies while the packages
// that use them are being written. It is removed once every one is imported.
package deps

import (
	_ "github.com/cockroachdb/pebble/v2"
	_ "github.com/cockroachdb/pebble/v2/vfs"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/klauspost/reedsolomon"
	_ "github.com/restic/chunker"
	_ "github.com/spf13/cobra"
	_ "github.com/zeebo/blake3"
	_ "golang.org/x/crypto/chacha20poly1305"
	_ "golang.org/x/crypto/hkdf"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
)
