package main

import "github.com/spf13/cobra"

// newIndexCmd is being written (issue 3); until then the command reports that.
func newIndexCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "index",
		Short:  "(index: being written)",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			return usagef("coffer index is not available in this build yet")
		},
	}
}
