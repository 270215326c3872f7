package remote

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"coffer/engine"
)

// newTestEngine makes and opens a repository in a test folder with the
// given tenants (packSize 0: the default). It closes at cleanup.
func newTestEngine(t testing.TB, packSize int, tenants ...string) (*engine.Engine, string) {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := engine.Init(ctx, dir, engine.InitOptions{PackSize: packSize}); err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	for _, name := range tenants {
		if _, err := e.CreateTenant(ctx, name, engine.TenantOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return e, dir
}

// serveOn serves e with its repository's server key on addr
// ("127.0.0.1:0" for a new port, or a previous address for a restart) and
// returns the address, the server's fingerprint and a function that stops
// the server and reports an error of Serve. Stop runs at cleanup too; it
// may be called more than once.
func serveOn(t testing.TB, e *engine.Engine, addr string, cfg Config) (string, string, func()) {
	t.Helper()
	key, _, err := LoadOrCreateServerKey(e.Dir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(e, key, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), srv.Fingerprint(), stop
}
