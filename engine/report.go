package engine

// The weekly data report (docs/design.md): per tenant, its state,
// backups and sizes as of a given time, with the tenants whose backups have
// not run in the last week flagged. The report holds only operator data:
// tenant names, IDs and contacts, counts, sizes, times and states. It never
// holds file names, paths, host names or tags, although it opens snapshot
// records to read their times and sizes.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"coffer/index"
	"coffer/internal/mailmsg"
)

// ReportFlag is the exact text that marks a tenant with no successful backup
// in the week before the report time (promise 4 of the design brief).
const ReportFlag = "*** BACKUPS NOT RUN IN LAST WEEK ***"

// ReportPeriod is the length of the week a report covers.
const ReportPeriod = 7 * 24 * time.Hour

// OperatorSummaryFile is the name of the operator's summary written by
// WriteMessages next to the tenants' messages.
const OperatorSummaryFile = "operator-summary.txt"

// Report is the weekly data report of every tenant, evaluated as of At.
type Report struct {
	// Repository is the repository ID.
	Repository string `json:"repository"`
	// At is the time the report is evaluated at (the end of the week).
	At time.Time `json:"at"`
	// PeriodStart is At minus ReportPeriod. A backup counts for the week
	// when PeriodStart < its time <= At.
	PeriodStart time.Time `json:"period_start"`
	// Generated is when the report was made (the engine's clock). Sizes are
	// those of the index at that moment, not as of At.
	Generated time.Time `json:"generated"`
	// Tenants has one entry per tenant, of every state, sorted by name.
	Tenants []TenantReport `json:"tenants"`
	// Totals sum the tenants for the operator.
	Totals ReportTotals `json:"totals"`
	// AuditHead is the head of the audit chain when the report was made
	// (Engine.AuditHead), so a later cut of the chain's tail is detected
	// (VerifyAudit with this anchor). It is nil when the log is empty.
	AuditHead *ReportAuditHead `json:"audit_head"`
}

// ReportAuditHead is the head of the audit chain: the sequence number of the
// last entry and its chained MAC (hex).
type ReportAuditHead struct {
	Seq uint64 `json:"seq"`
	MAC string `json:"mac"`
}

// TenantReport is one tenant's part of the report.
type TenantReport struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	State   string `json:"state"`
	Contact string `json:"contact,omitempty"`
	// Quota in bytes; 0 means none.
	Quota int64 `json:"quota,omitempty"`
	// QuotaUsedPercent is StoredBytes as a percentage of Quota; nil when the
	// tenant has no quota.
	QuotaUsedPercent *float64 `json:"quota_used_percent,omitempty"`

	// Snapshots counts the snapshots dated at or before At.
	Snapshots int `json:"snapshots"`
	// UnreadableSnapshots counts snapshot records that could not be opened
	// (damage; coffer check says more). They count for nothing else.
	UnreadableSnapshots int `json:"unreadable_snapshots,omitempty"`
	// LastBackup is the time of the newest snapshot dated at or before At;
	// nil if there is none.
	LastBackup *time.Time `json:"last_backup,omitempty"`
	// LatestLogicalBytes is the size of the data the latest snapshot holds
	// (its total_bytes_processed), 0 without one.
	LatestLogicalBytes int64 `json:"latest_logical_bytes"`

	// StoredBytes is the sum of the sealed lengths of the tenant's blobs:
	// deduplicated and compressed, before parity.
	StoredBytes int64 `json:"stored_bytes"`
	// Blobs counts the tenant's blobs.
	Blobs int64 `json:"blobs"`
	// PackBytes is the sum of the data lengths of the tenant's packs: the
	// stored bytes plus space held by blobs that prune has not yet removed.
	PackBytes int64 `json:"pack_bytes"`
	// Packs counts the tenant's packs.
	Packs int64 `json:"packs"`
	// PhysicalBytes is the space the packs take on the drives, parity
	// included: the sum over packs of ShardLen × (K+M), without the shard
	// headers and checksums.
	PhysicalBytes int64 `json:"physical_bytes"`

	// LockedAt and DeleteAfter are set for a locked tenant: when it was
	// locked and when its grace period ends and its data is deleted.
	LockedAt    *time.Time `json:"locked_at,omitempty"`
	DeleteAfter *time.Time `json:"delete_after,omitempty"`

	// NotRun is true when no snapshot is dated in (PeriodStart, At]; Flag
	// then holds ReportFlag.
	NotRun bool   `json:"backups_not_run_in_last_week"`
	Flag   string `json:"flag,omitempty"`

	// Problem says why the tenant's snapshots could not be read at all (for
	// example its key is wrapped under another master-key epoch); "" if none.
	// Such a tenant is flagged: no backup can be shown to have run.
	Problem string `json:"problem,omitempty"`
}

