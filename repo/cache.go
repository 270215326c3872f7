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

// blockCacheEntries bounds the cache of verified shard blocks: 256 blocks of
// 64 KiB is 16 MiB. Restores read many small blobs that lie next to each other
// in a pack; without it each would read and check its whole block again.
const blockCacheEntries = 256

type blockKey struct {
	drive DriveID
	name  string
	block int64
}

// blockCache is a small LRU cache of shard blocks whose CRC was checked. The
// cached slices are never modified; readers get copies.
type blockCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List                 // of *blockEntry, most recent first; guarded by mu
	items map[blockKey]*list.Element // guarded by mu
}

type blockEntry struct {
	key  blockKey
	data []byte
}

func newBlockCache(max int) *blockCache {
	return &blockCache{max: max, ll: list.New(), items: make(map[blockKey]*list.Element)}
}

// copyRange copies blocks first.. of (drive, name) into dst if every one is
// cached, and reports whether it did.
func (c *blockCache) copyRange(drive DriveID, name string, first int64, blockSize int, dst []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for off, b := 0, first; off < len(dst); off, b = off+blockSize, b+1 {
		e, ok := c.items[blockKey{drive, name, b}]
		if !ok {
			return false
		}
		data := e.Value.(*blockEntry).data
		if len(data) < min(blockSize, len(dst)-off) {
			return false
		}
		copy(dst[off:], data[:min(len(data), len(dst)-off)])
		c.ll.MoveToFront(e)
	}
	return true
}

// putRange caches the blocks of buf, which starts at block first.
func (c *blockCache) putRange(drive DriveID, name string, first int64, blockSize int, buf []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for off, b := 0, first; off < len(buf); off, b = off+blockSize, b+1 {
		k := blockKey{drive, name, b}
		data := append([]byte(nil), buf[off:min(off+blockSize, len(buf))]...)
		if e, ok := c.items[k]; ok {
			e.Value.(*blockEntry).data = data
			c.ll.MoveToFront(e)
			continue
		}
		c.items[k] = c.ll.PushFront(&blockEntry{key: k, data: data})
		for c.ll.Len() > c.max {
			last := c.ll.Back()
			c.ll.Remove(last)
			delete(c.items, last.Value.(*blockEntry).key)
		}
	}
}

// evictShard drops every cached block of one shard file (it was rewritten
// or found damaged).
func (c *blockCache) evictShard(drive DriveID, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.ll.Front(); e != nil; {
		next := e.Next()
		if k := e.Value.(*blockEntry).key; k.drive == drive && k.name == name {
			c.ll.Remove(e)
			delete(c.items, k)
		}
		e = next
	}
}
