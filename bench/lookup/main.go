// Command lookup measures random path lookups in a .caidx tree through a
// fetch.Blob: how many distinct chunks each lookup touches, and how long it
// takes once the chunks are cached. Used by bench/catar.sh.
//
//	go run ./bench/lookup --store=STORE INDEX.caidx [-n 10000]
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/catar"
	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

// touchCounter records which chunks the archive reads touch.
type touchCounter struct {
	b       *fetch.Blob
	x       *chunker.Index
	mu      sync.Mutex
	touched map[int]bool
}

func (t *touchCounter) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > 0 {
		end := off + int64(len(p)) - 1
		if end >= t.b.Size() {
			end = t.b.Size() - 1
		}
		t.mu.Lock()
		for i := t.x.Find(off); i <= t.x.Find(end); i++ {
			t.touched[i] = true
		}
		t.mu.Unlock()
	}
	return t.b.ReadAtContext(context.Background(), p, off)
}

func (t *touchCounter) reset() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.touched)
	t.touched = map[int]bool{}
	return n
}

func stats(v []int) string {
	if len(v) == 0 {
		return "-"
	}
	sort.Ints(v)
	sum := 0
	for _, x := range v {
		sum += x
	}
	return fmt.Sprintf("mean %.2f  p50 %d  p99 %d  max %d", float64(sum)/float64(len(v)), v[len(v)/2], v[len(v)*99/100], v[len(v)-1])
}

func main() {
	store := flag.String("store", "", "chunk store directory (default: default.castr beside the index)")
	n := flag.Int("n", 10000, "number of random lookups")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: lookup [--store=DIR] [-n N] INDEX.caidx")
		os.Exit(2)
	}
	idx := flag.Arg(0)
	if *store == "" {
		*store = strings.TrimSuffix(idx, "/"+lastElem(idx)) + "/default.castr"
	}
	if err := run(idx, *store, *n); err != nil {
		fmt.Fprintln(os.Stderr, "lookup:", err)
		os.Exit(1)
	}
}

func lastElem(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

func run(idx, store string, n int) error {
	f, err := os.Open(idx)
	if err != nil {
		return err
	}
	x, err := chunker.ReadIndex(f)
	f.Close()
	if err != nil {
		return err
	}
	open := func() (*fetch.Blob, *catar.Archive, *touchCounter, error) {
		s, err := fetch.NewScheduler(fetch.SchedulerOptions{Stores: []fetch.Store{fetch.NewLocalStore(store)}, Memory: cache.NewMemory(4 << 30)})
		if err != nil {
			return nil, nil, nil, err
		}
		b := fetch.NewBlob(x, s, idx)
		tc := &touchCounter{b: b, x: x, touched: map[int]bool{}}
		a, err := catar.Open(tc, b.Size())
		return b, a, tc, err
	}
	// The path list comes from a walk through one blob; the measured
	// lookups use another, whose chunk cache starts empty.
	_, a, _, err := open()
	if err != nil {
		return err
	}
	var paths []string
	if err := a.Walk(a.Root(), func(e *catar.Entry) error {
		if e.Path != "" {
			paths = append(paths, e.Path)
		}
		return nil
	}); err != nil {
		return err
	}
	b, a, tc, err := open()
	if err != nil {
		return err
	}
	tc.reset()
	// A full walk (what camount list does) on a fresh blob.
	{
		_, wa, wtc, err := open()
		if err != nil {
			return err
		}
		wtc.reset()
		st := time.Now()
		if err := wa.Walk(wa.Root(), func(*catar.Entry) error { return nil }); err != nil {
			return err
		}
		fmt.Printf("full walk: %d of %d chunks touched, %v\n", wtc.reset(), len(x.Chunks), time.Since(st).Round(time.Millisecond))
	}
	r := rand.New(rand.NewPCG(1, 2))
	var perPath, perCall []int
	depth := 0
	start := time.Now()
	for i := 0; i < n; i++ {
		p := paths[r.IntN(len(paths))]
		comps := strings.Split(p, "/")
		depth += len(comps)
		e := a.Root()
		total := map[int]bool{}
		for _, c := range comps {
			tc.reset()
			if e, err = a.Lookup(e, c); err != nil {
				return fmt.Errorf("lookup %s: %w", p, err)
			}
			tc.mu.Lock()
			perCall = append(perCall, len(tc.touched))
			for k := range tc.touched {
				total[k] = true
			}
			tc.mu.Unlock()
		}
		perPath = append(perPath, len(total))
	}
	el := time.Since(start)
	// Warm timing: the same lookups again, everything cached.
	r = rand.New(rand.NewPCG(1, 2))
	start = time.Now()
	for i := 0; i < n; i++ {
		if _, err := a.LookupPath(paths[r.IntN(len(paths))]); err != nil {
			return err
		}
	}
	warm := time.Since(start)
	fmt.Printf("tree: %d entries, %d chunks, %d-byte archive\n", len(paths)+1, len(x.Chunks), b.Size())
	fmt.Printf("%d random paths, mean depth %.1f\n", n, float64(depth)/float64(n))
	fmt.Printf("chunks touched per Lookup(dir, name):   %s\n", stats(perCall))
	fmt.Printf("chunks touched per whole path:          %s\n", stats(perPath))
	fmt.Printf("first pass (cache empty at start):     %v per path\n", el/time.Duration(n))
	fmt.Printf("warm pass (chunks cached):              %v per path\n", warm/time.Duration(n))
	fmt.Printf("PERCALL_MEAN=%.2f PERCALL_MAX=%d\n", mean(perCall), perCall[len(perCall)-1])
	return nil
}

func mean(v []int) float64 {
	s := 0
	for _, x := range v {
		s += x
	}
	return float64(s) / float64(len(v))
}
