// Package vcache holds what the backend verifiers need to keep verified
// work (certificate chains, decoded public areas, replayed logs) between
// attestations: a bounded, concurrency-safe LRU Cache, cache keys over every
// input a result depends on (Key), and the validity windows of verified
// certificate chains, checked against the verification time on every use.
package vcache

import (
	"container/list"
	"sync"
)

// Cache maps K to V, holding at most its bound of entries. A bound of 0 or
// less keeps nothing. It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *entry[K, V], most recently used first
	items map[K]*list.Element
}

type entry[K comparable, V any] struct {
	key K
	val V
}

// New returns a cache of at most max entries.
func New[K comparable, V any](max int) *Cache[K, V] {
	return &Cache[K, V]{max: max, order: list.New(), items: map[K]*list.Element{}}
}

// Get returns the value kept for k, and marks it used.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*entry[K, V]).val, true
}

// Add keeps v for k, forgetting the least recently used entry if the cache
// is full.
func (c *Cache[K, V]) Add(k K, v V) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		e.Value = &entry[K, V]{key: k, val: v}
		c.order.MoveToFront(e)
		return
	}
	c.items[k] = c.order.PushFront(&entry[K, V]{key: k, val: v})
	if c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*entry[K, V]).key)
	}
}

// Enabled reports whether the cache keeps anything.
func (c *Cache[K, V]) Enabled() bool { return c.max > 0 }

// Len is the number of entries kept.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
