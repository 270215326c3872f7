package main

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
	"coffer/engine/remote"
)

// Client keys: coffer keygen on the customer's side, coffer tenant key
// add|list|remove on the operator's (docs/design.md, chapter 15).

func newKeygenCmd(g *globals) *cobra.Command {
	var out, comment string
	c := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Make an ed25519 key pair for a client: FILE (private, mode 0600) and FILE.pub (OpenSSH form)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("keygen needs --out FILE")
			}
			fp, err := runKeygen(out, comment)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]string{"private_key": out, "public_key": out + ".pub", "fingerprint": fp})
			}
			fmt.Fprintf(g.stdout, "wrote %s (private, keep it secret) and %s\nfingerprint: %s\n", out, out+".pub", fp)
			fmt.Fprintf(g.stdout, "give %s to the operator to register with: coffer tenant key add TENANT %s --role backup\n", out+".pub", out+".pub")
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "private key file to write (FILE.pub gets the public key)")
	c.Flags().StringVar(&comment, "comment", "", "comment in the public key (default user@host)")
	return c
}

func runKeygen(out, comment string) (string, error) {
	if comment == "" {
		host, _ := os.Hostname()
		name := "coffer"
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		comment = name + "@" + host
	}
	priv, err := remote.GenerateKey()
	if err != nil {
		return "", err
	}
	if err := remote.WriteKeyPair(out, priv, comment); err != nil {
		return "", err
	}
	return engine.KeyFingerprint(priv.Public().(ed25519.PublicKey)), nil
}

func newTenantKeyCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "key",
		Short: "Manage the public keys with which a tenant's clients log in to coffer serve",
	}
	var roles string
	add := &cobra.Command{
		Use:   "add NAME PUBKEYFILE --role backup|restore|admin[,...]",
		Short: "Register a client's public key (ssh-ed25519, as coffer keygen or ssh-keygen write it)",
		Args:  args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if roles == "" {
				return usagef("tenant key add needs --role backup, restore or admin (comma-separated for several)")
			}
			rs, err := engine.ParseRoles(roles)
			if err != nil {
				return err
			}
			pub, comment, err := remote.ReadPublicKey(g.path(a[1]))
			if err != nil {
				return err
			}
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			k, err := e.AddClientKey(cmd.Context(), a[0], pub, comment, rs)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(k)
			}
			fmt.Fprintf(g.stdout, "registered key %s for tenant %s with roles %s\n", k.Fingerprint, a[0], strings.Join(k.Roles, ","))
			return nil
		},
	}
	add.Flags().StringVar(&roles, "role", "", "roles: backup (append-only), restore (read), admin (forget and prune too); comma-separated")
	list := &cobra.Command{
		Use:   "list NAME",
		Short: "List a tenant's client keys",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			keys, err := e.ClientKeys(cmd.Context(), a[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(keys)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "FINGERPRINT\tROLES\tADDED\tCOMMENT")
			for _, k := range keys {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", k.Fingerprint, strings.Join(k.Roles, ","), k.Added.UTC().Format(time.DateTime), k.Comment)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%d keys\n", len(keys))
			return nil
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME FINGERPRINT",
		Short: "Remove a client key; its open sessions are refused from their next request",
		Args:  args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			if err := e.RemoveClientKey(cmd.Context(), a[0], remote.NormalizeFingerprint(a[1])); err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(g.stdout, "removed key %s from tenant %s\n", a[1], a[0])
				return nil
			}
			return g.printJSON(map[string]string{"removed": a[1], "tenant": a[0]})
		},
	}
	c.AddCommand(add, list, remove)
	return c
}
