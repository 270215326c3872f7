package remote

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"coffer/engine"
)

// TestRemoteLoad: one server, several tenants each with its own key, and a
// client per tenant backing up its own data set at the same time, then
// restoring it at the same time; every restore must be byte-identical and
// no request may fail; each phase is bounded in time. It logs, per phase,
// the throughput (MiB/s of source data, all clients together, wall time
// from the first dial to the last client done), the fastest and slowest
// client, the bytes on the wire, the CPU time of the process (server and
// clients) and the load average.
//
// Sizes: 8 clients × 8 MiB by default (about 4 s on two cores), 8 ×
// 256 KiB with -short. For the benchmark figures:
//
//	COFFER_LOAD_CLIENTS=16 COFFER_LOAD_MB=32 COFFER_LOAD_SINGLE=1 \
//	  go test -run TestRemoteLoad -v -timeout 60m ./engine/remote/
//
// COFFER_LOAD_CLIENTS is the number of clients (and tenants),
// COFFER_LOAD_MB the data per client; COFFER_LOAD_SINGLE=1 then also runs
// one client alone on the same total data (in a fresh repository), and
// logs the ratio of the throughputs.
func TestRemoteLoad(t *testing.T) {
	clients, perClient := 8, 8<<20
	if testing.Short() {
		perClient = 256 << 10
	}
	if v := os.Getenv("COFFER_LOAD_CLIENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("COFFER_LOAD_CLIENTS=%q", v)
		}
		clients = n
	}
	if v := os.Getenv("COFFER_LOAD_MB"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n <= 0 {
			t.Fatalf("COFFER_LOAD_MB=%q", v)
		}
		perClient = int(n * (1 << 20))
	}
	many := runLoad(t, clients, perClient)
	if os.Getenv("COFFER_LOAD_SINGLE") != "" {
		one := runLoad(t, 1, clients*perClient)
		t.Logf("ratio %d clients / 1 client (same total data): backup %.2f, restore %.2f",
			clients, many.backupMBs/one.backupMBs, many.restoreMBs/one.restoreMBs)
	}
}

type loadResult struct {
	backupMBs, restoreMBs float64
}

