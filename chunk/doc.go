// Package chunk splits byte streams into content-defined chunks and computes
// their keyed content IDs.
//
// It owns two things: the Rabin-fingerprint chunker of github.com/restic/chunker
// (reimplemented here, cutting at the same bytes, so that a chunk can be cut
// straight into a buffer its caller hands on; Chunker on one goroutine,
// Parallel over one stream on every core) run with a per-tenant secret
// polynomial, and the keyed hash that names a chunk. Both are keyed per tenant, so the same data in two tenants is cut at
// different places and gets different IDs: there is no cross-tenant
// deduplication and so no cross-tenant existence oracle.
//
// The package never stores anything, never sees other tenants' keys and never
// imports engine, index or repo.
package chunk
