package engine

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"testing"
)

// TestClientKeysSurviveRebuildAndShred: registered client keys come back from
// the drives after the index is lost, and a shred removes them, so the key
// can then be registered for another tenant.
func TestClientKeysSurviveRebuildAndShred(t *testing.T) {
	ctx := context.Background()
	dir, _ := lcRepo(t, nil)
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.AddClientKey(ctx, "a", pub, "laptop", []string{"backup"}); err != nil {
		t.Fatal(err)
	}
	e.Close()

	if err := os.RemoveAll(indexDir(dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := Rebuild(ctx, dir, RebuildOptions{}); err != nil {
		t.Fatal(err)
	}
	e, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	tn, roles, err := e.AuthenticateClient(ctx, pub)
	if err != nil || tn.Name() != "a" || len(roles) != 1 || roles[0] != "backup" {
		t.Fatalf("after rebuild: %v, %v, %v", tn, roles, err)
	}
	if _, err := e.AddClientKey(ctx, "b", pub, "", []string{"backup"}); err == nil {
		t.Fatal("a key registered for tenant a was registered for b too")
	}
	if _, err := e.ShredTenant(ctx, "a", "a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.AuthenticateClient(ctx, pub); !errors.Is(err, ErrClientRefused) {
		t.Fatalf("the shredded tenant's key still authenticates: %v", err)
	}
	if _, err := e.AddClientKey(ctx, "b", pub, "", []string{"restore"}); err != nil {
		t.Fatalf("the key of a shredded tenant cannot be registered again: %v", err)
	}
	if _, err := e.Check(ctx, CheckOptions{}); err != nil {
		t.Fatal(err)
	}
}
