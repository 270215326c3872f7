package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"coffer/engine"
	"coffer/repo"
)

// globals are the global flags and the process's streams.
type globals struct {
	repo      string
	keyFile   string
	tenant    string
	json      bool
	retryLock time.Duration
	// S3 drives: the CA file of their HTTPS servers, and whether buckets
	// with versioning or object lock are accepted.
	s3CA              string
	s3AllowVersioning bool
	// Remote use: the server's address, the client's private key file and
	// the server key's expected fingerprint (docs/design.md, chapter 15).
	remote, identity, serverFP string

	stdin          io.Reader
	stdout, stderr io.Writer

	// args is the command line (sent through the admin socket), getenv
	// reads the environment (the client's, for a command from the admin
	// socket), and cwd, when set, is the folder relative paths are taken
	// from (the client's).
	args        []string
	getenv      func(string) string
	cwd         string
	commandPath string // the command that ran, without "coffer " (for logs)
	// lent, when set, is the holder's open engine: the command came
	// through the admin socket and runs on it.
	lent *engine.Engine
	// holder, when set, serves the repository this process holds to the
	// other coffer processes of the host (holder.go).
	holder *holder

	// notify holds the notification flags; sink takes the events of the
	// engine this process opened (cmd_notify.go).
	notify       notifyFlags
	sink         *eventSink
	serveMetrics *metricsListener // coffer serve --metrics

	// Tests set these (through execute): the clock, and a wrapper of every
	// drive (engine.Options.Now and WrapDrive). nil means the real ones.
	now       func() time.Time
	wrapDrive func(id string, d repo.Drive) repo.Drive
}

// clock returns the time now (g.now in tests).
func (g *globals) clock() time.Time {
	if g.now != nil {
		return g.now()
	}
	return time.Now()
}

// path makes a path argument absolute against the caller's folder (which
// differs from this process's for a command from the admin socket). URLs
// pass unchanged.
func (g *globals) path(p string) string {
	if g.cwd == "" || p == "" || filepath.IsAbs(p) || strings.Contains(p, "://") {
		return p
	}
	return filepath.Join(g.cwd, p)
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "coffer",
		Short: "Encrypted, deduplicating, erasure-coded backup storage for many tenants",
		Long: `coffer stores backups of many tenants on many drives: content-defined chunks,
deduplicated within each tenant, compressed, encrypted with the tenant's own key,
packed and Reed-Solomon coded across drives in different racks.`,
		SilenceErrors:      true,
		SilenceUsage:       true,
		DisableSuggestions: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	if g.getenv == nil {
		g.getenv = os.Getenv
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.repo, "repo", g.getenv("COFFER_REPO"), "repository folder (env COFFER_REPO)")
	pf.StringVar(&g.keyFile, "master-key-file", g.getenv("COFFER_MASTER_KEY_FILE"), "master key file (env COFFER_MASTER_KEY_FILE; default REPO/master.key)")
	pf.StringVar(&g.tenant, "tenant", g.getenv("COFFER_TENANT"), "tenant name (env COFFER_TENANT)")
	pf.BoolVar(&g.json, "json", false, "print machine-readable JSON")
	pf.DurationVar(&g.retryLock, "retry-lock", 0, "wait this long for another process that holds the repository")
	pf.StringVar(&g.s3CA, "s3-ca", g.getenv("COFFER_S3_CA"), "PEM file of the certificate authorities of s3:// drives (env COFFER_S3_CA; default: the system roots)")
	pf.StringVar(&g.remote, "remote", g.getenv("COFFER_REMOTE"), "run data commands on the server at HOST:PORT (env COFFER_REMOTE)")
	pf.StringVar(&g.identity, "identity", g.getenv("COFFER_IDENTITY"), "private key file for --remote, from coffer keygen or ssh-keygen -t ed25519 (env COFFER_IDENTITY)")
	pf.StringVar(&g.serverFP, "server-fingerprint", g.getenv("COFFER_SERVER_FINGERPRINT"), "expected fingerprint of the --remote server's key, SHA256:…; during a server-key rotation OLD,NEW (env COFFER_SERVER_FINGERPRINT)")
	pf.BoolVar(&g.s3AllowVersioning, "s3-allow-versioning", false, "accept S3 buckets with versioning or object lock (only when lifecycle rules expire old versions: a delete there only adds a marker)")
	addNotifyFlags(pf, g)

	root.AddCommand(
		newInitCmd(g),
		newTenantCmd(g),
		newBackupCmd(g),
		newSnapshotsCmd(g),
		newLsCmd(g),
		newRestoreCmd(g),
		newDumpCmd(g),
		newMountCmd(g),
		newCheckCmd(g),
		newScrubCmd(g),
		newIndexCmd(g),
		newDriveCmd(g),
		newKeyCmd(g),
		newReportCmd(g),
		newAuditCmd(g),
		newForgetCmd(g),
		newPruneCmd(g),
		newKeygenCmd(g),
		newServeCmd(g),
		newNotifyCmd(g),
		newMetricsCmd(g),
		newFindCmd(g),
		newDiffCmd(g),
		newStatsCmd(g),
		newTagCmd(g),
		newRewriteCmd(g),
		newVersionCmd(g),
	)
	for _, c := range root.Commands() {
		addExitHelp(c)
		releaseAfter(c, g)
	}
	// The exit codes end the root's help (not every command's: they are
	// the same for all), and are a help topic of their own.
	root.SetUsageTemplate(root.UsageTemplate() + "{{if not .HasParent}}\n" + exitCodesHelp + "\n{{end}}")
	root.AddCommand(&cobra.Command{
		Use:   "exit-codes",
		Short: "The exit codes of every command",
		Long:  exitCodesHelp,
	})
	return root
}

