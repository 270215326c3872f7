// Package walk reads the source of a backup: it walks the file system from
// "/" to the backed-up paths and hands what it finds to a Sink, which stores
// it. The local backup (package engine) and the remote client
// (engine/remote) are its two users, so both record the same snapshot for
// the same source, tree blob for tree blob.
//
// What this package owns: the paths of a backup (absolute, nested ones
// dropped) and the folders on the way to them (one reached through a
// symlink is recorded as the folder it leads to), exclude patterns, the
// metadata of every entry (read with engine/fsmeta: owners, xattrs and
// ACLs, devices, fifos, sockets, symlinks, sparse holes), hard-link groups,
// the rule that lets a file unchanged since the parent snapshot keep its
// content unread, the order of entries (bytewise by name), read-ahead of
// queued files and opening them without touching their access time, the
// warnings for entries that cannot be read (they are left out; the walk
// goes on), the progress counters, and the concurrency: one walker
// goroutine in deterministic order, one file worker per core, and a
// finisher that encodes each folder's tree in post-order.
//
// What it must never do: chunk, hash, compress, seal or store bytes, know
// keys or tenants, or talk to a server (the Sink does all of that), log,
// or panic. The tree format is package tree's.
//
// Only Linux is supported, as for engine/fsmeta.
package walk
