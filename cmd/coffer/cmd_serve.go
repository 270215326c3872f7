package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
	"coffer/engine/policy"
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
concerned at once. Backup and restore go through --remote instead.

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
	stopAdmin, err := startAdmin(ctx, e, cfg.Log)
	if err != nil {
		ln.Close()
		return err
	}
	defer stopAdmin()
	if created {
		fmt.Fprintf(g.stdout, "made a new server key in %s/%s\n", e.Dir(), remote.ServerKeyName)
	}
	fmt.Fprintf(g.stdout, "server fingerprint: %s\nlistening on %s\nadmin socket: %s\n", srv.Fingerprint(), ln.Addr(), filepath.Join(e.Dir(), adminSocketName))
	err = srv.Serve(ctx, ln)
	logger.Info("server.stop")
	if err != nil {
		return err
	}
	return nil
}

// wireRemote makes the data commands go to a server when --remote is set.
// Commands not yet served remotely refuse --remote instead of quietly
// running on a local repository.
func wireRemote(root *cobra.Command, g *globals) {
	for _, c := range root.Commands() {
		name, local := c.Name(), c.RunE
		if local == nil {
			continue
		}
		switch name {
		case "snapshots", "ls", "restore": // dump reads through openSnapshots (cmd_dump.go)
			c.RunE = func(cmd *cobra.Command, a []string) error {
				if g.remote == "" {
					return local(cmd, a)
				}
				return runRemote(cmd, g, name, a)
			}
		case "backup":
			c.RunE = func(cmd *cobra.Command, a []string) error {
				if g.remote == "" {
					return local(cmd, a)
				}
				return runRemoteBackup(cmd, g, a)
			}
		case "prune":
			c.RunE = func(cmd *cobra.Command, a []string) error {
				if g.remote == "" {
					return local(cmd, a)
				}
				return runRemotePrune(cmd, g)
			}
			// forget parses its flags first, then goes to the server itself
			// (runForget → runRemoteForget).
		}
	}
}

