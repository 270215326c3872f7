// Package index is Coffer's index database: one pebble v2 database
// (github.com/cockroachdb/pebble/v2) holding the repository config, the drive
// records, tenant records (wrapped tenant keys), the blob → pack location map,
// pack records (which drive holds which shard, and each shard's expected
// hash), snapshot records, the audit log and small named metadata values.
//
// What this room owns:
//   - the key schema and the byte-level encoding of every value it writes,
//     specified in docs/design.md (a test decodes the examples there);
//   - typed accessors (DB) and atomic, synced write batches (Batch).
//
// What it must never do:
//   - hold plaintext of tenant data or tenant metadata. Everything
//     tenant-related it stores is a keyed ID (tenant, blob, pack and snapshot
//     IDs are random or keyed hashes) or bytes already sealed by the engine
//     (TenantRec.Wrapped, TenantRec.Meta, SnapshotRec.Sealed). Opaque values
//     (config, drive records, audit entries, metadata) are stored as given;
//     the engine promises they carry no tenant plaintext;
//   - make decisions with tenant meaning (that is engine's room): it never
//     imports engine, repo or chunk;
//   - log, or panic on bad input. Decoders return errors wrapping ErrCorrupt.
//
// Concurrency: a *DB is safe for concurrent use by many goroutines, except
// that Close must not run concurrently with other calls. A *Batch is not safe
// for concurrent use. Pebble's directory lock admits one process (and one
// open DB per directory within a process); Open reports ErrLocked otherwise.
//
// Durability: Batch.Commit is atomic (all of the batch or none of it survives
// a crash) and synced (pebble.Sync) before it returns nil.
package index
