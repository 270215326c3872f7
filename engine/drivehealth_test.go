package engine

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestDocDriveRecord decodes the drive record printed in docs/design.md and
// encodes it back byte for byte.
func TestDocDriveRecord(t *testing.T) {
	raw := bytes.TrimSpace(docExample(t, "drive-record"))
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var dr driveRecord
	if err := dec.Decode(&dr); err != nil {
		t.Fatal(err)
	}
	if dr.Suspect != "read-only file system" || !dr.Since.Equal(time.Date(2025, 3, 1, 2, 17, 44, 0, time.UTC)) {
		t.Fatalf("decoded %+v", dr)
	}
	back, err := json.Marshal(dr)
	if err != nil || !bytes.Equal(back, raw) {
		t.Fatalf("encoded back as %s, %v", back, err)
	}
}
