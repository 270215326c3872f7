package notify

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/mail"
	"sort"
	"strings"
	"time"

	"coffer/engine"
	"coffer/internal/mailmsg"
)

// Alert is the JSON body of a webhook (docs/design.md, chapter 16). It
// holds what the event holds: IDs, fixed words and numbers, and the
// tenant's name (webhooks are the operator's targets).
type Alert struct {
	ID         string           `json:"id"` // the message ID (also X-Coffer-Delivery)
	Kind       string           `json:"kind"`
	Severity   string           `json:"severity"`
	Time       time.Time        `json:"time"`
	Repository string           `json:"repository"`
	Summary    string           `json:"summary"`
	TenantID   string           `json:"tenant_id,omitempty"`
	Tenant     string           `json:"tenant,omitempty"`
	Drive      string           `json:"drive,omitempty"`
	Reason     string           `json:"reason,omitempty"`
	Seconds    float64          `json:"seconds,omitempty"`
	Counts     map[string]int64 `json:"counts,omitempty"`
}

// Summary is one line that says what an event means.
func Summary(ev engine.Event) string {
	c := ev.Counts
	who := ev.Tenant
	if who == "" && ev.TenantID != "" {
		who = "tenant " + shortID(ev.TenantID)
	}
	switch ev.Kind {
	case engine.EventDriveFailed:
		return fmt.Sprintf("drive %s was marked failed; its shards count as missing until scrub --repair re-homes them", shortID(ev.Drive))
	case engine.EventDriveUnreachable:
		return fmt.Sprintf("drive %s is unreachable; reads reconstruct from the other drives", shortID(ev.Drive))
	case engine.EventScrubDamage, engine.EventScrubClean, engine.EventRepairFinished:
		var parts []string
		for _, k := range []string{"missing", "corrupt", "misplaced", "orphaned", "stale_temp", "errors"} {
			if c[k] > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", c[k], strings.ReplaceAll(k, "_", " ")))
			}
		}
		found := "nothing"
		if len(parts) > 0 {
			found = strings.Join(parts, ", ")
		}
		s := fmt.Sprintf("scrub of %d packs found %s", c["packs"], found)
		if ev.Kind == engine.EventRepairFinished {
			s = fmt.Sprintf("scrub --repair of %d packs found %s; %d repaired, %d left", c["packs"], found, c["repaired"], c["unrepaired"])
		}
		if c["packs_below_full"] > 0 {
			s += fmt.Sprintf("; %d packs below full redundancy", c["packs_below_full"])
		}
		if c["packs_unreadable"] > 0 {
			s += fmt.Sprintf("; %d packs UNREADABLE", c["packs_unreadable"])
		}
		return s
	case engine.EventBackupFinished:
		return fmt.Sprintf("backup of %s finished: %d bytes, %d new chunks", who, c["bytes"], c["chunks_added"])
	case engine.EventBackupFailed:
		return fmt.Sprintf("backup of %s failed (%s)", who, ev.Reason)
	case engine.EventBackupQuota:
		return fmt.Sprintf("backup of %s was refused: its quota is used up", who)
	case engine.EventTenantQuota:
		return fmt.Sprintf("%s uses %d%% of its quota", who, c["percent"])
	case engine.EventRestoreFinished:
		return fmt.Sprintf("restore of %s finished: %d files, %d bytes", who, c["files"], c["bytes"])
	case engine.EventRestoreFailed:
		return fmt.Sprintf("restore of %s failed (%s)", who, ev.Reason)
	case engine.EventTenantLocked:
		return fmt.Sprintf("%s was locked: no data in or out; it will be shredded after the grace period", who)
	case engine.EventTenantUnlocked:
		return fmt.Sprintf("%s was unlocked", who)
	case engine.EventTenantShredded:
		return fmt.Sprintf("%s was shredded (crypto-shredding; irrevocable)", who)
	case engine.EventSweepFinished:
		s := fmt.Sprintf("sweep shredded %d tenants and kept %d", c["shredded"], c["kept"])
		if ev.Reason != "" {
			s += " and failed (" + ev.Reason + ")"
		}
		return s
	case engine.EventAuditVerified:
		return fmt.Sprintf("audit chain of %d entries verified", c["entries"])
	case engine.EventAuditFailed:
		return fmt.Sprintf("AUDIT CHAIN VERIFICATION FAILED: %d problems in %d entries", c["problems"], c["entries"])
	}
	return ev.Kind
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// alertJSON renders the webhook body of ev.
func alertJSON(id, repository string, ev engine.Event) ([]byte, error) {
	return json.Marshal(Alert{
		ID: id, Kind: ev.Kind, Severity: ev.Severity.String(), Time: ev.Time.UTC(), Repository: repository,
		Summary: Summary(ev), TenantID: ev.TenantID, Tenant: ev.Tenant, Drive: ev.Drive, Reason: ev.Reason,
		Seconds: ev.Seconds, Counts: ev.Counts,
	})
}

// alertMail renders the operator's e-mail of ev.
func alertMail(msgID, repository, from, to string, ev engine.Event) []byte {
	var body strings.Builder
	fmt.Fprintf(&body, "%s\n\n", Summary(ev))
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&body, "%-12s %s\n", k+":", v)
		}
	}
	line("Event", ev.Kind)
	line("Severity", ev.Severity.String())
	line("Time", ev.Time.UTC().Format("2006-01-02 15:04:05 UTC"))
	line("Repository", repository)
	line("Tenant", ev.Tenant)
	line("Tenant ID", ev.TenantID)
	line("Drive", ev.Drive)
	line("Reason", ev.Reason)
	if ev.Seconds > 0 {
		line("Duration", (time.Duration(ev.Seconds * float64(time.Second))).Round(time.Millisecond).String())
	}
	if len(ev.Counts) > 0 {
		keys := make([]string, 0, len(ev.Counts))
		for k := range ev.Counts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		body.WriteString("\n")
		for _, k := range keys {
			fmt.Fprintf(&body, "  %-20s %d\n", k, ev.Counts[k])
		}
	}
	body.WriteString("\nSent by Coffer.\n")
	subject := fmt.Sprintf("[coffer %s] %s: %s", strings.ToUpper(ev.Severity.String()), ev.Kind, Summary(ev))
	return renderMail(from, to, subject, ev.Time, msgID, body.String())
}

// renderMail makes a plain-text RFC 5322 message with CRLF line endings.
// from and to are bare addresses (checked by the caller); the subject is
// Q-encoded when it is not ASCII.
func renderMail(from, to, subject string, date time.Time, msgID, body string) []byte {
	return mailmsg.Render([][2]string{
		{"From", from},
		{"To", to},
		{"Subject", mime.QEncoding.Encode("utf-8", oneLine(subject))},
		{"Date", date.UTC().Format(time.RFC1123Z)},
		{"Message-ID", msgID},
	}, body)
}

// headerID is the Message-ID header value of message ID id from sender
// from: <id@domain of from>.
func headerID(id, from string) string {
	domain := "localhost"
	if a, err := mail.ParseAddress(from); err == nil {
		if i := strings.LastIndexByte(a.Address, '@'); i >= 0 && i+1 < len(a.Address) {
			domain = a.Address[i+1:]
		}
	}
	return "<coffer." + id + "@" + domain + ">"
}