// runLoad backs up and restores clients data sets of about perClient bytes
// each, one tenant and one client per data set, all clients at once, in a
// fresh repository.
func runLoad(t *testing.T, clients, perClient int) loadResult {
	t.Helper()
	ctx := context.Background()
	work, err := os.MkdirTemp("", "coffer-load-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)
	dir := filepath.Join(work, "repo")
	if _, err := engine.Init(ctx, dir, engine.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	keys := make([]ed25519.PrivateKey, clients)
	srcs := make([]string, clients)
	sizes := make([]int64, clients)
	var total int64
	for i := range clients {
		name := fmt.Sprintf("tenant%02d", i)
		if _, err := e.CreateTenant(ctx, name, engine.TenantOptions{}); err != nil {
			t.Fatal(err)
		}
		if keys[i], err = GenerateKey(); err != nil {
			t.Fatal(err)
		}
		if _, err := e.AddClientKey(ctx, name, keys[i].Public().(ed25519.PublicKey), "", []string{engine.RoleBackup, engine.RoleRestore}); err != nil {
			t.Fatal(err)
		}
		srcs[i] = filepath.Join(work, "src", name)
		sizes[i] = writeLoadData(t, srcs[i], perClient, uint64(i))
		total += sizes[i]
	}
	// The snapshot's start must come after every mtime, as in real use.
	time.Sleep(10 * time.Millisecond)

	addr, fp, stop := serveOn(t, e, "127.0.0.1:0", Config{IdleTimeout: time.Minute})
	defer stop()

	// Every phase is bounded: at least 1 MB/s of total data, and a minute
	// at least. A hang fails the test instead of blocking it.
	bound := time.Minute + time.Duration(total>>20)*time.Second
	var mu sync.Mutex
	var errs []string
	var wire int64
	// phase runs fn for every client at once and logs the throughput.
	phase := func(name string, fn func(ctx context.Context, i int, cl *Client) error) float64 {
		pctx, stop := context.WithTimeout(ctx, bound)
		defer stop()
		per := make([]time.Duration, clients)
		var wg sync.WaitGroup
		cpu0 := processCPUTime()
		start := time.Now()
		for i := range clients {
			wg.Go(func() {
				t0 := time.Now()
				err := func() error {
					cl, err := Dial(pctx, addr, keys[i], fp)
					if err != nil {
						return err
					}
					defer cl.Close()
					err = fn(pctx, i, cl)
					s, r := cl.Traffic()
					mu.Lock()
					wire += s + r
					mu.Unlock()
					return err
				}()
				per[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%s, client %d: %v", name, i, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		d := time.Since(start)
		cpu := processCPUTime() - cpu0
		mbs := float64(total) / (1 << 20) / d.Seconds()
		slices.Sort(per)
		t.Logf("%d clients, %s: %.1f MiB in %v = %.1f MiB/s (per client: fastest %v, slowest %v); wire %.1f MiB; CPU of server and clients %.1fs (%.0f%% of the wall time, %.1f MiB per CPU second); loadavg %s",
			clients, name, float64(total)/(1<<20), d.Round(time.Millisecond), mbs,
			per[0].Round(time.Millisecond), per[len(per)-1].Round(time.Millisecond), float64(wire)/(1<<20),
			cpu.Seconds(), 100*cpu.Seconds()/d.Seconds(), float64(total)/(1<<20)/cpu.Seconds(), loadAverage())
		return mbs
	}

	var res loadResult
	res.backupMBs = phase("backup", func(ctx context.Context, i int, cl *Client) error {
		s, err := cl.Backup(ctx, []string{srcs[i]}, BackupOptions{Host: "load"})
		if err == nil && s.Stats.Bytes != sizes[i] {
			err = fmt.Errorf("snapshot of %d bytes, the data set has %d", s.Stats.Bytes, sizes[i])
		}
		return err
	})
	wire = 0
	targets := make([]string, clients)
	res.restoreMBs = phase("restore", func(ctx context.Context, i int, cl *Client) error {
		targets[i] = filepath.Join(work, "restore", strconv.Itoa(i))
		st, err := cl.Restore(ctx, "latest", targets[i], engine.RestoreOptions{})
		if err == nil && len(st.Warnings) > 0 {
			err = fmt.Errorf("restore warnings: %v", st.Warnings)
		}
		return err
	})
	for _, m := range errs {
		t.Error(m)
	}
	t.Logf("%d clients: %d errors", clients, len(errs))
	if len(errs) > 0 {
		return res
	}
	for i := range clients {
		sameFiles(t, srcs[i], filepath.Join(targets[i], srcs[i]))
		os.RemoveAll(targets[i])
	}
	// Each tenant sees only its own snapshot.
	for i := range clients {
		tn, err := e.OpenTenant(ctx, fmt.Sprintf("tenant%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		if ss, err := tn.Snapshots(ctx); err != nil || len(ss) != 1 || ss[0].Paths[0] != srcs[i] {
			t.Errorf("tenant %d: snapshots %v, %v", i, ss, err)
		}
	}
	if total <= 64<<20 {
		checkRepo(t, e)
	}
	return res
}

// writeLoadData writes a deterministic data set of about size bytes below
// dir (seeded by seed) and returns its size: random data (40 %), log-like
// text that compresses several times (30 %), a disk-image-like file of
// mostly zeros (10 %), small files in folders of 64 (15 %), and a copy
// of part of the random file (5 %, deduplicated within the tenant).
func writeLoadData(t *testing.T, dir string, size int, seed uint64) int64 {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(seed, 0x10ad))
	random := make([]byte, size*40/100)
	fillPseudoRandom(rng, random)
	writeFileAll(t, filepath.Join(dir, "random.bin"), random)
	writeFileAll(t, filepath.Join(dir, "copy", "random-part.bin"), random[:size*5/100])

	var text bytes.Buffer
	services := []string{"auth", "billing", "search", "upload", "mail"}
	for text.Len() < size*30/100 {
		fmt.Fprintf(&text, "2026-11-%02dT%02d:%02d:%02d.%03dZ host-%d service=%s request=%016x status=%d bytes=%d\n",
			1+rng.IntN(27), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1000), rng.IntN(8),
			services[rng.IntN(len(services))], rng.Uint64(), []int{200, 200, 200, 304, 404, 500}[rng.IntN(6)], rng.IntN(1<<20))
	}
	writeFileAll(t, filepath.Join(dir, "logs", "service.log"), text.Bytes())

	img := make([]byte, size*10/100)
	for off := 0; off < len(img); off += 64 << 10 {
		fillPseudoRandom(rng, img[off:min(off+4096, len(img))])
	}
	writeFileAll(t, filepath.Join(dir, "disk.img"), img)

	// Small files of 1 to 128 KiB: not smaller, as creating a file costs
	// about 0.7 ms of kernel time on the test VM, which would dominate the
	// restore of a large data set.
	small := size * 15 / 100
	for i := 0; small > 0; i++ {
		n := min(small, 1024+rng.IntN(127<<10))
		b := make([]byte, n)
		if i%2 == 0 {
			fillPseudoRandom(rng, b)
		} else {
			for j := range b {
				b[j] = "abcdefgh \n"[rng.IntN(10)]
			}
		}
		writeFileAll(t, filepath.Join(dir, "small", fmt.Sprintf("d%03d", i/64), fmt.Sprintf("f%05d", i)), b)
		small -= n
	}
	return treeBytes(t, dir)
}

// processCPUTime is the user and system CPU time of this process so far
// (server and clients run in it).
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAverage is the first three fields of /proc/loadavg ("?" elsewhere).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

// treeBytes is the bytes of the regular files below dir.
func treeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
