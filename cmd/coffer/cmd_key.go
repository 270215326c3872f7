package main

import (
	"github.com/spf13/cobra"
)

func newKeyCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "key",
		Short: "Master key management",
	}
	c.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Re-wrap every tenant key under a new master-key epoch and destroy the old one",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			rep, err := e.RotateMasterKey(cmd.Context())
			if rep != nil {
				printShred(g, rep)
			}
			return err
		},
	})
	return c
}
