package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/numaflow-connectors/sources/common/numatest"
)

// maxPayloadShown is how many payload bytes --print full shows.
const maxPayloadShown = 200

// rateWindow is the span over which the progress line's read/s is measured.
const rateWindow = 2 * time.Second

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// display owns the progress line on stderr and the message lines on stdout; its lock keeps them
// from interleaving on a terminal.
type display struct {
	mu       sync.Mutex
	stdout   io.Writer
	stderr   io.Writer
	tty      bool
	start    time.Time
	last     numatest.Stats
	samples  []sample // (time, read) over the last rateWindow
	drawn    bool     // a progress line is on screen (tty only)
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

type sample struct {
	at   time.Time
	read int64
}

func newDisplay(stdout, stderr io.Writer, every time.Duration) *display {
	d := &display{stdout: stdout, stderr: stderr, tty: isTerminal(stderr), start: time.Now(),
		last: numatest.Stats{LastPending: -1}, stop: make(chan struct{}), done: make(chan struct{})}
	if every <= 0 {
		every = 5 * time.Second
		if d.tty {
			every = 500 * time.Millisecond
		}
	}
	go d.loop(every)
	return d
}

func (d *display) loop(every time.Duration) {
	defer close(d.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.mu.Lock()
			d.drawLocked()
			d.mu.Unlock()
		}
	}
}

// update records a stats snapshot (numatest's OnStats hook).
func (d *display) update(s numatest.Stats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.last = s
	now := time.Now()
	d.samples = append(d.samples, sample{now, s.Read})
	i := 0
	for i < len(d.samples)-1 && now.Sub(d.samples[i].at) > rateWindow {
		i++
	}
	d.samples = d.samples[i:]
}

// recentRate is read/s over the samples of the last rateWindow. Called with mu held.
func (d *display) recentRateLocked() float64 {
	if len(d.samples) == 0 {
		return 0
	}
	first, last := d.samples[0], d.samples[len(d.samples)-1]
	span := time.Since(first.at)
	if span < 100*time.Millisecond {
		span = time.Since(d.start)
	}
	if span <= 0 {
		return 0
	}
	return float64(last.read-first.read) / span.Seconds()
}

func (d *display) drawLocked() {
	s := d.last
	line := fmt.Sprintf("%6.1fs  read %s  %s/s  acked %s  nacked %s  dup %s  pending %s",
		time.Since(d.start).Seconds(), group(s.Read), group(int64(d.recentRateLocked())),
		group(s.Acked), group(s.Nacked), group(s.Duplicates), pending(s.LastPending))
	if s.Held > 0 {
		line += "  held " + group(s.Held)
	}
	if d.tty {
		fmt.Fprint(d.stderr, "\r\x1b[K"+line)
		d.drawn = true
	} else {
		fmt.Fprintln(d.stderr, line)
	}
}

// clearLocked removes the progress line from a terminal. Called with mu held.
func (d *display) clearLocked() {
	if d.drawn {
		fmt.Fprint(d.stderr, "\r\x1b[K")
		d.drawn = false
	}
}

// printBatch writes one line per message to stdout (--print full).
func (d *display) printBatch(batch []numatest.Message) {
	var b strings.Builder
	for _, m := range batch {
		b.WriteString(formatMessage(m))
		b.WriteByte('\n')
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clearLocked()
	fmt.Fprint(d.stdout, b.String())
}

// close stops the refresh and removes the progress line. Idempotent.
func (d *display) close() {
	d.stopOnce.Do(func() { close(d.stop) })
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clearLocked()
}

// summary writes the final totals to w.
func summary(w io.Writer, s numatest.Stats) {
	avg := 0.0
	if secs := s.Elapsed.Seconds(); secs > 0 {
		avg = float64(s.Read) / secs
	}
	fmt.Fprintf(w, "summary\n")
	fmt.Fprintf(w, "  elapsed     %s\n", s.Elapsed.Truncate(time.Millisecond))
	fmt.Fprintf(w, "  read        %d (%.0f/s average)\n", s.Read, avg)
	fmt.Fprintf(w, "  acked       %d\n", s.Acked)
	fmt.Fprintf(w, "  nacked      %d\n", s.Nacked)
	if s.NackSkipped > 0 {
		fmt.Fprintf(w, "  not nacked  %d (numa sends no nacks to the source's SDK: see the warning at start)\n", s.NackSkipped)
	}
	fmt.Fprintf(w, "  held        %d\n", s.Held)
	fmt.Fprintf(w, "  duplicates  %d\n", s.Duplicates)
	if s.Deduplicated > 0 {
		fmt.Fprintf(w, "  offset reused %d (acked, but an ISB drops them: the offset was written within %s)\n", s.Deduplicated, numatest.DefaultDedupWindow)
	}
	fmt.Fprintf(w, "  batches     %d (%d empty reads)\n", s.Batches, s.EmptyReads)
	if s.LastPending < 0 {
		fmt.Fprintf(w, "  pending     unknown\n")
	} else {
		fmt.Fprintf(w, "  pending     %d\n", s.LastPending)
	}
}

func pending(p int64) string {
	if p < 0 {
		return "?"
	}
	return group(p)
}

// group formats n with thousands separators.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// formatMessage is one line: offset, partition, event time, keys, headers and payload (quoted text
// when it is valid UTF-8, base64 otherwise; at most maxPayloadShown bytes).
func formatMessage(m numatest.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "offset=%s partition=%d event_time=%s", showBytes(m.Offset.Value, 0), m.Offset.Partition,
		m.EventTime.UTC().Format(time.RFC3339Nano))
	if len(m.Keys) > 0 {
		qs := make([]string, len(m.Keys))
		for i, k := range m.Keys {
			qs[i] = strconv.Quote(k)
		}
		fmt.Fprintf(&b, " keys=[%s]", strings.Join(qs, ","))
	}
	if len(m.Headers) > 0 {
		names := make([]string, 0, len(m.Headers))
		for k := range m.Headers {
			names = append(names, k)
		}
		slices.Sort(names)
		hs := make([]string, len(names))
		for i, k := range names {
			hs[i] = strconv.Quote(k) + ":" + strconv.Quote(m.Headers[k])
		}
		fmt.Fprintf(&b, " headers={%s}", strings.Join(hs, ","))
	}
	fmt.Fprintf(&b, " payload=%s", showBytes(m.Payload, maxPayloadShown))
	return b.String()
}

// showBytes renders p as quoted text when it is valid UTF-8, else as base64 ("b64:..."); a limit > 0
// truncates it (at a rune boundary for text) and notes the full size.
func showBytes(p []byte, limit int) string {
	text := utf8.Valid(p)
	shown := p
	if limit > 0 && len(p) > limit {
		shown = p[:limit]
		if text {
			for len(shown) > 0 && !utf8.Valid(shown) {
				shown = shown[:len(shown)-1]
			}
		}
	}
	var s string
	switch {
	case text && limit == 0 && plain(string(p)):
		s = string(p) // offsets that are plain words stay unquoted
	case text:
		s = strconv.Quote(string(shown))
	default:
		s = "b64:" + base64.StdEncoding.EncodeToString(shown)
	}
	if len(shown) < len(p) {
		s += fmt.Sprintf("...(%d bytes)", len(p))
	}
	return s
}

// plain reports whether s is non-empty and has no spaces, quotes or control characters.
func plain(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || r == '"' || r == '=' {
			return false
		}
	}
	return true
}