// releaseAfter makes c and its subcommands, once done, wait for the
// commands this process serves while it holds the repository, then let
// the repository go (holder.go).
func releaseAfter(c *cobra.Command, g *globals) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, a []string) error {
			err := run(cmd, a)
			g.releaseHolder(cmd.Context())
			return err
		}
	}
	for _, sub := range c.Commands() {
		releaseAfter(sub, g)
	}
}

// groupRunE makes a command group (tenant, drive, ...) refuse an unknown
// subcommand with a usage error instead of printing help and succeeding.
func groupRunE(cmd *cobra.Command, a []string) error {
	if len(a) > 0 {
		return usagef("unknown command %q for %q (see %s --help)", a[0], cmd.CommandPath(), cmd.CommandPath())
	}
	return cmd.Help()
}

func addExitHelp(c *cobra.Command) {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	if c.Long == "" {
		c.Long = c.Short
	}
	if c.HasSubCommands() && c.RunE == nil {
		c.RunE = groupRunE
		c.Args = cobra.ArbitraryArgs
	}
	for _, sub := range c.Commands() {
		addExitHelp(sub)
	}
}

// args wraps a cobra argument rule so its errors count as usage errors.
func args(rule cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := rule(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func (g *globals) repoDir() (string, error) {
	if g.repo == "" {
		return "", usagef("no repository given: use --repo DIR or set COFFER_REPO")
	}
	return g.repo, nil
}

// open opens the repository for a command. When another coffer process
// holds it (holder.go), a data command gets a session on that process
// (open returns a *heldSession as its error, which g.session takes), and
// any other command runs in that process instead, through its admin
// socket (admin.go): open returns a forwardedError with its exit code.
// Otherwise this process opens the repository and, while it holds it,
// serves the others.
func (g *globals) open(cmd *cobra.Command) (*engine.Engine, error) {
	dir, err := g.repoDir()
	if err != nil {
		return nil, err
	}
	if g.lent != nil {
		if ok, why := socketCommand(cmd); !ok {
			return nil, fmt.Errorf("%w: another coffer process holds %s; %s", engine.ErrRepoLocked, dir, why)
		}
		return g.lent.Retain(), nil
	}
	var e *engine.Engine
	err = g.untilFree(cmd.Context(), func() error {
		if g.dataCommand(cmd) {
			if s, ok, err := g.dialData(cmd.Context(), dir); ok {
				if err != nil {
					return err
				}
				return &heldSession{s}
			}
		} else if ok, err := g.forward(cmd, dir); ok {
			return err
		}
		var err error
		e, err = g.openHere(cmd, dir)
		return err
	})
	if err != nil {
		return nil, err
	}
	g.serveHeld(cmd, e)
	return e, nil
}

// dataCommand reports whether cmd is a data command, which runs through a
// session (session.go): those of one tenant (prune without --tenant prunes
// every tenant, as an operator's command).
func (g *globals) dataCommand(cmd *cobra.Command) bool {
	switch strings.TrimPrefix(cmd.CommandPath(), "coffer ") {
	case "backup", "restore", "snapshots", "ls", "dump", "forget", "prune",
		"find", "diff", "stats", "tag", "rewrite", "mount":
		return g.tenant != ""
	}
	return false
}

// openHere opens the repository in this process; engine.ErrRepoLocked
// when another holds it.
func (g *globals) openHere(cmd *cobra.Command, dir string) (*engine.Engine, error) {
	// An earlier open of this command (before an index rebuild, say)
	// still serves others: it ends first.
	g.releaseHolder(cmd.Context())
	var escrow []string
	for _, p := range filepath.SplitList(g.getenv("COFFER_MASTER_KEY_ESCROW")) {
		if p = strings.TrimSpace(p); p != "" {
			escrow = append(escrow, p)
		}
	}
	sink, err := g.openSink(dir)
	if err != nil {
		return nil, err
	}
	e, err := engine.Open(dir, engine.Options{
		MasterKeyFile: g.keyFile,
		Escrow:        escrow,
		Command:       "coffer " + cmd.Name(),
		Warn:          g.stderr,
		Now:           g.now,
		WrapDrive:     g.wrapDrive,
		Events:        sink.handle,

		S3CAFile:          g.s3CA,
		S3AllowVersioning: g.s3AllowVersioning,
	})
	if err != nil {
		return nil, err
	}
	if err := g.attachSink(e); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// openTenant opens the repository and the --tenant tenant.
func (g *globals) openTenant(cmd *cobra.Command) (*engine.Engine, *engine.Tenant, error) {
	if g.tenant == "" {
		return nil, nil, usagef("no tenant given: use --tenant NAME or set COFFER_TENANT")
	}
	e, err := g.open(cmd)
	if err != nil {
		return nil, nil, err
	}
	t, err := e.OpenTenant(cmd.Context(), g.tenant)
	if errors.Is(err, engine.ErrTenantNotFound) {
		// The index may have lost the tenant: say so when the drives hold
		// a tenant record it lacks.
		if lag := e.CheckTenantRecords(cmd.Context()); errors.Is(lag, engine.ErrIndexBehind) || engine.IndexDamaged(lag) {
			err = lag
		}
	}
	if err != nil {
		e.Close()
		return nil, nil, err
	}
	return e, t, nil
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isTerminal reports whether w is a terminal (progress is shown only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// parseSize parses a byte size: a number with an optional unit
// (k, M, G, T with or without "iB"/"B"; all powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	lower := strings.ToLower(t)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"tb", 1 << 40}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"b", 1}} {
		if strings.HasSuffix(lower, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(t, "%d", &n); err != nil || n < 0 || fmt.Sprint(n) != t {
		return 0, usagef("size %q is not a number of bytes such as 16MiB", s)
	}
	if n > (1<<62)/mult {
		return 0, usagef("size %q is too large", s)
	}
	return n * mult, nil
}

// formatBytes renders a byte count for people.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// parseDrives parses "rack:path,rack:path". A path may be an S3 drive URL
// (rack:s3://host:port/bucket): the rack ends at the first ':', and a URL is
// kept as it is (it is no folder to make absolute).
func parseDrives(s string) ([]engine.DriveSpec, error) {
	var out []engine.DriveSpec
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		rack, path, ok := strings.Cut(part, ":")
		if !ok || rack == "" || path == "" {
			return nil, usagef("drive %q is not RACK:PATH", part)
		}
		if strings.HasPrefix(strings.ToLower(path), "s3") && strings.Contains(path, "://") {
			out = append(out, engine.DriveSpec{Rack: rack, Path: path})
			continue
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, err
		}
		out = append(out, engine.DriveSpec{Rack: rack, Path: abs})
	}
	if len(out) == 0 {
		return nil, usagef("--drives lists no drives")
	}
	return out, nil
}
