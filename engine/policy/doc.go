// Package policy decides which snapshots a retention policy keeps: the
// semantics of `coffer forget --keep-*`.
//
// It owns the rules only. It never reads or deletes a snapshot, never reads
// the wall clock or the machine's time zone, and never logs: given the same
// snapshots and the same Policy, Apply returns the same answer on every
// machine at every moment. The engine (engine/forget.go) loads the
// snapshots, calls Apply or ApplyGrouped, and removes what is not kept.
//
// The rules are those of restic 0.18.1 (internal/restic/snapshot_policy.go
// and doc/060_forget.rst), and the algorithm is restic's, step for step, so
// that `restic forget` can serve as the test oracle:
//
//   - Snapshots are walked newest first. Each counting rule (--keep-last,
//     -hourly, -daily, -weekly, -monthly, -yearly) has a bucket function
//     (YYYYMMDDHH, YYYYMMDD, ISO year*100+ISO week, YYYYMM, YYYY; "last"
//     gives every snapshot its own bucket) and a counter. A snapshot whose
//     bucket value differs from that of the previous snapshot kept by the
//     rule is kept, and the counter goes down by one; the rule stops when
//     its counter reaches zero. So "--keep-daily 7" keeps the newest
//     snapshot of each of the 7 newest days that have snapshots, not of the
//     last 7 calendar days.
//   - If a counting rule still has counts left when the walk reaches the
//     oldest snapshot, the oldest snapshot is kept too (reason "oldest daily
//     snapshot" when it shares its bucket with a newer kept one).
//   - Bucket values are computed from the wall clock at the UTC offset
//     recorded with each snapshot: two snapshots taken at the same instant
//     in different offsets can fall on different days.
//   - --keep-within D keeps every snapshot newer than (newest snapshot - D);
//     the reference is the newest snapshot of the group, not now.
//     --keep-within-daily D etc. keep one snapshot per bucket among those.
//   - --keep-tag keeps every snapshot that has all tags of one tag list.
//   - A snapshot is kept if any rule keeps it; Decision.Reasons lists every
//     rule that did, in restic's words.
//
// See docs/retention.md for the full statement of the rules and the two
// places where Coffer deliberately does not depend on the clock or zone
// database where restic does.
package policy
