package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"coffer/engine"
	"coffer/engine/remote"
)

// versionInfo is what coffer version prints.
type versionInfo struct {
	Version  string `json:"version"`            // the module version, or "(devel)"
	Revision string `json:"revision,omitempty"` // VCS commit the binary was built from
	Time     string `json:"time,omitempty"`     // its commit time
	Modified bool   `json:"modified,omitempty"` // built from a tree with changes
	Go       string `json:"go"`
	Platform string `json:"platform"`
	Protocol int    `json:"protocol"` // remote protocol version (coffer serve, --remote)
	Program  string `json:"program"`  // recorded in every snapshot
}

func buildVersion() versionInfo {
	v := versionInfo{Version: "(unknown)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		Protocol: remote.ProtocolVersion, Program: engine.ProgramVersion}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.time":
				v.Time = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the Go version and the remote protocol version",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := buildVersion()
			if g.json {
				return g.printJSON(v)
			}
			rev := ""
			if v.Revision != "" {
				rev = " " + v.Revision[:min(12, len(v.Revision))]
				if v.Modified {
					rev += "+modified"
				}
			}
			_, err := fmt.Fprintf(g.stdout, "coffer %s%s (%s), %s %s, protocol %d\n", v.Version, rev, v.Program, v.Go, v.Platform, v.Protocol)
			return err
		},
	}
}
