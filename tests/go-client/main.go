// A client written the way the Go course's api service calls the
// scheduler: net/http's default client, http.Get(scheduler +
// "/video-delete-record/" + uuid), many at once. Standard library only.
//
//	go run main.go -base http://127.0.0.1:9001 -ids ids.txt -concurrency 32
//
// Exits non-zero unless every answer is 200 with an empty body.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
)

func main() {
	base := flag.String("base", "http://127.0.0.1:9001", "scheduler address")
	idsFile := flag.String("ids", "ids.txt", "one video id per line")
	concurrency := flag.Int("concurrency", 32, "requests in flight")
	flag.Parse()

	file, err := os.Open(*idsFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var ids []string
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		if line := scanner.Text(); line != "" {
			ids = append(ids, line)
		}
	}
	file.Close()

	work := make(chan string)
	var ok, bad int64
	var wg sync.WaitGroup
	for i := 0; i < *concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for vid := range work {
				resp, err := http.Get(*base + "/video-delete-record/" + vid)
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s: %v\n", vid, err)
					atomic.AddInt64(&bad, 1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || len(body) != 0 {
					fmt.Fprintf(os.Stderr, "%s: %d %q\n", vid, resp.StatusCode, body)
					atomic.AddInt64(&bad, 1)
					continue
				}
				atomic.AddInt64(&ok, 1)
			}
		}()
	}
	for _, vid := range ids {
		work <- vid
	}
	close(work)
	wg.Wait()

	fmt.Printf("%d ok, %d bad\n", ok, bad)
	if bad != 0 || ok != int64(len(ids)) {
		os.Exit(1)
	}
}
