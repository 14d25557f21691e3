package vcache

import (
	"fmt"
	"sync"
	"testing"
)

func TestBoundAndOrder(t *testing.T) {
	c := New[int, string](2)
	c.Add(1, "a")
	c.Add(2, "b")
	if _, ok := c.Get(1); !ok { // 1 is now the most recently used
		t.Fatal("1 missing")
	}
	c.Add(3, "c") // forgets 2
	if _, ok := c.Get(2); ok {
		t.Fatal("the least recently used entry was kept")
	}
	if v, ok := c.Get(1); !ok || v != "a" {
		t.Fatalf("Get(1) = %q, %v", v, ok)
	}
	c.Add(1, "z")
	if v, _ := c.Get(1); v != "z" || c.Len() != 2 {
		t.Fatalf("replace: %q, %d entries", v, c.Len())
	}
}

func TestDisabled(t *testing.T) {
	c := New[int, int](0)
	c.Add(1, 1)
	if _, ok := c.Get(1); ok || c.Enabled() || c.Len() != 0 {
		t.Fatal("a cache of bound 0 kept something")
	}
}

func TestConcurrent(t *testing.T) {
	c := New[string, int](8)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				k := fmt.Sprint(g, i%16)
				c.Add(k, i)
				c.Get(k)
			}
		}()
	}
	wg.Wait()
	if c.Len() > 8 {
		t.Fatalf("%d entries, bound 8", c.Len())
	}
}
