package main

import (
	"fmt"
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
	c.AddCommand(newTenantCreateCmd(g), newTenantListCmd(g))
	return c
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
