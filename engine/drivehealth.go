package engine

import (
	"encoding/json"
	"time"

	"coffer/index"
	"coffer/repo"
)

// driveRecord is the value of an index drive record (prefix 0x02, keyed by
// drive ID): what this head node has observed of a drive, as JSON. Today it
// holds only a suspect mark; a drive without a mark has no record. It is
// the head node's own observation, not recovered by an index rebuild.
type driveRecord struct {
	// Suspect is the class of the drive fault seen ("read-only file
	// system", "no space left on device", "disk quota exceeded",
	// "input/output error"); never a path or an object name.
	Suspect string    `json:"suspect"`
	Since   time.Time `json:"suspect_since"` // when it was first seen
}

// maxSuspectReason bounds the reason read back from the index.
const maxSuspectReason = 64

// driveHealth returns the process's tracker of suspect drives, shared by
// every drive set the engine opens, loading the marks the index keeps the
// first time. Marks are advisory: a record that cannot be read is skipped.
func (e *Engine) driveHealth() *repo.Health {
	e.healthOnce.Do(func() {
		e.health = repo.NewHealth(e.keepSuspect)
		if e.db == nil {
			return
		}
		_ = e.db.Drives(func(id index.DriveID, v []byte) error {
			var dr driveRecord
			if json.Unmarshal(v, &dr) != nil || dr.Suspect == "" || len(dr.Suspect) > maxSuspectReason {
				return nil
			}
			e.health.Load(repo.Suspect{Drive: repo.DriveID(id), Reason: dr.Suspect, Since: dr.Since})
			return nil
		})
	})
	return e.health
}

// keepSuspect writes the mark of drive d, or its absence, to the index, so
// that drive list in a later process shows it. It runs on the goroutine of
// the write that changed the mark; failing to keep it loses nothing (the
// next fault marks the drive again), so the error is dropped.
func (e *Engine) keepSuspect(d repo.DriveID) {
	e.healthMu.Lock()
	defer e.healthMu.Unlock()
	b := e.db.NewBatch()
	defer b.Close()
	if s, ok := e.health.Suspect(d); ok {
		v, err := json.Marshal(driveRecord{Suspect: s.Reason, Since: s.Since.UTC()})
		if err != nil {
			return
		}
		b.PutDrive(index.DriveID(d), v)
	} else {
		b.DeleteDrive(index.DriveID(d))
	}
	_ = b.Commit()
}
