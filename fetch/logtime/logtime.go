// Package logtime records when a container's output was written, next to
// the output, without touching its bytes: the time index behind kubectl
// logs --timestamps, --since and --since-time.
//
// A container's log is a plain file its process appends to. A sampler
// (slurm-vk-logtime, started by the job script beside each container
// attempt) looks at the log's size and modification time every few
// milliseconds and, when the size has grown, appends a Record: "the first
// End bytes were all written by Time, the last of them at Time". The
// writing process never waits for it, and if it dies the log is whole; only
// the index stops growing. Readers take a byte's time from the first record
// whose End is past it; bytes past the last record get the log's own
// modification time, which is the same answer the sampler's next record
// would have given.
//
// Times are the compute node's wall clock (the file's mtime). The sampler
// keeps them non-decreasing: after a clock step backwards, records carry the
// last time seen until the clock passes it again, so the index can be
// searched by time.
package logtime

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"
)

// RecordSize is a record's size on disk: End and Time, 64-bit little-endian.
const RecordSize = 16

// Record says the first End bytes of the log were written by Time (Unix
// nanoseconds).
type Record struct {
	End  int64
	Time int64
}

// At is the record's time.
func (r Record) At() time.Time { return time.Unix(0, r.Time).UTC() }

// Encode is the record as it is stored.
func (r Record) Encode() []byte {
	var b [RecordSize]byte
	binary.LittleEndian.PutUint64(b[:8], uint64(r.End))
	binary.LittleEndian.PutUint64(b[8:], uint64(r.Time))
	return b[:]
}

func decode(b []byte) Record {
	return Record{End: int64(binary.LittleEndian.Uint64(b[:8])), Time: int64(binary.LittleEndian.Uint64(b[8:]))}
}

// Index is a time index being read: a reader over its records, of which
// there are size/RecordSize (a partly written last record is ignored).
// The index is written by the job, so nothing here trusts it: records out
// of order only give wrong times for that log, never an error or a loop.
type Index struct {
	r io.ReaderAt
	n int64
}

// NewIndex reads an index of size bytes.
func NewIndex(r io.ReaderAt, size int64) *Index { return &Index{r: r, n: size / RecordSize} }

// Len is the number of records.
func (x *Index) Len() int64 { return x.n }

// Record reads record i.
func (x *Index) Record(i int64) (Record, error) {
	var b [RecordSize]byte
	if _, err := x.r.ReadAt(b[:], i*RecordSize); err != nil {
		return Record{}, err
	}
	return decode(b[:]), nil
}

// search is sort.Search over the records, stopping at a read error.
func (x *Index) search(f func(Record) bool) (int64, error) {
	var err error
	i := sort.Search(int(x.n), func(i int) bool {
		if err != nil {
			return true
		}
		var r Record
		r, err = x.Record(int64(i))
		return err == nil && f(r)
	})
	return int64(i), err
}

// Range returns the records that time the bytes [from, to): those whose End
// is past from, up to and including the first whose End reaches to, at most
// max of them. Times are made non-decreasing. When the index stops short of
// to, the last record returned ends before to and the caller times the rest
// (Tail).
func (x *Index) Range(from, to int64, max int) ([]Record, error) {
	i, err := x.search(func(r Record) bool { return r.End > from })
	if err != nil {
		return nil, err
	}
	var out []Record
	var last int64
	if i > 0 {
		if r, err := x.Record(i - 1); err == nil {
			last = r.Time
		}
	}
	// One read for the records that can matter: at most max+1 of them.
	// Out-of-order records (not the sampler's) are skipped, not trusted.
	k := min(x.n-i, int64(max)+1)
	buf := make([]byte, k*RecordSize)
	if k > 0 {
		if _, err := x.r.ReadAt(buf, i*RecordSize); err != nil && err != io.EOF {
			return nil, err
		}
	}
	for j := int64(0); j < k && len(out) < max; j++ {
		r := decode(buf[j*RecordSize:])
		if r.End <= from || len(out) > 0 && r.End <= out[len(out)-1].End {
			continue // rewritten since the search, or out of order
		}
		r.Time = maxInt(r.Time, last)
		last = r.Time
		out = append(out, r)
		if r.End >= to {
			break
		}
	}
	return out, nil
}

