package tdx

// CacheStats reports how often c answered a PCK chain check (hits) and how
// often the full check ran (misses), and how many chains and CCEL replays
// it holds.
func CacheStats(c *Cache) (hits, misses int64, chains, ccels int) {
	return c.hits.Load(), c.misses.Load(), c.chains.Len(), c.ccels.Len()
}

// CCELHits is how often c answered a CCEL replay.
func CCELHits(c *Cache) int64 { return c.ccelHits.Load() }
