package blockdev

import (
	"testing"
	"time"
)

// TestBudgetFirstComeFirstServed: a request waiting for room is not passed
// by smaller ones that arrive after it (a large READ on one connection
// would otherwise wait for ever while others keep the server-wide budget
// busy), and one request is let in alone whatever its size.
func TestBudgetFirstComeFirstServed(t *testing.T) {
	var b budget
	b.init(1<<30, 10)
	b.acquire(6)
	tickets := func() uint64 { b.mu.Lock(); defer b.mu.Unlock(); return b.next }
	waitTickets := func(n uint64) {
		for deadline := time.Now().Add(10 * time.Second); tickets() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no ticket %d taken", n)
			}
		}
	}
	got := make(chan string, 2)
	go func() { b.acquire(8); got <- "large" }()
	waitTickets(2)
	go func() { b.acquire(1); got <- "small" }()
	waitTickets(3)
	b.mu.Lock()
	n := b.n
	b.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d requests in: the small one passed the large one waiting before it", n)
	}
	b.release(6) // both fit now: the large one, then the small one
	<-got
	<-got
	b.release(8)
	b.release(1)
	b.acquire(100) // larger than the budget: alone, at once
	b.release(100)
}
