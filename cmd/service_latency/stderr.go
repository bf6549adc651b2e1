package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Log lines are bounded, and a stderr nobody reads can never stop a
// gather. Telegraf's execd reads our stderr line by line with a
// bufio.Scanner whose limit is 64 KiB: a longer line kills its reader,
// after which every write to a full pipe would block the writer forever.
const (
	// maxLogLine is the longest line written to stderr; longer lines are
	// cut and say so.
	maxLogLine = 4 << 10
	// stderrQueue is how many lines wait for a slow stderr before new ones
	// are dropped (and counted).
	stderrQueue = 1024
)

// cutLine bounds one line (without its newline) to maxLogLine bytes.
func cutLine(s string) string {
	if len(s) <= maxLogLine {
		return s
	}
	const note = " … [cut]"
	cut := maxLogLine - len(note)
	for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + note
}

// dropWriter hands whole lines to a goroutine that writes them to w. When
// w does not keep up, lines beyond stderrQueue are dropped and counted,
// and a line saying how many is written once w takes lines again. Write
// never blocks.
type dropWriter struct {
	lines   chan []byte
	dropped atomic.Int64
	done    chan struct{}
	once    sync.Once
}

func newDropWriter(w io.Writer) *dropWriter {
	d := &dropWriter{lines: make(chan []byte, stderrQueue), done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for line := range d.lines {
			if n := d.dropped.Swap(0); n > 0 {
				fmt.Fprintf(w, "W! %d log lines dropped: stderr was not read fast enough\n", n)
			}
			_, _ = w.Write(line)
		}
	}()
	return d
}

// Write queues p (one or more whole lines) or drops it.
func (d *dropWriter) Write(p []byte) (int, error) {
	select {
	case d.lines <- append([]byte(nil), p...):
	default:
		d.dropped.Add(1)
	}
	return len(p), nil
}

// Close writes what is queued, waiting at most wait (a stderr that is not
// read must not hold up the exit).
func (d *dropWriter) Close(wait time.Duration) {
	d.once.Do(func() { close(d.lines) })
	select {
	case <-d.done:
	case <-time.After(wait):
	}
}

// forwardLines copies r to w line by line, each cut to maxLogLine; a line
// of any length is read through (and dropped past the limit), never held
// whole.
func forwardLines(r io.Reader, w io.Writer) {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if keep := maxLogLine + 1 - len(line); keep > 0 {
			line = append(line, chunk[:min(len(chunk), keep)]...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if len(line) > 0 {
			_, _ = w.Write([]byte(cutLine(strings.TrimRight(string(line), "\n")) + "\n"))
			line = line[:0]
		}
		if err != nil {
			return
		}
	}
}

// redirectStderr points os.Stderr at a pipe whose lines are cut and
// forwarded through a dropWriter to the real stderr, so that every writer
// in the process (ours, the shim's, Telegraf's logger) is bounded and
// non-blocking. It returns the function that flushes at exit.
func redirectStderr() (flush func()) {
	real := os.Stderr
	r, w, err := os.Pipe()
	if err != nil {
		return func() {}
	}
	d := newDropWriter(real)
	os.Stderr = w
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		forwardLines(r, d)
	}()
	return func() {
		os.Stderr = real
		w.Close()
		select {
		case <-forwarded:
		case <-time.After(time.Second):
		}
		d.Close(time.Second)
	}
}
