package main

import "github.com/spf13/cobra"

// newDriveCmd is being written (issue 3); until then the command reports that.
func newDriveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "drive",
		Short:  "(drive: being written)",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			return usagef("coffer drive is not available in this build yet")
		},
	}
}
