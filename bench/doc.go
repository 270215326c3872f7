// Package bench holds Coffer's end-to-end benchmarks (backup, incremental
// backup, restore through the embedded API) and, in compare/, the side-by-side
// comparison with restic and borg. Stage benchmarks live beside their code:
// chunk (chunking, content IDs), repo (Reed-Solomon, shard writes, reads),
// index (dedup lookups), engine (sealing). `make bench` runs them all.
package bench
