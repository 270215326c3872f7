package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"coffer/engine"
)

// progressLine redraws one status line on a terminal every 250 ms until
// stopped. Off a terminal it prints nothing.
type progressLine struct {
	w    io.Writer
	p    *engine.Progress
	verb string
	stop chan struct{}
	wg   sync.WaitGroup
}

func startProgress(w io.Writer, verb string) *progressLine {
	pl := &progressLine{w: w, p: &engine.Progress{}, verb: verb, stop: make(chan struct{})}
	if !isTerminal(w) {
		return pl
	}
	start := time.Now()
	pl.wg.Add(1)
	go func() {
		defer pl.wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-pl.stop:
				fmt.Fprint(pl.w, "\r\033[K")
				return
			case <-tick.C:
				fmt.Fprint(pl.w, "\r\033[K"+pl.render(time.Since(start)))
			}
		}
	}()
	return pl
}

func (pl *progressLine) render(el time.Duration) string {
	files, bytes := pl.p.Files.Load(), pl.p.Bytes.Load()
	rate := float64(bytes) / el.Seconds()
	s := fmt.Sprintf("[%s] %s %d files, %s, %s/s", el.Truncate(time.Second), pl.verb, files, formatBytes(bytes), formatBytes(int64(rate)))
	if tb := pl.p.TotalBytes.Load(); tb > 0 {
		s += fmt.Sprintf(" of %d files, %s", pl.p.TotalFiles.Load(), formatBytes(tb))
		if pl.p.ScanDone.Load() && rate > 0 && tb > bytes {
			s += fmt.Sprintf(", ETA %s", time.Duration(float64(tb-bytes)/rate*float64(time.Second)).Truncate(time.Second))
		}
	}
	if e := pl.p.Errors.Load(); e > 0 {
		s += fmt.Sprintf(", %d errors", e)
	}
	return s
}

func (pl *progressLine) done() {
	close(pl.stop)
	pl.wg.Wait()
}
