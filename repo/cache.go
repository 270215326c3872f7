package repo

import (
	"container/list"
	"sync"
)

// headerCacheEntries bounds the header cache. An entry holds one shard's header and
// block table: 4 bytes per block, so 16 KiB for a 1 GiB pack with K=4 and 64 KiB
// blocks, and 256 bytes for a default 16 MiB pack.
const headerCacheEntries = 1024

type cacheKey struct {
	drive DriveID
	name  string
}

type shardMeta struct {
	h    ShardHeader
	crcs []uint32 // block table; read-only once cached
}

// headerCache is a small LRU cache of decoded shard headers and block tables, so
// that many small reads from one pack read each header once.
type headerCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List                 // of *cacheEntry, most recent first; guarded by mu
	items map[cacheKey]*list.Element // guarded by mu
}

type cacheEntry struct {
	key  cacheKey
	meta *shardMeta
}

func newHeaderCache(max int) *headerCache {
	return &headerCache{max: max, ll: list.New(), items: make(map[cacheKey]*list.Element)}
}

func (c *headerCache) get(k cacheKey) *shardMeta {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil
	}
	c.ll.MoveToFront(e)
	return e.Value.(*cacheEntry).meta
}

func (c *headerCache) put(k cacheKey, m *shardMeta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		e.Value.(*cacheEntry).meta = m
		c.ll.MoveToFront(e)
		return
	}
	c.items[k] = c.ll.PushFront(&cacheEntry{key: k, meta: m})
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).key)
	}
}

func (c *headerCache) evict(k cacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.ll.Remove(e)
		delete(c.items, k)
	}
}
