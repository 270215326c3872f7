package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
	"coffer/engine/remote"
)

// coffer serve, and the client side of remote use (--remote, --identity,
// --server-fingerprint) of the data commands. docs/design.md chapter 15 describes both.

func newServeCmd(g *globals) *cobra.Command {
	var listen, metricsAddr, metricsToken string
	var cfg remote.Config
	c := &cobra.Command{
		Use:   "serve --listen ADDR",
		Short: "Serve the repository to remote clients (TLS 1.3, registered client keys only); prints the server key's fingerprint",
		Long: `Serve the repository to remote clients over TLS 1.3. Clients log in with a key
registered with coffer tenant key add; the key alone decides the tenant. The
server key is REPO/server.key (mode 0600), made on the first start; clients pin
its fingerprint, which is printed at start. SIGINT or SIGTERM stop the server
after the requests in flight finish. Events are logged to stderr as
structured lines without tenant content.

While it runs, operator commands on the same --repo (tenant lock, tenant key
remove, scrub, sweep, report, ...) run inside the server through its admin
socket REPO/admin.sock (mode 0600; the master key file must match), so they
work on a live server: removing a key or locking a tenant cuts the sessions
concerned at once. Data commands on the same --repo (backup, restore,
snapshots, ...) run as clients of the server through its data socket
REPO/data.sock (any coffer process that holds a repository does the same).

With --metrics ADDR it serves Prometheus metrics on http://ADDR/metrics and
a health check on /healthz; ADDR must be on loopback unless
--metrics-token-file names a file with a bearer token, which every request
must then carry. Alerts (see coffer notify --help) are delivered in the
background while it runs.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listen == "" {
				return usagef("serve needs --listen ADDR (for example 0.0.0.0:7443)")
			}
			ms, err := listenMetrics(g, metricsAddr, metricsToken)
			if err != nil {
				return err
			}
			defer ms.close()
			e, err := g.open(cmd)
			if err != nil {
				ms.close()
				return err
			}
			defer e.Close()
			g.serveMetrics = ms
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", listen, err)
			}
			return runServe(cmd.Context(), g, e, ln, cfg)
		},
	}
	c.Flags().StringVar(&listen, "listen", "", "address to listen on, HOST:PORT")
	c.Flags().IntVar(&cfg.MaxConns, "max-conns", 64, "most admitted client sessions at once")
	c.Flags().IntVar(&cfg.MaxHandshakes, "max-handshakes", 64, "most connections not yet admitted (in the TLS handshake) at once; when full the oldest is closed for a newcomer")
	c.Flags().IntVar(&cfg.MaxHandshakesPerAddr, "max-handshakes-per-addr", 8, "most connections not yet admitted from one address (IPv6: one /64)")
	c.Flags().DurationVar(&cfg.IdleTimeout, "idle-timeout", 5*time.Minute, "close a connection idle this long")
	c.Flags().IntVar(&cfg.MaxBackups, "max-backups", 8, "most backups at once (each holds about two pack sizes of memory); others wait up to the idle timeout")
	c.Flags().StringVar(&metricsAddr, "metrics", g.getenv("COFFER_METRICS"), "serve /metrics and /healthz on [HOST]:PORT (no host: 127.0.0.1); a host that is not loopback needs --metrics-token-file (env COFFER_METRICS)")
	c.Flags().DurationVar(&g.notify.retry, "notify-retry", 30*time.Second, "wait before the first retry of an alert that could not be delivered (doubled each time, at most an hour)")
	c.Flags().StringVar(&metricsToken, "metrics-token-file", g.getenv("COFFER_METRICS_TOKEN_FILE"), "file holding the bearer token that /metrics and /healthz then require (env COFFER_METRICS_TOKEN_FILE)")
	return c
}

// runServe serves e on ln until ctx ends (SIGINT or SIGTERM in the CLI).
// It prints the server fingerprint on stdout once it listens.
func runServe(ctx context.Context, g *globals, e *engine.Engine, ln net.Listener, cfg remote.Config) error {
	key, created, err := remote.LoadOrCreateServerKey(e.Dir())
	if err != nil {
		ln.Close()
		return fmt.Errorf("server key: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(g.stderr, nil))
	cfg.Log = func(event string, kv ...any) { logger.Info(event, kv...) }
	stopOps, err := startOps(ctx, g, e, &cfg, logger)
	if err != nil {
		ln.Close()
		return err
	}
	defer stopOps()
	srv, err := remote.NewServer(e, key, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	// The other coffer processes of the host are served on REPO/admin.sock
	// and REPO/data.sock, by the same server (holder.go).
	h, err := g.startHolder(ctx, e, srv, cfg.Log)
	if err != nil {
		ln.Close()
		return err
	}
	defer h.finish(ctx)
	if created {
		fmt.Fprintf(g.stdout, "made a new server key in %s/%s\n", e.Dir(), remote.ServerKeyName)
	}
	fmt.Fprintf(g.stdout, "server fingerprint: %s\nlistening on %s\nadmin socket: %s\ndata socket: %s\n", srv.Fingerprint(), ln.Addr(),
		filepath.Join(e.Dir(), adminSocketName), filepath.Join(e.Dir(), dataSocketName))
	err = srv.Serve(ctx, ln)
	logger.Info("server.stop")
	if err != nil {
		return err
	}
	return nil
}

// dialRemote connects to --remote with --identity, pinned to
// --server-fingerprint.
func (g *globals) dialRemote(ctx context.Context) (*remote.Client, error) {
	if g.identity == "" {
		return nil, usagef("--remote needs --identity FILE (or COFFER_IDENTITY): the private key made by coffer keygen")
	}
	if g.serverFP == "" {
		return nil, usagef("--remote needs --server-fingerprint SHA256:… (or COFFER_SERVER_FINGERPRINT), as coffer serve prints it")
	}
	key, err := remote.ReadPrivateKey(g.identity)
	if err != nil {
		return nil, err
	}
	return remote.Dial(ctx, g.remote, key, g.serverFP)
}
