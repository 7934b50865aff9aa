package client

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/slurmkube/slurm-vk/fetch"
	"github.com/slurmkube/slurm-vk/fetch/logtime"
)

// stamped is a timestamped stream's state: raw bytes read but not yet
// delivered (the only buffer a stream holds, and only with timestamps), a
// prefix partly delivered, and whether the next byte starts a line.
type stamped struct {
	buf       []byte
	pend      []byte // undelivered raw bytes, in buf
	pendAt    int64  // offset of pend[0]
	times     []logtime.Record
	ti        int
	prefix    []byte // undelivered prefix bytes
	lineStart bool
	left      int64 // LimitBytes left, prefixes included; -1: none

	// The last prefix formatted, and the offsets it is good for: lines
	// timed by one record share it, so most lines format nothing.
	cached           []byte
	cachedFrom, upTo int64
}

// timeFormat is the kubelet's (RFC 3339, nanoseconds, fixed width).
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// prefixAt is the prefix of a line starting at off.
func (t *stamped) prefixAt(off int64) []byte {
	if off >= t.cachedFrom && off < t.upTo && t.cached != nil {
		return t.cached
	}
	var at time.Time
	at, t.ti = logtime.Lookup(t.times, t.ti, off)
	t.cached = append(at.UTC().AppendFormat(t.cached[:0], timeFormat), ' ')
	t.cachedFrom, t.upTo = off, off+1
	if t.ti < len(t.times) {
		t.upTo = t.times[t.ti].End
	}
	return t.cached
}

func sameRecords(a, b []logtime.Record) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// parseTimes reads an X-Fetch-Times header: records in order, the last
// reaching next.
func parseTimes(v string, offset, next int64) ([]logtime.Record, error) {
	bad := func() error {
		return fmt.Errorf("fetch endpoint: bad %s header for bytes %d-%d (an endpoint older than timestamps?)", fetch.HeaderTimes, offset, next)
	}
	if v == "" {
		return nil, bad()
	}
	recs := make([]logtime.Record, 0, strings.Count(v, ",")+1)
	for _, f := range strings.Split(v, ",") {
		e, t, ok := strings.Cut(f, ":")
		end, err1 := strconv.ParseInt(e, 10, 64)
		ns, err2 := strconv.ParseInt(t, 10, 64)
		if !ok || err1 != nil || err2 != nil || (len(recs) > 0 && end <= recs[len(recs)-1].End) {
			return nil, bad()
		}
		recs = append(recs, logtime.Record{End: end, Time: ns})
	}
	if recs[len(recs)-1].End < next {
		return nil, bad()
	}
	return recs, nil
}
