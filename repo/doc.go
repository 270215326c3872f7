// Package repo stores opaque bytes durably on a set of drives.
//
// What this room owns:
//   - the Drive interface (five verbs) and the folder drive DirDrive, with the
//     atomic, durable put sequence (temporary file, fsync, rename, fsync folder);
//   - the identity object on each drive (repository ID, drive ID, rack);
//   - Reed-Solomon coding of packs into k data and m parity shards, the shard file
//     format (header, block CRC table, data, opaque trailer) and its decoder;
//   - placement of shards over drives and racks (rendezvous hashing);
//   - partial reads that touch only the data shard bytes they need, and
//     reconstruction from other shards when a shard is missing, corrupt, or rejected
//     by the caller's verification;
//   - replicated small records.
//
// What it must never do: see keys or plaintext (every byte it stores is already
// sealed by the engine or is its own framing), import engine, index or chunk, log,
// or panic on bad input read from a drive. Errors are returned wrapped, with the
// classes ErrNotFound, ErrCorrupt, ErrTooFewShards, ErrTooFewDrives,
// ErrForeignDrive and ErrNoIdentity testable with errors.Is.
//
// The on-drive format is specified in docs/design.md; a test decodes the
// example printed there.
package repo
