package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"coffer/index"
)

// Tag limits: a tag is 1 to MaxTagLen bytes of UTF-8 without control
// characters or commas (listings join tags with commas); a snapshot holds at
// most MaxTags.
const (
	MaxTagLen = 256
	MaxTags   = 256
)

// TagOptions say how Tag changes the tags of snapshots: Set replaces them
// all (when Replace is set; an empty Set removes every tag), then Remove
// takes tags away and Add adds them (each at most once, kept sorted).
type TagOptions struct {
	Add     []string `json:"add,omitempty"`
	Remove  []string `json:"remove,omitempty"`
	Set     []string `json:"set,omitempty"`
	Replace bool     `json:"replace,omitempty"`
}

// TagItem is one snapshot's tags after Tag.
type TagItem struct {
	ID      string   `json:"id"`
	Tags    []string `json:"tags"`
	Changed bool     `json:"changed"`
}

// TagReport lists the snapshots Tag was given, in their order.
type TagReport struct {
	Snapshots []TagItem `json:"snapshots"`
	Changed   int       `json:"changed"`
}

// ValidateTag checks one tag against the limits above (ErrInvalid).
func ValidateTag(tag string) error {
	switch {
	case tag == "" || len(tag) > MaxTagLen:
		return invalidf("a tag is 1 to %d bytes", MaxTagLen)
	case !utf8.ValidString(tag):
		return invalidf("a tag is UTF-8 text")
	case strings.ContainsFunc(tag, func(r rune) bool { return unicode.IsControl(r) || r == ',' }):
		return invalidf("tag %q holds a comma or a control character", tag)
	}
	return nil
}

func (o TagOptions) validate() error {
	if !o.Replace && len(o.Add) == 0 && len(o.Remove) == 0 {
		return invalidf("nothing to do: give --add, --remove or --set")
	}
	for _, l := range [][]string{o.Add, o.Remove, o.Set} {
		for _, tag := range l {
			if err := ValidateTag(tag); err != nil {
				return err
			}
		}
	}
	return nil
}

// apply returns the tags of a snapshot that had tags.
func (o TagOptions) apply(tags []string) []string {
	out := slices.Clone(tags)
	if o.Replace {
		out = slices.Clone(o.Set)
	}
	out = slices.DeleteFunc(out, func(t string) bool { return slices.Contains(o.Remove, t) })
	out = append(out, o.Add...)
	slices.Sort(out)
	return slices.Compact(out)
}

// Tag changes the tags of the snapshots refs names (IDs, unique prefixes
// of at least 8 hex digits, "latest"). A snapshot keeps its ID: its sealed
// record is written again with the next version (above the newest copy on
// any drive and in the index), to the drives first, then the index, as
// every record change (docs/design.md, "Small replicated records"; a drive
// that was offline cannot bring the old tags back). A crash in between
// leaves the drives one version ahead, which the index adopts at the next
// rebuild; running tag again writes the version after it. Tags never reach
// the audit trail: the entry "tag" holds counts and snapshot IDs only.
// Tag holds the tenant's lock.
func (t *Tenant) Tag(ctx context.Context, refs []string, o TagOptions) (rep *TagReport, err error) {
	if len(refs) == 0 {
		return nil, invalidf("tag needs at least one snapshot")
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	unlock := t.e.lockTenant(t.id)
	defer unlock()
	defer func() {
		detail := ""
		if rep != nil {
			var ids []string
			for _, it := range rep.Snapshots {
				if it.Changed {
					ids = append(ids, it.ID)
				}
			}
			detail = idsDetail(fmt.Sprintf("changed=%d unchanged=%d", rep.Changed, len(rep.Snapshots)-rep.Changed), ids)
		}
		err = t.e.audited(ctx, "tag", t.id, detail, err)
	}()
	if err := t.requireInStep(ctx); err != nil {
		return nil, err
	}
	all, versions, err := t.snapshotsWithVersions(ctx)
	if err != nil {
		return nil, err
	}
	sel, err := resolveSnapshots(all, refs)
	if err != nil {
		return nil, err
	}
	rep = &TagReport{Snapshots: []TagItem{}}
	for _, s := range sel {
		tags := o.apply(s.Tags)
		if len(tags) > MaxTags {
			return rep, invalidf("snapshot %s would have %d tags; at most %d", s.ID[:8], len(tags), MaxTags)
		}
		it := TagItem{ID: s.ID, Tags: tags}
		if !slices.Equal(tags, sortedCopy(s.Tags)) {
			c := *s
			c.Tags = tags
			if len(tags) == 0 {
				c.Tags = nil
			}
			if err := t.rewriteRecord(ctx, &c, versions[s.ID]); err != nil {
				return rep, err
			}
			it.Changed = true
			rep.Changed++
		}
		rep.Snapshots = append(rep.Snapshots, it)
	}
	return rep, nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// rewriteRecord writes snapshot s (an existing one, changed in place) as
// the version after indexed and after the newest copy on the drives:
// sealed record on the drives first, then the index. A tombstone on the
// drives (forgotten meanwhile by a process that had not told this index)
// refuses with ErrSnapshotNotFound.
func (t *Tenant) rewriteRecord(ctx context.Context, s *Snapshot, indexed uint64) error {
	var sid [16]byte
	if err := decodeHexInto(sid[:], s.ID); err != nil {
		return fmt.Errorf("%w: snapshot ID %q", ErrCorrupt, s.ID)
	}
	name := snapshotRecordName(t.id, sid)
	version := indexed
	best, err := t.e.newestOnDrives(ctx, name, recSnapshot, []*[KeySize]byte{&t.keys.meta}, t.id)
	if err != nil {
		return fmt.Errorf("read the record of snapshot %s: %w", s.ID[:8], err)
	}
	if best != nil {
		if best.tombstone() {
			return fmt.Errorf("%w: snapshot %s was forgotten", ErrSnapshotNotFound, s.ID[:8])
		}
		version = max(version, best.Version)
	}
	c := *s
	c.ID = ""
	body, err := json.Marshal(&c)
	if err != nil {
		return err
	}
	rec := sealRecord(&t.keys.meta, recSnapshot, 0, version+1, t.id, name, body)
	if err := t.e.rp().PutRecord(ctx, name, rec); err != nil {
		return fmt.Errorf("write the record of snapshot %s to drives: %w", s.ID[:8], err)
	}
	b := t.e.db.NewBatch()
	defer b.Close()
	b.PutSnapshot(t.id, index.SnapshotRec{ID: sid, Version: version + 1, Sealed: rec[recHeaderLen:]})
	if err := b.Commit(); err != nil {
		return fmt.Errorf("index the record of snapshot %s: %w", s.ID[:8], err)
	}
	return nil
}
