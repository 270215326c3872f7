package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newTenantCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "tenant",
		Short: "Manage tenants (customers)",
	}
	c.AddCommand(newTenantCreateCmd(g), newTenantListCmd(g), newTenantLockCmd(g, true), newTenantLockCmd(g, false),
		newTenantSetCmd(g), newTenantShredCmd(g), newTenantSweepCmd(g), newTenantKeyCmd(g))
	return c
}

func newTenantLockCmd(g *globals, lock bool) *cobra.Command {
	use, short := "lock NAME", "Lock a tenant: no data in or out; deleted after the grace period unless unlocked"
	if !lock {
		use, short = "unlock NAME", "Unlock a locked tenant within its grace period"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			var ti *engine.TenantInfo
			if lock {
				ti, err = e.LockTenant(cmd.Context(), a[0])
			} else {
				ti, err = e.UnlockTenant(cmd.Context(), a[0])
			}
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(ti)
			}
			if lock {
				fmt.Fprintf(g.stdout, "tenant %s is locked; its data will be deleted after %s unless it is unlocked\n", ti.Name, ti.DeleteAfter.UTC().Format(time.RFC3339))
			} else {
				fmt.Fprintf(g.stdout, "tenant %s is unlocked\n", ti.Name)
			}
			return nil
		},
	}
}

func newTenantSetCmd(g *globals) *cobra.Command {
	var contact, quota string
	c := &cobra.Command{
		Use:   "set NAME [--contact EMAIL] [--quota SIZE]",
		Short: "Change a tenant's contact address or quota (--quota 0: none)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			var u engine.TenantUpdate
			if cmd.Flags().Changed("contact") {
				u.Contact = &contact
			}
			if cmd.Flags().Changed("quota") {
				q, err := parseSize(quota)
				if err != nil {
					return err
				}
				u.Quota = &q
			}
			if u.Contact == nil && u.Quota == nil {
				return usagef("tenant set needs --contact or --quota")
			}
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			ti, err := e.UpdateTenant(cmd.Context(), a[0], u)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(ti)
			}
			fmt.Fprintf(g.stdout, "tenant %s updated\n", ti.Name)
			return nil
		},
	}
	c.Flags().StringVar(&contact, "contact", "", "contact e-mail address for reports")
	c.Flags().StringVar(&quota, "quota", "", "storage quota, e.g. 500GiB; 0 for none")
	return c
}

func newTenantShredCmd(g *globals) *cobra.Command {
	var confirm string
	c := &cobra.Command{
		Use:   "shred NAME --confirm NAME",
		Short: "Delete a tenant irrevocably: destroy its key (master-key rotation), then its data",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if confirm == "" {
				return usagef("tenant shred needs --confirm %s", a[0])
			}
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			rep, err := e.ShredTenant(cmd.Context(), a[0], confirm)
			if rep != nil {
				printShred(g, rep)
			}
			return err
		},
	}
	c.Flags().StringVar(&confirm, "confirm", "", "the tenant name again, to confirm")
	return c
}

func newTenantSweepCmd(g *globals) *cobra.Command {
	var at string
	c := &cobra.Command{
		Use:   "sweep [--at T]",
		Short: "Shred every locked tenant whose grace period is over (one master-key rotation for all)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := parseAt(at, g.clock)
			if err != nil {
				return err
			}
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			rep, err := e.SweepTenants(cmd.Context(), t)
			if rep != nil {
				printShred(g, rep)
			}
			return err
		},
	}
	c.Flags().StringVar(&at, "at", "", "evaluate as of this time (RFC 3339; default now); like the clock, it shreds only what the records show is due")
	return c
}

// printShred reports a shred, sweep or rotation, with the warning that every
// other copy of the destroyed master-key epoch must be destroyed too.
func printShred(g *globals, rep *engine.ShredReport) {
	for _, w := range rep.Warnings {
		fmt.Fprintf(g.stderr, "warning: %s\n", w)
	}
	if g.json {
		_ = g.printJSON(rep)
	} else {
		for _, id := range rep.Shredded {
			fmt.Fprintf(g.stdout, "shredded tenant %s\n", id[:8])
		}
		if rep.NewEpoch == 0 {
			fmt.Fprintln(g.stdout, "nothing to do")
			return
		}
		fmt.Fprintf(g.stdout, "master key rotated to epoch %d; epoch %d was destroyed in %s\n", rep.NewEpoch, rep.DestroyedEpoch, strings.Join(rep.KeyFiles, ", "))
	}
	if rep.NewEpoch != 0 {
		fmt.Fprintf(g.stderr, "warning: destroy every other copy of master key epoch %d (offline backups of the key file): shredded data stays readable with it\n", rep.DestroyedEpoch)
	}
}

// parseAt parses an --at flag: RFC 3339, or "" for now.
func parseAt(s string, now func() time.Time) (time.Time, error) {
	if s == "" {
		return now(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--at %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", s)
	}
	return t, nil
}

func newTenantCreateCmd(g *globals) *cobra.Command {
	var contact, quota string
	c := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant with its own random ID and key",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			o := engine.TenantOptions{Contact: contact}
			if quota != "" {
				q, err := parseSize(quota)
				if err != nil {
					return err
				}
				o.Quota = q
			}
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			ti, err := e.CreateTenant(cmd.Context(), a[0], o)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(ti)
			}
			fmt.Fprintf(g.stdout, "created tenant %s (%s)\n", ti.Name, ti.ID[:8])
			return nil
		},
	}
	c.Flags().StringVar(&contact, "contact", "", "contact e-mail address for reports")
	c.Flags().StringVar(&quota, "quota", "", "storage quota, e.g. 500GiB (default: none)")
	return c
}

func newTenantListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List tenants with their state",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			ts, err := e.Tenants(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				if ts == nil {
					ts = []engine.TenantInfo{}
				}
				return g.printJSON(ts)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tID\tSTATE\tCONTACT\tQUOTA\tCREATED\tDELETE AFTER")
			for _, t := range ts {
				quota, del := "-", "-"
				if t.Quota > 0 {
					quota = formatBytes(t.Quota)
				}
				if t.DeleteAfter != nil {
					del = t.DeleteAfter.UTC().Format(time.DateOnly)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.ID[:8], t.State, t.Contact, quota, t.Created.UTC().Format(time.DateOnly), del)
			}
			return w.Flush()
		},
	}
}
