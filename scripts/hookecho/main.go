// Command hookecho receives coffer's webhooks for make demo-ops: it
// listens on a loopback address, checks each request's X-Coffer-Signature
// under the secret in a file, and prints one line per delivery (and the
// body). A repeated delivery ID is answered 200 and marked as a repeat.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"

	"coffer/notify"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on")
	secretFile := flag.String("secret", "", "file holding the webhook secret")
	flag.Parse()
	secret, err := notify.ReadSecret(*secretFile)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	var mu sync.Mutex
	seen := map[string]bool{}
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		if !notify.VerifySignature(secret, body, r.Header.Get(notify.HeaderSignature)) {
			fmt.Println("refused: bad signature")
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		id := r.Header.Get(notify.HeaderDelivery)
		mu.Lock()
		repeat := seen[id]
		seen[id] = true
		mu.Unlock()
		note := ""
		if repeat {
			note = " (repeat, dropped)"
		}
		fmt.Printf("webhook %s %s: signature ok%s\n  %s\n", r.Header.Get(notify.HeaderEvent), id, note, body)
		os.Stdout.Sync()
	}))
}
