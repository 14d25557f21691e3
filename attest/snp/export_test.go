package snp

// CacheStats reports how often c answered a chain check (hits) and how
// often the full check ran (misses), and how many chains it holds.
func CacheStats(c *Cache) (hits, misses int64, size int) {
	return c.hits.Load(), c.misses.Load(), c.chains.Len()
}