// Since returns the offset of the first byte written at or after t by the
// index, and false when the index has no record that late (then the bytes
// past its end may be: see Tail).
func (x *Index) Since(t time.Time) (int64, bool, error) {
	ns := t.UnixNano()
	i, err := x.search(func(r Record) bool { return r.Time >= ns })
	if err != nil || i == x.n {
		return 0, false, err
	}
	if i == 0 {
		return 0, true, nil
	}
	prev, err := x.Record(i - 1)
	return prev.End, err == nil, err
}

// End is the offset the index reaches (its last record's End), 0 when
// empty.
func (x *Index) End() (int64, error) {
	if x.n == 0 {
		return 0, nil
	}
	r, err := x.Record(x.n - 1)
	return r.End, err
}

// Tail is the record that times the bytes past an index's end: the log's
// size and modification time, never earlier than the index's last time.
func Tail(size int64, mtime time.Time, last []Record) Record {
	t := mtime.UnixNano()
	if n := len(last); n > 0 {
		t = maxInt(t, last[n-1].Time)
	}
	return Record{End: size, Time: t}
}

// Lookup times a byte: the first of recs (in order) whose End is past off.
// i is where the previous lookup stopped (offsets only grow), and the new
// position is returned. Past the last record, the last record's time.
func Lookup(recs []Record, i int, off int64) (time.Time, int) {
	for i < len(recs) && recs[i].End <= off {
		i++
	}
	switch {
	case i < len(recs):
		return recs[i].At(), i
	case len(recs) > 0:
		return recs[len(recs)-1].At(), i
	}
	return time.Time{}, i
}

func maxInt(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Sampler appends records for one log.
type Sampler struct {
	Log, Index string
	// Every is the sampling period; lines written within one period share
	// its record's time.
	Every time.Duration
	// Alive, when set, is asked each period: false ends Run (the job
	// script that started the sampler is gone).
	Alive func() bool
}

// Run samples until ctx ends or Alive says no, then takes a last sample.
// A log that does not exist yet is waited for.
func (s *Sampler) Run(ctx context.Context) error {
	// Never through a symlink, and only into a regular file: a FIFO in the
	// index's place would block the sampler, and with it the attempt's end.
	f, err := os.OpenFile(s.Index, os.O_RDWR|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", s.Index)
	}
	last, err := lastRecord(f)
	if err != nil {
		return err
	}
	t := time.NewTicker(s.Every)
	defer t.Stop()
	for {
		if last, err = s.sample(f, last); err != nil {
			return err
		}
		if ctx.Err() != nil || (s.Alive != nil && !s.Alive()) {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

// sample appends a record when the log has grown since last.
func (s *Sampler) sample(f *os.File, last Record) (Record, error) {
	fi, err := os.Stat(s.Log)
	if errors.Is(err, fs.ErrNotExist) {
		return last, nil
	}
	if err != nil || fi.Size() <= last.End {
		return last, err
	}
	r := Record{End: fi.Size(), Time: maxInt(fi.ModTime().UnixNano(), last.Time)}
	if _, err := f.Write(r.Encode()); err != nil {
		return last, err
	}
	return r, nil
}

// lastRecord reads an existing index's last record, so that a sampler
// started again (the same attempt) carries on where the last one stopped.
func lastRecord(f *os.File) (Record, error) {
	fi, err := f.Stat()
	if err != nil {
		return Record{}, err
	}
	x := NewIndex(f, fi.Size())
	if x.Len() == 0 {
		return Record{}, nil
	}
	if fi.Size()%RecordSize != 0 {
		// A torn record (the sampler killed mid-write): drop it, so the
		// records after it stay aligned.
		if err := f.Truncate(x.Len() * RecordSize); err != nil {
			return Record{}, err
		}
	}
	return x.Record(x.Len() - 1)
}

// Command is slurm-vk-logtime: sample LOG into INDEX every 10 ms until
// SIGTERM (the job script, once the container has ended) or until the
// process that started it is gone. It returns the exit code.
func Command(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: slurm-vk-logtime LOG INDEX")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	parent := os.Getppid()
	s := &Sampler{Log: args[0], Index: args[1], Every: 10 * time.Millisecond,
		Alive: func() bool { return os.Getppid() == parent }}
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "slurm-vk-logtime:", err)
		return 1
	}
	return 0
}