// ReportTotals sum the tenants of a report.
type ReportTotals struct {
	Tenants       int   `json:"tenants"`
	Active        int   `json:"active"`
	Locked        int   `json:"locked"`
	Flagged       int   `json:"flagged"`
	NoContact     int   `json:"no_contact"`
	Problems      int   `json:"problems"`
	Snapshots     int   `json:"snapshots"`
	LogicalBytes  int64 `json:"latest_logical_bytes"`
	StoredBytes   int64 `json:"stored_bytes"`
	PackBytes     int64 `json:"pack_bytes"`
	PhysicalBytes int64 `json:"physical_bytes"`
}

// Report builds the weekly report of every tenant, locked ones included, as
// of at: snapshots dated after at are left out, and a tenant with no snapshot
// dated in (at-7d, at] is flagged. Sizes come from the index as it is when
// Report runs. Memory does not grow with the number of blobs or packs: the
// index is streamed. It reads only; it is safe to call while backups run, and
// the numbers are then those of some moment during the call.
func (e *Engine) Report(ctx context.Context, at time.Time) (*Report, error) {
	if at.IsZero() {
		return nil, invalidf("report time is zero")
	}
	at = at.UTC()
	e.mu.Lock()
	repoID := e.cfg.Repository
	e.mu.Unlock()
	r := &Report{
		Repository:  repoID,
		At:          at,
		PeriodStart: at.Add(-ReportPeriod),
		Generated:   e.now().UTC(),
		Tenants:     []TenantReport{},
	}
	all, err := e.tenantEntries()
	if err != nil {
		return nil, fmt.Errorf("report: list tenants: %w", err)
	}
	for _, te := range all {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		tr, err := e.reportTenant(ctx, te, r.PeriodStart, at)
		if err != nil {
			return nil, fmt.Errorf("report: tenant %q: %w", te.meta.Name, err)
		}
		r.Tenants = append(r.Tenants, *tr)
	}
	// The head is read after the tenants, so it covers every action the
	// report could have seen.
	seq, mac, err := e.AuditHead()
	if err != nil {
		return nil, fmt.Errorf("report: read the audit chain head: %w", err)
	}
	if seq != 0 || mac != "" {
		r.AuditHead = &ReportAuditHead{Seq: seq, MAC: mac}
	}
	sort.Slice(r.Tenants, func(i, j int) bool { return r.Tenants[i].Name < r.Tenants[j].Name })
	for i := range r.Tenants {
		r.Totals.add(&r.Tenants[i])
	}
	return r, nil
}

func (tot *ReportTotals) add(tr *TenantReport) {
	tot.Tenants++
	switch tr.State {
	case StateActive:
		tot.Active++
	case StateLocked:
		tot.Locked++
	}
	if tr.NotRun {
		tot.Flagged++
	}
	if tr.Contact == "" {
		tot.NoContact++
	}
	if tr.Problem != "" {
		tot.Problems++
	}
	tot.Snapshots += tr.Snapshots
	tot.LogicalBytes += tr.LatestLogicalBytes
	tot.StoredBytes += tr.StoredBytes
	tot.PackBytes += tr.PackBytes
	tot.PhysicalBytes += tr.PhysicalBytes
}

