// Package drivetest holds what every repo.Drive implementation and every user of
// drives needs in tests: the conformance suite Run, the in-memory drive Mem, and
// Faulty, a wrapper that injects failures, corruption, truncated or vanished puts,
// a vanished drive, and delays into any Drive.
//
// It is test support: it must not be imported by production code.
package drivetest
