// Command jobstream-ferretdb runs FerretDB embedded with its SQLite backend.
//
// It exists because `go install .../cmd/ferretdb` panics at start on a missing
// version.txt, while the embeddable package does not need it. It is built by
// deploy/stack.py from FerretDB's module with the patches in patches/ applied.
//
// -debug-addr serves Go's net/http/pprof on a loopback address, to profile the
// store while a benchmark runs (go tool pprof http://127.0.0.1:6060/debug/pprof/profile).
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" //nolint:gosec // served only on loopback, only when -debug-addr is given
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data", "", "directory of the SQLite databases")
	debugAddr := flag.String("debug-addr", "", "loopback address for net/http/pprof (off when empty)")
	flag.Parse()

	if *debugAddr != "" {
		host, _, err := net.SplitHostPort(*debugAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			log.Fatalf("-debug-addr must be a loopback address, got %q", *debugAddr)
		}

		go func() { log.Print(http.ListenAndServe(*debugAddr, nil)) }() //nolint:gosec // profiling only
	}

	if *dataDir == "" {
		log.Fatal("-data is required")
	}
	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		log.Fatalf("cannot create data directory: %v", err)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		// WAL with synchronous=NORMAL: a commit does not wait for fsync (a crash of this process
		// loses nothing; a power cut may lose the last commits), and a checkpoint (which does fsync)
		// every 20,000 pages (80 MiB) instead of 1,000: updates by _id at 1M documents, measured
		// with make bench-store, went from about 1,480 to 1,690-1,860 a second. Temporary storage
		// (the statement journal of a multi-row update) in memory: +15% updates at 20,000 documents.
		SQLiteURL: "file:" + *dataDir + "/?_pragma=synchronous(normal)&_pragma=wal_autocheckpoint(20000)&_pragma=temp_store(2)",
	})
	if err != nil {
		log.Fatalf("cannot start FerretDB: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	log.Printf("FerretDB listening on %s, data in %s", *listen, *dataDir)
	if err := f.Run(ctx); err != nil && ctx.Err() == nil {
		log.Fatalf("FerretDB stopped: %v", err)
	}
}
