package engine

import "testing"

func TestSnapshotFilter(t *testing.T) {
	a := &Snapshot{ID: "a", Host: "web1", Tags: []string{"nightly", "web"}, Paths: []string{"/srv/www", "/etc"}}
	b := &Snapshot{ID: "b", Host: "db1", Tags: []string{"weekly"}, Paths: []string{"/var/lib/db"}}
	c := &Snapshot{ID: "c", Host: "web1", Paths: []string{"/srv/www/"}}
	all := []*Snapshot{a, b, c}
	for _, tc := range []struct {
		name string
		f    SnapshotFilter
		want string
	}{
		{"zero", SnapshotFilter{}, "abc"},
		{"host", SnapshotFilter{Hosts: []string{"web1"}}, "ac"},
		{"hosts are or", SnapshotFilter{Hosts: []string{"web1", "db1"}}, "abc"},
		{"tag", SnapshotFilter{Tags: []string{"nightly"}}, "a"},
		{"tag list is and", SnapshotFilter{Tags: []string{"nightly,weekly"}}, ""},
		{"tag list both present", SnapshotFilter{Tags: []string{"web,nightly"}}, "a"},
		{"tag entries are or", SnapshotFilter{Tags: []string{"nightly", "weekly"}}, "ab"},
		{"empty tag: untagged", SnapshotFilter{Tags: []string{""}}, "c"},
		{"path", SnapshotFilter{Paths: []string{"/srv/www"}}, "ac"},
		{"paths are and", SnapshotFilter{Paths: []string{"/srv/www", "/etc"}}, "a"},
		{"host and path", SnapshotFilter{Hosts: []string{"db1"}, Paths: []string{"/srv/www"}}, ""},
	} {
		got := ""
		for _, s := range tc.f.Filter(all) {
			got += s.ID
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
