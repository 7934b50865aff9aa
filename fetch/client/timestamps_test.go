package client

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/logtime"
)

// stampFixture writes a log, its time index and the log's mtime.
func (f *fixture) stamp(t testing.TB, data string, recs []logtime.Record, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(f.logPath("main"), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, r := range recs {
		b.Write(r.Encode())
	}
	if err := os.WriteFile(filepath.Join(f.root, pod.Dir(), layout.TimesFile("main", 0)), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(f.logPath("main"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// reference is the expected output: each line prefixed with the time of the
// record covering its first byte (past the index, the log's mtime).
func reference(data string, from int64, recs []logtime.Record, mtime time.Time) string {
	var b strings.Builder
	start := true
	for o := from; o < int64(len(data)); o++ {
		if start {
			at := mtime
			for _, r := range recs {
				if r.End > o {
					at = time.Unix(0, r.Time)
					break
				}
			}
			b.WriteString(at.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") + " ")
		}
		b.WriteByte(data[o])
		start = data[o] == '\n'
	}
	return b.String()
}

func TestTimestamps(t *testing.T) {
	f := newFixture(t)
	c := newClient(t, f.serve(t))
	base := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	ns := func(s float64) int64 { return base.Add(time.Duration(s * float64(time.Second))).UnixNano() }
	at := func(s float64) time.Time { return time.Unix(0, ns(s)) }
	// Lines: "one\n" written at 1 s; "two " at 2 s and "halves\n" at 3 s
	// (a line split across writes); "crlf\r\n" at 4 s; "\x00bin\n" and a
	// last line without newline past the index, timed by the mtime (5 s).
	data := "one\ntwo halves\ncrlf\r\n\x00bin\nlast"
	recs := []logtime.Record{{End: 4, Time: ns(1)}, {End: 8, Time: ns(2)}, {End: 15, Time: ns(3)}, {End: 21, Time: ns(4)}}
	mtime := at(5)
	f.stamp(t, data, recs, mtime)
	ts := func(s float64) string { return at(s).UTC().Format("2006-01-02T15:04:05.000000000Z07:00") + " " }
	tests := []struct {
		name string
		opts LogOptions
		want string
	}{
		{"all", LogOptions{TailLines: -1}, ts(1) + "one\n" + ts(2) + "two halves\n" + ts(4) + "crlf\r\n" + ts(5) + "\x00bin\n" + ts(5) + "last"},
		{"tail 2", LogOptions{TailLines: 2}, ts(5) + "\x00bin\n" + ts(5) + "last"},
		{"since 2 s", LogOptions{TailLines: -1, Since: at(2)}, reference(data, 4, recs, mtime)},
		// A line that began before since is left out, even if it ended after.
		{"since 2.5 s", LogOptions{TailLines: -1, Since: at(2.5)}, reference(data, 15, recs, mtime)},
		{"since past the index", LogOptions{TailLines: -1, Since: at(4.5)}, reference(data, 21, recs, mtime)},
		{"since after everything", LogOptions{TailLines: -1, Since: at(6)}, ""},
		{"tail then since", LogOptions{TailLines: 4, Since: at(4)}, reference(data, 15, recs, mtime)},
		{"limit counts the prefix", LogOptions{TailLines: -1, LimitBytes: 33}, (ts(1) + "one\n" + ts(2))[:33]},
		{"without timestamps, since still applies", LogOptions{TailLines: -1, Since: at(4)}, data[15:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Timestamps = !strings.HasPrefix(tt.name, "without")
			for _, follow := range []bool{false, true} {
				if follow {
					f.exit(t, "main", 0)
				}
				o := tt.opts
				o.Follow = follow
				if got := string(readAll(t, c, o)); got != tt.want {
					t.Errorf("follow=%v:\n got %q\nwant %q", follow, got, tt.want)
				}
			}
			os.Remove(filepath.Join(f.root, pod.Dir(), layout.ExitFile("main", 0)))
		})
	}
}

// TestTimestampsManyRecords: more records than one answer's header holds,
// read in small chunks and small reads, give the reference output.
func TestTimestampsManyRecords(t *testing.T) {
	f := newFixture(t)
	base := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC).UnixNano()
	var data strings.Builder
	var recs []logtime.Record
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&data, "line %d\n", i)
		if i%3 != 2 { // some records cover two lines
			recs = append(recs, logtime.Record{End: int64(data.Len()), Time: base + int64(i)*int64(time.Millisecond)})
		}
	}
	mtime := time.Unix(0, base).Add(time.Hour)
	f.stamp(t, data.String(), recs, mtime)
	want := reference(data.String(), 0, recs, mtime)
	for _, chunk := range []int64{7, 4096, 4 << 20} {
		c := newClient(t, f.serve(t), func(cfg *Config) { cfg.Chunk = chunk })
		if got := string(readAll(t, c, LogOptions{TailLines: -1, Timestamps: true})); got != want {
			t.Fatalf("chunk %d: output differs from the reference (%d bytes, want %d)", chunk, len(got), len(want))
		}
	}
}

// TestTimestampsFollowSurvivesEndpointRestarts: a timestamped follow
// stream across endpoint kills, on output being written (random binary
// chunks, newlines anywhere) and timed by the real sampler, delivers every
// byte once, each line behind one prefix whose time is in the writing
// window and never goes back.
func TestTimestampsFollowSurvivesEndpointRestarts(t *testing.T) {
	f := newFixture(t)
	d := &fetchd{t: t, f: f}
	d.start()
	defer func() { d.kill() }()
	c := newClient(t, "http://"+d.addr)
	began := time.Now()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	s := &logtime.Sampler{Log: f.logPath("main"), Index: filepath.Join(f.root, pod.Dir(), layout.TimesFile("main", 0)), Every: 10 * time.Millisecond}
	go s.Run(ctx)
	wrote := appender(t, f, 4*time.Second, 12)
	out := followThroughKills(t, c, d, LogOptions{TailLines: -1, Follow: true, Timestamps: true})
	want := <-wrote
	ended := time.Now()
	var raw bytes.Buffer
	var last time.Time
	const prefix = len("2006-01-02T15:04:05.000000000Z ")
	for len(out) > 0 {
		if len(out) < prefix || out[prefix-1] != ' ' {
			t.Fatalf("no prefix at a line start after %d bytes", raw.Len())
		}
		at, err := time.Parse(time.RFC3339Nano, string(out[:prefix-1]))
		if err != nil || at.Before(last) || at.Before(began.Add(-time.Second)) || at.After(ended.Add(time.Second)) {
			t.Fatalf("prefix %q after %d bytes: %v (last %v)", out[:prefix], raw.Len(), err, last)
		}
		last = at
		out = out[prefix:]
		n := bytes.IndexByte(out, '\n') + 1
		if n == 0 {
			n = len(out)
		}
		raw.Write(out[:n])
		out = out[n:]
	}
	if !bytes.Equal(raw.Bytes(), want) {
		t.Fatalf("without prefixes: %d bytes, wrote %d (prefix: %v)", raw.Len(), len(want), bytes.HasPrefix(want, raw.Bytes()))
	}
}
