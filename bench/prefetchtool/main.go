// Command prefetchtool is a helper of bench/prefetch.sh:
//
//	prefetchtool proxy -listen 127.0.0.1:PORT -upstream http://127.0.0.1:PORT2 -delay 20ms
//	    a reverse proxy that adds a fixed delay to every request (a slow
//	    network in front of nginx); it prints the request count on SIGTERM.
//	prefetchtool randread -file IMAGE -index X.caibx -n 400 -seed 1
//	    4 KiB preads at random offsets inside data (non-zero) chunks of the
//	    image; prints "p50_ms p99_ms" (and appends each latency in ms to -out).
//	prefetchtool port
//	    prints a free TCP port on 127.0.0.1.
//	prefetchtool pct FILE...
//	    prints "p50_ms p99_ms" of the latencies in the files (pooled).
//	prefetchtool readcov -index X.caibx -store DIR -trace QEMU_TRACE
//	    what a guest read of the image against the chunks holding it (readcov.go).
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: prefetchtool proxy|randread [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "proxy":
		err = proxy(os.Args[2:])
	case "randread":
		err = randread(os.Args[2:])
	case "pct":
		err = pct(os.Args[2:])
	case "port":
		err = port()
	case "readcov":
		err = readcov(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "prefetchtool:", err)
		os.Exit(1)
	}
}

func proxy(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	upstream := fs.String("upstream", "", "upstream URL")
	delay := fs.Duration("delay", 20*time.Millisecond, "added per request")
	fs.Parse(args)
	u, err := url.Parse(*upstream)
	if err != nil || u.Host == "" {
		return fmt.Errorf("bad -upstream %q", *upstream)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 256, DisableCompression: true}
	var n atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		time.Sleep(*delay)
		rp.ServeHTTP(w, r)
	})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sig
		fmt.Fprintf(os.Stderr, "proxy: %d requests\n", n.Load())
		os.Exit(0)
	}()
	return http.ListenAndServe(*listen, h)
}

func randread(args []string) error {
	fs := flag.NewFlagSet("randread", flag.ExitOnError)
	file := fs.String("file", "", "image file to read")
	index := fs.String("index", "", "its .caibx")
	n := fs.Int("n", 400, "reads")
	seed := fs.Uint64("seed", 1, "random seed")
	out := fs.String("out", "", "append each latency (ms) to this file")
	fs.Parse(args)
	xf, err := os.Open(*index)
	if err != nil {
		return err
	}
	x, err := chunker.ReadIndex(xf)
	xf.Close()
	if err != nil {
		return err
	}
	zero := fetch.ZeroChunks(x)
	var data []int
	for i := range x.Chunks {
		if !zero[i] {
			data = append(data, i)
		}
	}
	f, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(*seed, 42))
	buf := make([]byte, 4096)
	var lat []time.Duration
	for k := 0; k < *n; k++ {
		c := x.Chunks[data[r.IntN(len(data))]]
		off := int64(c.Start) + r.Int64N(int64(c.Size))
		off &^= 4095
		s := time.Now()
		if _, err := f.ReadAt(buf, off); err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
		lat = append(lat, time.Since(s))
	}
	ms := make([]float64, len(lat))
	for i, d := range lat {
		ms[i] = float64(d) / 1e6
	}
	if *out != "" {
		o, err := os.OpenFile(*out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		for _, v := range ms {
			fmt.Fprintf(o, "%.3f\n", v)
		}
		if err := o.Close(); err != nil {
			return err
		}
	}
	printPct(ms)
	return nil
}

func printPct(ms []float64) {
	slices.Sort(ms)
	q := func(p float64) float64 {
		i := int(p*float64(len(ms))+0.5) - 1
		return ms[min(max(i, 0), len(ms)-1)]
	}
	fmt.Printf("%.2f %.2f\n", q(0.5), q(0.99))
}

func pct(files []string) error {
	var ms []float64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		for _, l := range strings.Fields(string(b)) {
			v, err := strconv.ParseFloat(l, 64)
			if err != nil {
				return fmt.Errorf("%s: %q", f, l)
			}
			ms = append(ms, v)
		}
	}
	if len(ms) == 0 {
		return fmt.Errorf("no latencies")
	}
	printPct(ms)
	return nil
}

func port() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	return nil
}
