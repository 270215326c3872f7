// Package tree encodes and decodes Coffer's tree blobs: one tree is the list of
// entries of one folder of a backup, with everything a restore of a real server
// needs (type, permissions, owner, times, link targets, device numbers, extended
// attributes and ACLs, holes of sparse files, content chunk IDs, child tree IDs).
//
// What this package owns: the byte format of a tree (specified byte by byte in
// docs/design.md), its validation, and its canonical form: a valid Tree has
// exactly one encoding and every accepted encoding decodes to exactly one Tree, so
// an unchanged folder always produces the same bytes and therefore the same tree
// ID, and is stored once.
//
// What it must never do: touch the file system, compute IDs or keys, seal,
// compress or store bytes (the engine does that), log, or panic on any input.
// Decode treats its input as hostile: every error it returns wraps ErrCorrupt.
package tree
