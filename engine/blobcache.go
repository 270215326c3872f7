package engine

import (
	"container/list"
	"context"
	"sync"

	"coffer/engine/tree"
)

// Bounds of a blob cache (OpenerOptions.CacheSize): at least two of the
// largest chunks (chunk.MaxSize, 8 MiB), so a read that spans a chunk
// boundary never evicts its own first half.
const (
	DefaultBlobCacheSize = 64 << 20
	MinBlobCacheSize     = 16 << 20
	MaxBlobCacheSize     = 1 << 40
)

// BlobCache holds the checked plaintext of data blobs for random-access
// reads (File), bounded in bytes and evicting the least recently used. It
// is shared by every File of an Opener. A blob is loaded once even when
// several readers ask for it at the same time: the first claims it, the
// others wait for its load. Safe for concurrent use.
//
// The bound counts the blobs held and the blobs being loaded (by their
// plaintext size as Locate gives it); a load is never refused, so the
// cache may pass its bound by the loads in flight, which an Opener bounds
// (prefetchLoads, and one group per foreground read). A blob larger than
// the whole cache is handed to its readers and not kept.
type BlobCache struct {
	max int64

	mu   sync.Mutex
	used int64                   // guarded by mu: bytes held or being loaded
	m    map[tree.ID]*cacheEntry // guarded by mu
	lru  list.List               // guarded by mu: loaded entries, most recent first
	st   BlobCacheStats          // guarded by mu
}

// BlobCacheStats count what a cache did.
type BlobCacheStats struct {
	Hits, Misses, Evictions int64
	Used                    int64 // bytes held or being loaded now
	Peak                    int64 // most bytes ever held or being loaded
}

// cacheEntry is one blob, loaded or being loaded. data and err are set
// once, before done is closed; they are read only after done is closed.
type cacheEntry struct {
	id   tree.ID
	size int64 // counted in used
	done chan struct{}
	data []byte
	err  error
	elem *list.Element // guarded by BlobCache.mu; nil until loaded and kept
}

// NewBlobCache returns an empty cache of size bytes (0: DefaultBlobCacheSize).
func NewBlobCache(size int64) (*BlobCache, error) {
	if size == 0 {
		size = DefaultBlobCacheSize
	}
	if size < MinBlobCacheSize || size > MaxBlobCacheSize {
		return nil, invalidf("blob cache size %d outside %d..%d bytes", size, int64(MinBlobCacheSize), int64(MaxBlobCacheSize))
	}
	return &BlobCache{max: size, m: map[tree.ID]*cacheEntry{}}, nil
}

// Size returns the cache's bound in bytes.
func (c *BlobCache) Size() int64 { return c.max }

// Stats returns the cache's counters.
func (c *BlobCache) Stats() BlobCacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.Used = c.used
	return st
}

// claim returns the entry of each place, in order, and the indexes of the
// entries the caller created and must finish with complete (every one of
// them, also on failure). The others are loaded or being loaded by someone
// else. Entries of places with the same ID are the same entry.
func (c *BlobCache) claim(places []BlobPlace) (entries []*cacheEntry, mine []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	entries = make([]*cacheEntry, len(places))
	for i, p := range places {
		if e, ok := c.m[p.ID]; ok {
			if e.elem != nil {
				c.lru.MoveToFront(e.elem)
			}
			c.st.Hits++
			entries[i] = e
			continue
		}
		c.st.Misses++
		e := &cacheEntry{id: p.ID, size: int64(p.Size), done: make(chan struct{})}
		c.m[p.ID] = e
		c.used += e.size
		c.st.Peak = max(c.st.Peak, c.used)
		entries[i] = e
		mine = append(mine, i)
	}
	c.evictLocked()
	return entries, mine
}

// has reports whether the blob is held or being loaded.
func (c *BlobCache) has(id tree.ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[id]
	return ok
}

// complete finishes a claimed entry with its data (which the cache keeps:
// the caller must not change it) or an error; a failed entry is dropped,
// so the next reader tries again.
func (c *BlobCache) complete(e *cacheEntry, data []byte, err error) {
	c.mu.Lock()
	e.data, e.err = data, err
	if err != nil || e.size > c.max {
		if c.m[e.id] == e {
			delete(c.m, e.id)
		}
		c.used -= e.size
	} else {
		c.used += int64(len(data)) - e.size
		e.size = int64(len(data))
		e.elem = c.lru.PushFront(e)
		c.st.Peak = max(c.st.Peak, c.used)
	}
	c.evictLocked()
	c.mu.Unlock()
	close(e.done)
}

// evictLocked drops the least recently used loaded entries until the
// cache is within its bound (or holds only entries being loaded).
func (c *BlobCache) evictLocked() {
	for c.used > c.max {
		back := c.lru.Back()
		if back == nil {
			return
		}
		e := back.Value.(*cacheEntry)
		c.lru.Remove(back)
		e.elem = nil
		delete(c.m, e.id)
		c.used -= e.size
		c.st.Evictions++
	}
}

// wait returns the entry's data once it is loaded, or ctx's error. The
// data must not be changed.
func (e *cacheEntry) wait(ctx context.Context) ([]byte, error) {
	select {
	case <-e.done:
		return e.data, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
