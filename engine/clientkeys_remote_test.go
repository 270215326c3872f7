package engine

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

func newTestPub(t *testing.T) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestClientKeysRemote covers add, list, authenticate, remove, the one
// refusal for unknown/removed/locked, and that a key cannot serve two tenants.
func TestClientKeysRemote(t *testing.T) {
	ctx := context.Background()
	dir := itInit(t, InitOptions{})
	e := itOpen(t, dir)
	itTenant(t, e, "alice")
	itTenant(t, e, "bob")
	pa, pb := newTestPub(t), newTestPub(t)
	ka, err := e.AddClientKey(ctx, "alice", pa, "laptop", []string{"restore", "backup"})
	if err != nil {
		t.Fatal(err)
	}
	if ka.Fingerprint != KeyFingerprint(pa) || strings.Join(ka.Roles, ",") != "backup,restore" {
		t.Fatalf("added %+v", ka)
	}
	if _, err := e.AddClientKey(ctx, "bob", pb, "", []string{"admin"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.AddClientKey(ctx, "bob", pa, "", []string{"admin"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("same key for a second tenant: %v", err)
	}
	if _, err := e.AddClientKey(ctx, "bob", newTestPub(t), "", []string{"root"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad role: %v", err)
	}
	keys, err := e.ClientKeys(ctx, "alice")
	if err != nil || len(keys) != 1 || keys[0].Comment != "laptop" || !strings.HasPrefix(keys[0].PublicKey, "ssh-ed25519 AAAA") {
		t.Fatalf("ClientKeys alice = %+v, %v", keys, err)
	}
	tn, roles, err := e.AuthenticateClient(ctx, pa)
	if err != nil || tn.Name() != "alice" || len(roles) != 2 {
		t.Fatalf("AuthenticateClient alice: %v %v %v", tn, roles, err)
	}
	if _, _, err := e.AuthenticateClient(ctx, newTestPub(t)); !errors.Is(err, ErrClientRefused) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := e.LockTenant(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.AuthenticateClient(ctx, pb); !errors.Is(err, ErrClientRefused) {
		t.Fatalf("locked tenant: %v", err)
	}
	// Keys of a locked tenant can still be listed and removed by the operator.
	if err := e.RemoveClientKey(ctx, "bob", KeyFingerprint(pb)); err != nil {
		t.Fatal(err)
	}
	if err := e.RemoveClientKey(ctx, "alice", KeyFingerprint(pa)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.AuthenticateClient(ctx, pa); !errors.Is(err, ErrClientRefused) {
		t.Fatalf("removed key: %v", err)
	}
	if err := e.RemoveClientKey(ctx, "alice", KeyFingerprint(pa)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("remove twice: %v", err)
	}
	// Survives a reopen, and the audit trail names the actions.
	e.Close()
	e = itOpen(t, dir)
	if _, err := e.AddClientKey(ctx, "alice", pa, "", []string{"restore"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.AuthenticateClient(ctx, pa); err != nil {
		t.Fatal(err)
	}
	// The r/keys records on the drives are neither damage nor orphans.
	crep, err := e.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || len(crep.Problems) != 0 {
		t.Fatalf("check: %v %v", crep, err)
	}
	srep, err := e.Scrub(ctx, ScrubOptions{})
	if err != nil || len(srep.Problems) != 0 || srep.Orphaned.Found != 0 {
		t.Fatalf("scrub: %+v %v", srep, err)
	}
	var actions []string
	if err := e.AuditLog(ctx, func(a AuditEntry) error {
		actions = append(actions, a.Action)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(actions, " ")
	if !strings.Contains(got, "tenant.key.add") || !strings.Contains(got, "tenant.key.remove") {
		t.Fatalf("audit actions: %s", got)
	}
}

// TestKeyFingerprintRemote checks the OpenSSH fingerprint of a known key
// (ssh-keygen -lf of the key below prints this value).
func TestKeyFingerprintRemote(t *testing.T) {
	pub := make(ed25519.PublicKey, 32)
	line := AuthorizedKey(pub, "c")
	if !strings.HasPrefix(line, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI") || !strings.HasSuffix(line, " c") {
		t.Fatalf("authorized key %q", line)
	}
	if fp := KeyFingerprint(pub); !strings.HasPrefix(fp, "SHA256:") || len(fp) != 7+43 {
		t.Fatalf("fingerprint %q", fp)
	}
}

// TestCheckClientKeyLookups: check finds a registered key whose lookup
// entry is gone (it could not log in) and notes a lookup entry that names
// no key (harmless).
func TestCheckClientKeyLookups(t *testing.T) {
	ctx := context.Background()
	e := itOpen(t, itInit(t, InitOptions{}))
	itTenant(t, e, "alice")
	pa := newTestPub(t)
	ka, err := e.AddClientKey(ctx, "alice", pa, "", []string{"backup"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := e.Check(ctx, CheckOptions{})
	if err != nil || len(rep.Notes) != 0 {
		t.Fatalf("clean repository: %v %+v", err, rep)
	}
	owner, err := e.db.Meta(clientKeyLookupMeta(pa))
	if err != nil {
		t.Fatal(err)
	}
	b := e.db.NewBatch()
	b.DeleteMeta(clientKeyLookupMeta(pa))
	b.PutMeta(clientKeyLookupMeta(newTestPub(t)), owner)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	rep, err = e.Check(ctx, CheckOptions{})
	if !errors.Is(err, ErrCheckFailed) || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], ka.Fingerprint) {
		t.Fatalf("missing lookup entry: %v %q", err, rep.Problems)
	}
	if len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "lookup entry") {
		t.Fatalf("stale lookup entry: %q", rep.Notes)
	}
}
