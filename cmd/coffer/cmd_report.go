package main

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"time"

	"github.com/spf13/cobra"

	"coffer/engine"
	"coffer/notify"
)

// reportOptions are the flags of coffer report.
type reportOptions struct {
	at   string // RFC 3339; "" = now
	out  string // folder for the messages; "" = none
	from string // sender of the messages; "" = coffer@HOSTNAME
	send bool   // deliver the messages over SMTP (cmd_notify.go)
}

func newReportCmd(g *globals) *cobra.Command {
	var o reportOptions
	c := &cobra.Command{
		Use:   "report [--at RFC3339] [--json] [--out DIR]",
		Short: "Weekly data report of every tenant; flags tenants without a backup in the last week",
		Long: `Weekly data report of every tenant, locked ones included: state, contact,
snapshot count, last successful backup, size of the latest backup, stored
(deduplicated, compressed) bytes, bytes on disk with parity, use against quota,
and for a locked tenant the date its data will be deleted. A tenant with no
snapshot dated in the 7 days before --at (after at-7d, up to and including at)
is flagged ` + engine.ReportFlag + `.

--out DIR writes one ready-to-send RFC 5322 message per tenant (DIR/NAME.eml,
To: the tenant's contact) and DIR/` + engine.OperatorSummaryFile + ` for the operator.

--send delivers each tenant's message to its contact and the summary to
--operator-email over --smtp (see coffer notify --help), through the outbox
REPO/outbox: a message that cannot be delivered waits there and is tried
again on the next run (exit 1 until then), and a second --send in the same
week (ISO week of --at, UTC) sends nothing twice. Shredded tenants get
nothing; locked ones get their report, flagged when no backup ran.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			at, err := parseReportAt(o.at)
			if err != nil {
				return err
			}
			if o.from != "" {
				if _, err := mail.ParseAddress(o.from); err != nil {
					return usagef("--from %q is not an e-mail address", o.from)
				}
			}
			e, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer e.Close()
			return runReport(cmd.Context(), g, e, at, o)
		},
	}
	c.Flags().StringVar(&o.at, "at", "", "evaluate the report as of this time (RFC 3339, default now)")
	c.Flags().StringVar(&o.out, "out", "", "write one e-mail message per tenant and the operator summary into this folder")
	c.Flags().StringVar(&o.from, "from", "", "sender address of the messages (default coffer@HOSTNAME)")
	c.Flags().BoolVar(&o.send, "send", false, "deliver the messages over SMTP (--smtp, --operator-email)")
	return c
}

// parseReportAt parses --at: RFC 3339, or now when empty.
func parseReportAt(s string) (time.Time, error) {
	if s == "" {
		return time.Now().UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--at %q is not an RFC 3339 time such as 2026-01-31T23:59:59Z", s)
	}
	return t, nil
}

// runReport makes the report and prints it (JSON or a table), and writes the
// messages when o.out is set.
func runReport(ctx context.Context, g *globals, e *engine.Engine, at time.Time, o reportOptions) (err error) {
	r, err := e.Report(ctx, at)
	if err != nil {
		return err
	}
	var written []string
	if o.out != "" {
		written, err = r.WriteMessages(g.path(o.out), o.from)
		if err != nil {
			return err
		}
	}
	var sendErr error
	if o.send {
		sendErr = sendReport(ctx, g, e, r, o.from)
		if errors.Is(sendErr, notify.ErrConfig) {
			return sendErr
		}
	}
	if g.json {
		if err := g.printJSON(r); err != nil {
			return err
		}
		return sendErr
	}
	defer func() {
		if err == nil {
			err = sendErr
		}
	}()
	fmt.Fprintf(g.stdout, "Weekly report, %s to %s\n\n", r.PeriodStart.Format(time.RFC3339), r.At.Format(time.RFC3339))
	if err := r.WriteTable(g.stdout); err != nil {
		return err
	}
	flagged := r.Flagged()
	if len(flagged) > 0 {
		fmt.Fprintln(g.stdout)
	}
	for _, tr := range flagged {
		fmt.Fprintf(g.stdout, "%s: %s\n", tr.Name, engine.ReportFlag)
	}
	for _, tr := range r.Tenants {
		if tr.Problem != "" {
			fmt.Fprintf(g.stdout, "%s: %s\n", tr.Name, tr.Problem)
		}
	}
	t := r.Totals
	fmt.Fprintf(g.stdout, "\n%d tenants (%d active, %d locked), %d flagged, %d snapshots; stored %s, on disk with parity %s\n",
		t.Tenants, t.Active, t.Locked, t.Flagged, t.Snapshots, formatBytes(t.StoredBytes), formatBytes(t.PhysicalBytes))
	if o.out != "" {
		fmt.Fprintf(g.stdout, "wrote %d messages and %s to %s\n", len(written)-1, engine.OperatorSummaryFile, o.out)
	}
	return nil
}

// sendReport delivers the report's messages (coffer report --send) and
// says what it did on stderr, so that stdout stays the report.
func sendReport(ctx context.Context, g *globals, e *engine.Engine, r *engine.Report, from string) error {
	if from != "" && g.notify.mailFrom == "" {
		g.notify.mailFrom = from
	}
	n, err := g.newNotifier(e)
	if err != nil {
		return err
	}
	if n == nil || g.notify.smtp == "" {
		return usageError{fmt.Errorf("%w: report --send needs an SMTP server: give --smtp HOST:PORT (or COFFER_SMTP)", notify.ErrConfig)}
	}
	res, err := n.SendReport(ctx, r)
	if res != nil {
		d := res.Delivery
		if d == nil {
			d = &notify.Delivery{}
		}
		fmt.Fprintf(g.stderr, "report --send: %d messages queued, %d already sent this week, %d tenants without a usable contact; delivered %d, waiting %d\n",
			res.Queued, res.AlreadySent, res.NoContact, d.Sent, d.Failed+d.Waiting)
	}
	return err
}
