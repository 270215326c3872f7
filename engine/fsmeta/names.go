//go:build linux

package fsmeta

import (
	"os/user"
	"strconv"
	"sync"
)

// maxCached bounds each map of the name cache, so a tree with many distinct
// names (restore reads names from the backup) cannot grow memory without
// limit. Real systems have far fewer accounts than this.
const maxCached = 4096

// nameCache remembers user and group lookups, hits and misses alike. It is
// safe for concurrent use. Lookups run outside the lock, so two goroutines may
// look up the same ID at once; both get the same answer.
type nameCache struct {
	mu sync.Mutex // guards the maps below
	// ID -> name ("" when the ID has no name).
	userName, groupName map[uint32]string
	// name -> ID, ok=false when the name does not exist on this system.
	userID, groupID map[string]idResult
}

type idResult struct {
	id uint32
	ok bool
}

var names = nameCache{
	userName:  map[uint32]string{},
	groupName: map[uint32]string{},
	userID:    map[string]idResult{},
	groupID:   map[string]idResult{},
}

func cached[K comparable, V any](c *nameCache, m map[K]V, k K, lookup func(K) V) V {
	c.mu.Lock()
	v, ok := m[k]
	c.mu.Unlock()
	if ok {
		return v
	}
	v = lookup(k)
	c.mu.Lock()
	if len(m) < maxCached {
		m[k] = v
	}
	c.mu.Unlock()
	return v
}

// userOf returns the name of uid, or "" if it has none.
func (c *nameCache) userOf(uid uint32) string {
	return cached(c, c.userName, uid, func(uid uint32) string {
		u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
		if err != nil {
			return ""
		}
		return u.Username
	})
}

// groupOf returns the name of gid, or "" if it has none.
func (c *nameCache) groupOf(gid uint32) string {
	return cached(c, c.groupName, gid, func(gid uint32) string {
		g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10))
		if err != nil {
			return ""
		}
		return g.Name
	})
}

// uidOf returns the uid of the user called name on this system.
func (c *nameCache) uidOf(name string) (uint32, bool) {
	r := cached(c, c.userID, name, func(name string) idResult {
		u, err := user.Lookup(name)
		if err != nil {
			return idResult{}
		}
		return parseID(u.Uid)
	})
	return r.id, r.ok
}

// gidOf returns the gid of the group called name on this system.
func (c *nameCache) gidOf(name string) (uint32, bool) {
	r := cached(c, c.groupID, name, func(name string) idResult {
		g, err := user.LookupGroup(name)
		if err != nil {
			return idResult{}
		}
		return parseID(g.Gid)
	})
	return r.id, r.ok
}

func parseID(s string) idResult {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return idResult{}
	}
	return idResult{id: uint32(v), ok: true}
}