// runRemoteForget is coffer --remote … forget: the same flags and output
// as a local forget, for the key's tenant (an admin key). With --prune a
// prune request follows a successful forget.
func runRemoteForget(cmd *cobra.Command, g *globals, ids []string, p policy.Policy, f *forgetFlags, maxUnused float64) error {
	ctx := cmd.Context()
	cl, err := g.dialRemote(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	rep, err := cl.Forget(ctx, ids, engine.ForgetOptions{Policy: p, DryRun: f.dryRun})
	if err != nil && rep == nil {
		return err
	}
	var prep *engine.PruneReport
	name := ""
	if err == nil && f.prune && !f.dryRun {
		prep, name, err = cl.Prune(ctx, engine.PruneOptions{MaxUnusedPercent: maxUnused})
	}
	return printForgetResult(g, rep, prep, f.prune, name, err)
}

// runRemotePrune is coffer --remote … prune: the key's tenant is pruned on
// the server (an admin key), with the local command's flags and output.
func runRemotePrune(cmd *cobra.Command, g *globals) error {
	fl := cmd.Flags()
	mu, _ := fl.GetString("max-unused")
	dryRun, _ := fl.GetBool("dry-run")
	maxUnused, err := parseMaxUnused(mu)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	cl, err := g.dialRemote(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	rep, name, err := cl.Prune(ctx, engine.PruneOptions{MaxUnusedPercent: maxUnused, DryRun: dryRun})
	if rep == nil {
		return err
	}
	return printPruneResult(g, name, rep, err)
}

// runRemoteBackup is coffer --remote … backup: the same flags and output as
// a local backup, with the data chunked here and only what the server
// lacks sent to it.
func runRemoteBackup(cmd *cobra.Command, g *globals, paths []string) error {
	fl := cmd.Flags()
	host, _ := fl.GetString("host")
	tags, _ := fl.GetStringArray("tag")
	excludes, _ := fl.GetStringArray("exclude")
	stdin, _ := fl.GetBool("stdin")
	stdinName, _ := fl.GetString("stdin-filename")
	force, _ := fl.GetBool("force")
	if stdin {
		if len(paths) > 0 {
			return usagef("--stdin takes no paths")
		}
		if stdinName == "" {
			return usagef("--stdin needs --stdin-filename NAME")
		}
	} else if len(paths) == 0 {
		return usagef("give at least one path to back up, or --stdin")
	}
	ctx := cmd.Context()
	cl, err := g.dialRemote(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	pl := startProgress(g.stderr, "backed up")
	o := remote.BackupOptions{Host: host, Tags: tags, Excludes: excludes, NoParent: force, Progress: pl.p}
	var s *engine.Snapshot
	if stdin {
		s, err = cl.BackupStream(ctx, g.stdin, stdinName, o)
	} else {
		s, err = cl.Backup(ctx, paths, o)
	}
	pl.done()
	if s == nil {
		return err
	}
	if g.json {
		if jerr := g.printJSON(s); jerr != nil {
			return jerr
		}
	} else {
		st := s.Stats
		sent, _ := cl.Traffic()
		fmt.Fprintf(g.stdout, "snapshot %s saved on %s\n", s.ID[:min(8, len(s.ID))], g.remote)
		fmt.Fprintf(g.stdout, "  %d files (%d unchanged), %d folders, %s processed in %s\n",
			st.Files, st.FilesUnchanged, st.Dirs, formatBytes(st.Bytes), st.End.Sub(st.Start).Round(1e6))
		fmt.Fprintf(g.stdout, "  %d new blobs, %s added, %s stored after compression, %s sent\n",
			st.BlobsAdded, formatBytes(st.BytesAdded), formatBytes(st.BytesStored), formatBytes(sent))
	}
	return err // nil, or a partial backup (exit 3)
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

func runRemote(cmd *cobra.Command, g *globals, name string, a []string) error {
	ctx := cmd.Context()
	var target string
	var includes []string
	if name == "restore" {
		target, _ = cmd.Flags().GetString("target")
		includes, _ = cmd.Flags().GetStringArray("include")
		if target == "" {
			return usagef("restore needs --target DIR")
		}
	}
	cl, err := g.dialRemote(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	switch name {
	case "snapshots":
		ss, err := cl.Snapshots(ctx)
		if err != nil {
			return err
		}
		if g.json {
			return g.printJSON(ss)
		}
		w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tTIME\tHOST\tTAGS\tPATHS")
		for _, s := range ss {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", s.ID[:min(8, len(s.ID))], s.Time.Format(time.DateTime), s.Host, strings.Join(s.Tags, ","), strings.Join(s.Paths, " "))
		}
		if err := w.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "%d snapshots\n", len(ss))
		return nil
	case "ls":
		dir := "/"
		if len(a) == 2 {
			dir = a[1]
		}
		entries := []engine.Entry{}
		err := cl.List(ctx, a[0], dir, func(en engine.Entry) error {
			if g.json {
				entries = append(entries, en)
				return nil
			}
			_, err := fmt.Fprintln(g.stdout, en.Path)
			return err
		})
		if err != nil {
			return err
		}
		if g.json {
			return g.printJSON(entries)
		}
		return nil
	case "dump":
		return cl.Dump(ctx, a[0], a[1], g.stdout)
	case "restore":
		st, err := cl.Restore(ctx, a[0], target, includes)
		if err != nil {
			return err
		}
		for _, w := range st.Warnings {
			fmt.Fprintf(g.stderr, "warning: %s\n", w)
		}
		if g.json {
			return g.printJSON(map[string]any{"snapshot": st.Snapshot, "files": st.Files, "dirs": st.Dirs, "other": st.Other, "bytes": st.Bytes, "warnings": st.Warnings})
		}
		fmt.Fprintf(g.stdout, "restored snapshot %s to %s: %d files, %d folders, %d other, %s\n", st.Snapshot[:min(8, len(st.Snapshot))], target, st.Files, st.Dirs, st.Other, formatBytes(st.Bytes))
		return nil
	}
	return nil
}
