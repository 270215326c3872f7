package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"coffer/engine/tree"
)

func randomBlob(t *testing.T, tn *Tenant, n int) IngestBlob {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return IngestBlob{Type: DataBlob, ID: tn.keys.ids.Sum(b), Data: b}
}

func treeBlob(t *testing.T, tn *Tenant, nodes ...tree.Node) IngestBlob {
	t.Helper()
	enc, err := (&tree.Tree{Nodes: nodes}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return IngestBlob{Type: TreeBlob, ID: tn.keys.ids.Sum(enc), Data: enc}
}

// TestIngestCommitAbortAudit: a committed session records a snapshot and
// audits "backup remote=1"; an aborted one records none, keeps its written
// packs known, and is audited as failed; a second session waits for the
// tenant lock.
func TestIngestCommitAbortAudit(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	tn := itTenant(t, e, "a")
	in, err := tn.BeginIngest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The lock is held: another session waits until its context ends.
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if _, err := tn.BeginIngest(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second session: %v", err)
	}
	cancel()
	big := randomBlob(t, tn, 900<<10)
	big2 := randomBlob(t, tn, 900<<10) // closes the first pack: big is written
	if err := in.Put(ctx, []IngestBlob{big, big2}); err != nil {
		t.Fatal(err)
	}
	in.Abort(ctx, errors.New("connection lost"))
	if ss, _ := tn.Snapshots(ctx); len(ss) != 0 {
		t.Fatalf("aborted session left %d snapshots", len(ss))
	}
	in, err = tn.BeginIngest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have, err := in.Have(ctx, [][32]byte{big.ID, big2.ID})
	if err != nil || !have[0] || have[1] {
		t.Fatalf("after abort: have %v %v (written pack known, unwritten one not)", have, err)
	}
	small := randomBlob(t, tn, 1000)
	tr := treeBlob(t, tn, tree.Node{Name: "f", Type: tree.File, Mode: 0o600, Size: 900<<10 + 1000, Content: []tree.ID{big.ID, small.ID}})
	if err := in.Put(ctx, []IngestBlob{small, tr}); err != nil {
		t.Fatal(err)
	}
	s, err := in.Commit(ctx, &Snapshot{Time: time.Now(), Host: "h", Paths: []string{"/f"}, Tree: hex.EncodeToString(tr.ID[:]), Stats: SnapshotStats{Files: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Stats.BlobsAdded != 2 || s.Stats.Files != 1 {
		t.Fatalf("stats %+v", s.Stats)
	}
	if err := in.Put(ctx, []IngestBlob{small}); !errors.Is(err, ErrIngestBroken) {
		t.Fatalf("put after commit: %v", err)
	}
	var outcomes []string
	e.AuditLog(ctx, func(a AuditEntry) error {
		if a.Action == "backup" && strings.Contains(a.Detail, "remote=1") {
			outcomes = append(outcomes, a.Outcome)
		}
		return nil
	})
	if len(outcomes) != 2 || outcomes[0] == "ok" || outcomes[1] != "ok" {
		t.Fatalf("audit outcomes %v", outcomes)
	}
	rep, err := e.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("check: %v %v", err, rep)
	}
}

// TestIngestQuota: a session that would take the tenant over its quota
// fails, keeps nothing, and records no snapshot.
func TestIngestQuota(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	if _, err := e.CreateTenant(ctx, "q", TenantOptions{Quota: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	tn, err := e.OpenTenant(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	in, err := tn.BeginIngest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var blobs []IngestBlob
	for i := 0; i < 4; i++ {
		blobs = append(blobs, randomBlob(t, tn, 600<<10))
	}
	err = in.Put(ctx, blobs)
	if err == nil {
		_, err = in.Commit(ctx, &Snapshot{Time: time.Now(), Paths: []string{"/x"}, Tree: strings.Repeat("0", 64)})
	}
	if !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("over quota: %v", err)
	}
	in.Abort(ctx, err)
	if used, _ := tn.storedBytes(); used != 0 {
		t.Fatalf("%d bytes kept", used)
	}
	if ss, _ := tn.Snapshots(ctx); len(ss) != 0 {
		t.Fatal("snapshot recorded")
	}
}
