package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"coffer/engine"
	"coffer/repo"
	"coffer/repo/drivetest"
)

// cofferFaulty runs one command line in this process with every drive
// wrapped in a drivetest.Faulty that has rules.
func cofferFaulty(t testing.TB, rules []drivetest.Rule, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
		wrapDrive: func(_ string, d repo.Drive) repo.Drive {
			f := drivetest.NewFaulty(d)
			f.Add(rules...)
			return f
		}}
	code := execute(context.Background(), g, args)
	return result{args: args, code: code, stdout: out.String(), stderr: errb.String()}
}

// auditLog returns the repository's audit entries through the CLI.
func auditLog(t testing.TB, r *testRepo) []engine.AuditEntry {
	t.Helper()
	res := mustCoffer(t, nil, "--repo", r.dir, "--json", "audit")
	var es []engine.AuditEntry
	if err := json.Unmarshal([]byte(res.stdout), &es); err != nil {
		t.Fatalf("audit --json: %v\n%s", err, res)
	}
	return es
}

// randomFiles writes n files of size random bytes each under dir.
func randomFiles(t testing.TB, dir string, n, size int, seed int64) {
	t.Helper()
	rnd := rand.New(rand.NewSource(seed))
	for i := range n {
		b := make([]byte, size)
		rnd.Read(b)
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%d", i)), b)
	}
}

// TestBackupUnauditedExits1 is case 5 of issue 16 as found: with the audit
// entry's puts failing (here on every drive: the write cannot reach a
// quorum), backup printed "snapshot saved" and exited 0. It must exit 1
// with one sentence saying that nothing was saved, save no snapshot, and
// audit --verify must account for every snapshot afterwards.
func TestBackupUnauditedExits1(t *testing.T) {
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "src")
	randomFiles(t, src, 2, 10<<10, 1)
	fail := []drivetest.Rule{{Op: drivetest.OpPut, Name: "r/audit/", Action: drivetest.Fail, Err: syscall.EROFS}}
	res := cofferFaulty(t, fail, r.args("backup", src)...)
	if res.code != exitError || strings.Contains(res.stdout, "saved") ||
		!strings.Contains(res.stderr, "the backup was not saved, as its audit entry could not be written") {
		t.Errorf("backup without its audit entry:\n%s", res)
	}
	checkErrorLine(t, res)
	if ss := fgSnapshots(t, r); len(ss) != 0 {
		t.Errorf("the unaudited backup left snapshots: %v", ss)
	}
	r.must(t, nil, "backup", src)
	res = mustCoffer(t, nil, "--repo", r.dir, "audit", "--verify")
	if !strings.Contains(res.stdout, "audit trail verified") || !strings.Contains(res.stdout, "1 snapshot each with its backup entry") {
		t.Errorf("audit --verify:\n%s", res)
	}
}

// TestDumpIntoHeadIsAudited: "coffer dump ... | head -c 10" closes the pipe
// early; the process dies of SIGPIPE while writing, and used to leave no
// audit entry. The entry is written before the first byte.
func TestDumpIntoHeadIsAudited(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "coffer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	r := newTestRepo(t, "acme")
	src := filepath.Join(t.TempDir(), "src")
	randomFiles(t, src, 1, 8<<20, 2) // several blobs: writes after head exits
	r.must(t, nil, "backup", src)
	file := filepath.Join(src, "f0")
	cmd := exec.Command("sh", "-c", `"$0" --repo "$1" --tenant acme dump latest "$2" | head -c 10 | wc -c`, bin, r.dir, file)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "10" {
		t.Fatalf("dump | head -c 10: %v: %q", err, out)
	}
	var dumps []engine.AuditEntry
	for _, en := range auditLog(t, r) {
		if en.Action == "dump" {
			dumps = append(dumps, en)
		}
	}
	if len(dumps) == 0 || dumps[0].Outcome != "ok" || !strings.Contains(dumps[0].Detail, fmt.Sprintf("bytes=%d", 8<<20)) {
		t.Fatalf("dump entries: %+v", dumps)
	}
}

// TestPruneNoSpaceNoFalseSummary is case 6 of issue 16 as found: prune on
// full drives failed its repack (ENOSPC, exit 1, nothing deleted) but
// printed "27 packs deleted … freed 38.1 MiB". It must print nothing of
// what it did not do, exit 1 with one sentence, and leave the repository
// as it was.
func TestPruneNoSpaceNoFalseSummary(t *testing.T) {
	r := newTestRepo(t, "acme", "--pack-size", "1MiB")
	src := filepath.Join(t.TempDir(), "src")
	randomFiles(t, src, 12, 300<<10, 3)
	r.must(t, nil, "backup", src)
	for i := 0; i < 12; i += 2 {
		writeFile(t, filepath.Join(src, fmt.Sprintf("f%d", i)), []byte("small now"))
	}
	r.must(t, nil, "backup", src)
	first := fgSnapshots(t, r)[0].ID
	r.fgMust(t, "forget", first)

	full := []drivetest.Rule{{Op: drivetest.OpPut, Name: "/p/", Action: drivetest.Fail, Err: syscall.ENOSPC}}
	res := cofferFaulty(t, full, r.args("prune", "--max-unused", "0")...)
	if res.code != exitError || res.stdout != "" || !strings.Contains(res.stderr, "no space left on device") {
		t.Errorf("prune on full drives:\n%s", res)
	}
	checkErrorLine(t, res)
	for _, en := range auditLog(t, r) {
		if en.Action == "prune" && (en.Outcome == "ok" || !strings.Contains(en.Detail, "packs_deleted=0 packs_repacked=0 packs_written=0 bytes_freed=0")) {
			t.Errorf("audit entry of the failed prune: %+v", en)
		}
	}
	mustCoffer(t, nil, "--repo", r.dir, "check")

	res = r.fgMust(t, "prune", "--max-unused", "0")
	if !strings.Contains(res.stdout, "repacked into") || strings.Contains(res.stdout, "freed 0 B") {
		t.Errorf("prune with space:\n%s", res)
	}
}
