package logtime

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func index(recs ...Record) *Index {
	var b bytes.Buffer
	for _, r := range recs {
		b.Write(r.Encode())
	}
	return NewIndex(bytes.NewReader(b.Bytes()), int64(b.Len()))
}

func TestRange(t *testing.T) {
	x := index(Record{10, 100}, Record{20, 200}, Record{30, 150}, Record{40, 400})
	tests := []struct {
		name     string
		from, to int64
		max      int
		want     []Record
	}{
		{"first bytes", 0, 5, 10, []Record{{10, 100}}},
		{"a record's last byte", 9, 10, 10, []Record{{10, 100}}},
		{"from a record's end", 10, 25, 10, []Record{{20, 200}, {30, 200}}}, // clock step back: kept at 200
		{"past the index", 35, 60, 10, []Record{{40, 400}}},
		{"nothing there", 40, 60, 10, nil},
		{"capped", 0, 40, 2, []Record{{10, 100}, {20, 200}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := x.Range(tt.from, tt.to, tt.max)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("%v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestHostileIndex(t *testing.T) {
	// Out of order, a torn last record: wrong times at worst, no error.
	var b bytes.Buffer
	for _, r := range []Record{{50, 9}, {10, 1}, {-5, -1}, {60, 3}} {
		b.Write(r.Encode())
	}
	b.WriteString("torn")
	x := NewIndex(bytes.NewReader(b.Bytes()), int64(b.Len()))
	if x.Len() != 4 {
		t.Fatalf("%d records, want 4 (the torn one ignored)", x.Len())
	}
	recs, err := x.Range(0, 100, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].End <= recs[i-1].End || recs[i].Time < recs[i-1].Time {
			t.Fatalf("records not in order: %v", recs)
		}
	}
	if _, _, err := x.Since(time.Unix(0, 5)); err != nil {
		t.Fatal(err)
	}
}

func TestSince(t *testing.T) {
	x := index(Record{10, 100}, Record{20, 200}, Record{40, 400})
	tests := []struct {
		ns     int64
		off    int64
		inside bool
	}{
		{50, 0, true},
		{100, 0, true},
		{101, 10, true},
		{400, 20, true},
		{401, 0, false},
	}
	for _, tt := range tests {
		off, ok, err := x.Since(time.Unix(0, tt.ns))
		if err != nil || off != tt.off || ok != tt.inside {
			t.Errorf("Since(%d) = %d, %v, %v; want %d, %v", tt.ns, off, ok, err, tt.off, tt.inside)
		}
	}
}

func TestLookup(t *testing.T) {
	recs := []Record{{10, 100}, {20, 200}}
	i := 0
	for _, c := range []struct {
		off int64
		ns  int64
	}{{0, 100}, {9, 100}, {10, 200}, {19, 200}, {25, 200}} {
		var at time.Time
		at, i = Lookup(recs, i, c.off)
		if at.UnixNano() != c.ns {
			t.Errorf("Lookup(%d) = %d, want %d", c.off, at.UnixNano(), c.ns)
		}
	}
}

// sampleOnce runs a sampler for one sample (its context already ended).
func sampleOnce(t *testing.T, s *Sampler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

func readIndex(t *testing.T, path string) []Record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	x := NewIndex(bytes.NewReader(b), int64(len(b)))
	recs, err := x.Range(-1, 1<<62, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestSampler drives the sampler sample by sample: the log's mtime is set
// by hand, so clock steps are exact.
func TestSampler(t *testing.T) {
	dir := t.TempDir()
	log, idx := filepath.Join(dir, "0.log"), filepath.Join(dir, "0.times")
	s := &Sampler{Log: log, Index: idx, Every: time.Hour}
	write := func(data string, at int64) {
		f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(data)
		f.Close()
		if err := os.Chtimes(log, time.Unix(0, at), time.Unix(0, at)); err != nil {
			t.Fatal(err)
		}
	}
	sampleOnce(t, s) // no log yet: nothing, no error
	write("hello ", 1000)
	sampleOnce(t, s)
	sampleOnce(t, s)       // unchanged: no record
	write("world\n", 2000) // a line split across writes
	sampleOnce(t, s)       // a new sampler (a restart) carries on
	write("late\n", 1500)  // the clock stepped back
	sampleOnce(t, s)
	write("no newline", 3000)
	sampleOnce(t, s)
	got := readIndex(t, idx)
	want := []Record{{6, 1000}, {12, 2000}, {17, 2000}, {27, 3000}}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}

	// A torn record left by a killed sampler is dropped on restart.
	f, _ := os.OpenFile(idx, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{1, 2, 3})
	f.Close()
	write("!", 4000)
	sampleOnce(t, s)
	got = readIndex(t, idx)
	if len(got) != 5 || got[4] != (Record{28, 4000}) {
		t.Fatalf("after a torn record: %v", got)
	}
}

// TestSamplerStopsWithItsParent: Alive false ends Run.
func TestSamplerStopsWithItsParent(t *testing.T) {
	dir := t.TempDir()
	alive := true
	s := &Sampler{Log: filepath.Join(dir, "0.log"), Index: filepath.Join(dir, "0.times"), Every: time.Millisecond,
		Alive: func() bool { a := alive; alive = false; return a }}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // generous: only a hang fails
		t.Fatal("the sampler did not stop when its parent went away")
	}
}
