package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"coffer/engine"
)

func newAuditCmd(g *globals) *cobra.Command {
	var (
		verify  bool
		anchors []string
	)
	c := &cobra.Command{
		Use:   "audit [--verify [--anchor SEQ:MAC]...]",
		Short: "List the audit trail, or verify its chain of MACs and its anchors",
		Long: `List the audit trail: one line per entry with its sequence number, time (UTC),
actor, action, tenant ID (first 8 hex digits), outcome and detail.

--verify checks every entry's MAC, the sequence numbers, the links across
master-key rotations, the head anchored in the index and on the drives, and
that every snapshot (in the index or on the drives) has its backup entry; it
exits 14 if an entry was altered, removed, reordered or cut off, or a snapshot
was saved unaudited. --anchor
SEQ:MAC (repeatable) also checks the head printed by an earlier weekly report,
which catches a tail cut off everywhere at once.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var as []engine.AuditAnchor
			for _, s := range anchors {
				a, err := engine.ParseAuditAnchor(s)
				if err != nil {
					return usageError{err}
				}
				as = append(as, a)
			}
			if len(as) > 0 && !verify {
				return usagef("--anchor needs --verify")
			}
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			if verify {
				return runAuditVerify(cmd.Context(), g, e, as)
			}
			return runAuditList(cmd.Context(), g, e)
		},
	}
	c.Flags().BoolVar(&verify, "verify", false, "verify the chain and its anchors (exit 14 on damage)")
	c.Flags().StringArrayVar(&anchors, "anchor", nil, "head SEQ:MAC from an earlier weekly report that must still be in the log (with --verify)")
	return c
}

// runAuditList prints every entry, streaming: a JSON array with --json, else
// one line per entry.
func runAuditList(ctx context.Context, g *globals, e *engine.Engine) error {
	if g.json {
		return writeAuditJSON(ctx, g.stdout, e)
	}
	fmt.Fprintf(g.stdout, "%-6s  %-20s  %-16s  %-14s  %-8s  %s\n", "SEQ", "TIME", "ACTOR", "ACTION", "TENANT", "OUTCOME")
	return e.AuditLog(ctx, func(en engine.AuditEntry) error {
		_, err := fmt.Fprintln(g.stdout, auditLine(en))
		return err
	})
}

// auditLine is the human form of an entry.
func auditLine(en engine.AuditEntry) string {
	tenant := "-"
	if len(en.Tenant) >= 8 {
		tenant = en.Tenant[:8]
	}
	s := fmt.Sprintf("%-6d  %-20s  %-16s  %-14s  %-8s  %s", en.Seq, en.Time.UTC().Format("2006-01-02T15:04:05Z"), en.Actor, en.Action, tenant, en.Outcome)
	if en.Detail != "" {
		s += "  " + en.Detail
	}
	return s
}

// writeAuditJSON writes the entries as one JSON array without holding them
// all in memory.
func writeAuditJSON(ctx context.Context, w io.Writer, e *engine.Engine) error {
	if _, err := io.WriteString(w, "["); err != nil {
		return err
	}
	sep := "\n  "
	err := e.AuditLog(ctx, func(en engine.AuditEntry) error {
		b, err := json.MarshalIndent(en, "  ", "  ")
		if err != nil {
			return err
		}
		if _, err := io.WriteString(w, sep); err != nil {
			return err
		}
		sep = ",\n  "
		_, err = w.Write(b)
		return err
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n]\n")
	return err
}

// runAuditVerify prints the verification report; damage is returned as an
// error wrapping engine.ErrCheckFailed (exit 14).
func runAuditVerify(ctx context.Context, g *globals, e *engine.Engine, anchors []engine.AuditAnchor) error {
	rep, err := e.VerifyAudit(ctx, anchors...)
	if rep == nil {
		return err
	}
	if g.json {
		if jerr := g.printJSON(rep); jerr != nil {
			return jerr
		}
		return err
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(g.stdout, "problem: %s\n", p)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(g.stdout, "note: %s\n", n)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "audit trail verified: %d entries, %d key rotations, %s each with its backup entry, head %d:%s\n", rep.Entries, rep.Rotations, plural(int64(rep.Snapshots), "snapshot", "snapshots"), rep.HeadSeq, rep.HeadMAC)
	return nil
}
