package main

import "github.com/spf13/cobra"

// newScrubCmd is being written (issue 3); until then the command reports that.
func newScrubCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "scrub",
		Short:  "(scrub: being written)",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			return usagef("coffer scrub is not available in this build yet")
		},
	}
}