// reportTenant builds one tenant's entry. Errors of the index are returned;
// a tenant whose snapshots cannot be opened gets a Problem instead, so one
// damaged tenant does not hide the others' report.
func (e *Engine) reportTenant(ctx context.Context, te *tenantEntry, start, at time.Time) (*TenantReport, error) {
	ti := e.info(te)
	tr := &TenantReport{
		Name: ti.Name, ID: ti.ID, State: ti.State, Contact: ti.Contact, Quota: ti.Quota,
		LockedAt: utcPtr(ti.LockedAt), DeleteAfter: utcPtr(ti.DeleteAfter),
	}
	id := index.TenantID(te.rec.ID)
	err := e.db.Blobs(id, func(_ index.BlobID, l index.BlobLoc) error {
		tr.Blobs++
		tr.StoredBytes += int64(l.Length)
		if tr.Blobs%4096 == 0 {
			return ctx.Err()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sum blobs: %w", err)
	}
	err = e.db.Packs(id, func(p index.PackRec) error {
		tr.Packs++
		tr.PackBytes += int64(p.DataLen)
		tr.PhysicalBytes += int64(p.ShardLen) * (int64(p.K) + int64(p.M))
		return ctx.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sum packs: %w", err)
	}
	if tr.Quota > 0 {
		pct := float64(tr.StoredBytes) * 100 / float64(tr.Quota)
		tr.QuotaUsedPercent = &pct
	}

	// The internal handle, not OpenTenant: a locked tenant is reported too.
	// Only each snapshot's time and size are kept from its record.
	t, err := e.tenantHandle(te)
	if err != nil {
		tr.Problem = "snapshots cannot be read: " + err.Error()
	} else {
		var last *Snapshot
		err = e.db.Snapshots(id, func(rec index.SnapshotRec) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			s, err := t.openSnapshot(rec)
			if err != nil {
				if errors.Is(err, ErrDamage) || errors.Is(err, ErrCorrupt) {
					tr.UnreadableSnapshots++
					return nil
				}
				return err
			}
			if s.Time.After(at) {
				return nil
			}
			tr.Snapshots++
			if last == nil || s.Time.After(last.Time) {
				last = s
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read snapshots: %w", err)
		}
		if last != nil {
			lt := last.Time.UTC()
			tr.LastBackup = &lt
			tr.LatestLogicalBytes = last.Stats.Bytes
		}
	}
	tr.NotRun = tr.LastBackup == nil || !tr.LastBackup.After(start)
	if tr.NotRun {
		tr.Flag = ReportFlag
	}
	return tr, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// Flagged returns the tenants flagged as not backed up in the last week.
func (r *Report) Flagged() []TenantReport {
	var out []TenantReport
	for _, tr := range r.Tenants {
		if tr.NotRun {
			out = append(out, tr)
		}
	}
	return out
}

// Subject is the subject line of the tenant's weekly message: the flag is
// appended when the tenant is flagged.
func (r *Report) Subject(tr *TenantReport) string {
	s := fmt.Sprintf("Coffer weekly backup report for %s, week ending %s", tr.Name, r.At.Format(time.DateOnly))
	if tr.NotRun {
		s += " " + ReportFlag
	}
	return s
}

// DefaultReportFrom is the sender of the report messages when none is given:
// coffer@ this machine's host name.
func DefaultReportFrom() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return "coffer@" + h
}

// WriteMessages writes the report into dir (created if needed): one
// ready-to-send RFC 5322 message per tenant, dir/NAME.eml, addressed to the
// tenant's contact (a tenant without a valid contact gets a message without a
// To: header, and the operator summary says so), and dir/operator-summary.txt
// with every tenant. from is the sender address; "" means
// DefaultReportFrom(). Each file is written atomically (temporary name,
// fsync, rename), mode 0600; existing files of the same names are replaced,
// other files in dir are left alone. It returns the paths written. On error
// some files may already have been written, each whole.
func (r *Report) WriteMessages(dir, from string) ([]string, error) {
	if from == "" {
		from = DefaultReportFrom()
	}
	fromAddr, err := mail.ParseAddress(from)
	if err != nil {
		return nil, invalidf("sender %q is not an e-mail address: %v", from, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create report folder: %w", err)
	}
	domain := "localhost"
	if i := strings.LastIndexByte(fromAddr.Address, '@'); i >= 0 && i+1 < len(fromAddr.Address) {
		domain = fromAddr.Address[i+1:]
	}
	var written []string
	for i := range r.Tenants {
		tr := &r.Tenants[i]
		name := tr.Name + ".eml"
		if name != filepath.Base(name) || strings.ContainsAny(tr.Name, `/\`) {
			return written, invalidf("tenant name %q cannot name a file", tr.Name)
		}
		var rnd [8]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return written, err
		}
		msgID := fmt.Sprintf("<coffer-report.%s.%s@%s>", r.At.Format("20060102T150405Z"), hex.EncodeToString(rnd[:]), domain)
		msg := r.message(tr, fromAddr, msgID)
		p := filepath.Join(dir, name)
		if err := writeFileDurable(p, msg, 0o600); err != nil {
			return written, fmt.Errorf("write %s: %w", p, err)
		}
		written = append(written, p)
	}
	p := filepath.Join(dir, OperatorSummaryFile)
	if err := writeFileDurable(p, []byte(r.OperatorSummary()), 0o600); err != nil {
		return written, fmt.Errorf("write %s: %w", p, err)
	}
	return append(written, p), nil
}

// TenantMessage renders the tenant's message as WriteMessages writes it
// (CRLF line endings), with the given Message-ID value (angle brackets
// included) instead of a random one. from is the sender address.
func (r *Report) TenantMessage(tr *TenantReport, from, msgID string) ([]byte, error) {
	fromAddr, err := mail.ParseAddress(from)
	if err != nil {
		return nil, invalidf("sender %q is not an e-mail address: %v", from, err)
	}
	return r.message(tr, fromAddr, msgID), nil
}

// ContactAddress returns the bare address of a tenant's contact, or ""
// when it has none or it is not one valid address (its message then has
// no To: header and is not sent).
func ContactAddress(contact string) string {
	if recipient(contact) == "" {
		return ""
	}
	a, _ := mail.ParseAddress(contact)
	return a.Address
}

// recipient returns the tenant's contact as a To: value, or "" when it has
// none or it is not one valid address (a stored contact is never copied into
// a header unchecked, so it cannot inject one).
func recipient(contact string) string {
	if contact == "" {
		return ""
	}
	a, err := mail.ParseAddress(contact)
	if err != nil {
		return ""
	}
	if a.Name == "" {
		return a.Address
	}
	return a.String()
}

// message renders the tenant's message with CRLF line endings.
func (r *Report) message(tr *TenantReport, from *mail.Address, msgID string) []byte {
	fromHdr := from.Address
	if from.Name != "" {
		fromHdr = from.String()
	}
	hs := [][2]string{{"From", fromHdr}}
	if to := recipient(tr.Contact); to != "" {
		hs = append(hs, [2]string{"To", to})
	}
	hs = append(hs,
		[2]string{"Subject", mime.QEncoding.Encode("utf-8", r.Subject(tr))},
		[2]string{"Date", r.At.Format(time.RFC1123Z)},
		[2]string{"Message-ID", msgID})
	return mailmsg.Render(hs, r.tenantBody(tr))
}

// tenantBody is the plain-text body of a tenant's message (LF line endings).
func (r *Report) tenantBody(tr *TenantReport) string {
	var b strings.Builder
	if tr.NotRun {
		b.WriteString(ReportFlag + "\n\n")
	}
	fmt.Fprintf(&b, "Weekly backup report for %s\n", tr.Name)
	fmt.Fprintf(&b, "Week: %s to %s\n\n", reportTime(r.PeriodStart), reportTime(r.At))
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Account\t%s (ID %s)\n", tr.Name, tr.ID)
	fmt.Fprintf(w, "State\t%s\n", tr.State)
	if tr.LockedAt != nil {
		fmt.Fprintf(w, "Locked on\t%s\n", reportTime(*tr.LockedAt))
	}
	if tr.DeleteAfter != nil {
		fmt.Fprintf(w, "Data will be deleted on\t%s\n", reportTime(*tr.DeleteAfter))
	}
	last := "never"
	if tr.LastBackup != nil {
		last = reportTime(*tr.LastBackup)
	}
	fmt.Fprintf(w, "Last successful backup\t%s\n", last)
	fmt.Fprintf(w, "Snapshots\t%d\n", tr.Snapshots)
	fmt.Fprintf(w, "Size of latest backup\t%s\n", reportBytes(tr.LatestLogicalBytes))
	fmt.Fprintf(w, "Stored (deduplicated, compressed)\t%s\n", reportBytes(tr.StoredBytes))
	fmt.Fprintf(w, "Stored with parity (on disk)\t%s\n", reportBytes(tr.PhysicalBytes))
	if tr.Quota > 0 {
		fmt.Fprintf(w, "Quota\t%s, %s used\n", reportBytes(tr.Quota), reportPercent(tr.QuotaUsedPercent))
	} else {
		fmt.Fprintf(w, "Quota\tnone\n")
	}
	w.Flush()
	b.WriteString("\n")
	switch {
	case tr.State == StateLocked && tr.DeleteAfter != nil:
		fmt.Fprintf(&b, "This account is locked: no data goes in or out. Unless it is unlocked,\nits data will be deleted irrevocably on %s.\n", tr.DeleteAfter.Format(time.DateOnly))
	case tr.NotRun && tr.LastBackup == nil:
		b.WriteString("No backup of this account has run yet. Please check your backup schedule.\n")
	case tr.NotRun:
		b.WriteString("No backup has run in the last seven days. Please check your backup schedule.\n")
	}
	if tr.UnreadableSnapshots > 0 {
		fmt.Fprintf(&b, "%d snapshot record(s) could not be read; our staff have been told.\n", tr.UnreadableSnapshots)
	}
	b.WriteString("\nThis report was generated by Coffer.\n")
	return b.String()
}

// OperatorSummary renders the report for the operator: every tenant in one
// table, flagged tenants marked, tenants without a usable contact and tenants
// with problems listed, and the totals.
func (r *Report) OperatorSummary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Coffer weekly report, repository %s\n", r.Repository)
	fmt.Fprintf(&b, "Week: %s to %s (generated %s)\n", reportTime(r.PeriodStart), reportTime(r.At), reportTime(r.Generated))
	if r.AuditHead != nil {
		fmt.Fprintf(&b, "Audit chain head: seq %d, mac %s\n", r.AuditHead.Seq, r.AuditHead.MAC)
	} else {
		b.WriteString("Audit chain head: (empty audit log)\n")
	}
	b.WriteString("\n")
	r.WriteTable(&b)
	b.WriteString("\n")
	var flagged, noContact, problems []string
	for _, tr := range r.Tenants {
		if tr.NotRun {
			flagged = append(flagged, fmt.Sprintf("  %s: %s", tr.Name, ReportFlag))
		}
		switch {
		case tr.Contact == "":
			noContact = append(noContact, fmt.Sprintf("  %s: no contact; its message has no To: header", tr.Name))
		case recipient(tr.Contact) == "":
			noContact = append(noContact, fmt.Sprintf("  %s: contact %q is not a valid address; its message has no To: header", tr.Name, tr.Contact))
		}
		if tr.Problem != "" {
			problems = append(problems, fmt.Sprintf("  %s: %s", tr.Name, tr.Problem))
		}
		if tr.UnreadableSnapshots > 0 {
			problems = append(problems, fmt.Sprintf("  %s: %d unreadable snapshot record(s); run coffer check", tr.Name, tr.UnreadableSnapshots))
		}
	}
	section := func(title string, lines []string) {
		if len(lines) == 0 {
			return
		}
		b.WriteString(title + "\n")
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
		b.WriteString("\n")
	}
	section(fmt.Sprintf("Flagged (%d):", len(flagged)), flagged)
	section("Not sent (no usable contact):", noContact)
	section("Problems:", problems)
	t := r.Totals
	fmt.Fprintf(&b, "Totals: %d tenants (%d active, %d locked), %d flagged, %d snapshots\n", t.Tenants, t.Active, t.Locked, t.Flagged, t.Snapshots)
	fmt.Fprintf(&b, "  latest backups %s, stored %s, in packs %s, on disk with parity %s\n",
		reportBytes(t.LogicalBytes), reportBytes(t.StoredBytes), reportBytes(t.PackBytes), reportBytes(t.PhysicalBytes))
	return b.String()
}

// WriteTable writes one row per tenant, with flagged tenants marked, as
// aligned text columns.
func (r *Report) WriteTable(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSTATE\tCONTACT\tSNAPSHOTS\tLAST BACKUP\tLATEST SIZE\tSTORED\tWITH PARITY\tQUOTA USE\tDELETE AFTER\tFLAG")
	for _, tr := range r.Tenants {
		last, del, quota, contact := "never", "-", "-", tr.Contact
		if tr.LastBackup != nil {
			last = tr.LastBackup.Format("2006-01-02 15:04Z")
		}
		if tr.DeleteAfter != nil {
			del = tr.DeleteAfter.Format(time.DateOnly)
		}
		if tr.Quota > 0 {
			quota = reportPercent(tr.QuotaUsedPercent) + " of " + reportBytes(tr.Quota)
		}
		if contact == "" {
			contact = "(none)"
		}
		flag := ""
		if tr.NotRun {
			flag = ReportFlag
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", tr.Name, tr.State, contact, tr.Snapshots, last,
			reportBytes(tr.LatestLogicalBytes), reportBytes(tr.StoredBytes), reportBytes(tr.PhysicalBytes), quota, del, flag)
	}
	return w.Flush()
}

func reportTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

func reportPercent(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", *p)
}

// reportBytes renders a byte count for people, in powers of 1024.
func reportBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
