package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitShare is the part of the container's memory limit the Go
// heap may fill before the collector works harder: the rest is for the
// runtime, stacks and buffers outside the heap.
const memoryLimitShare = 0.9

// cgroupMemoryFiles hold the container's memory limit, cgroup v2 first.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// setMemoryLimit tells the Go runtime about the container's memory limit,
// unless GOMEMLIMIT does: by default the heap may grow to twice what is
// live before a collection, and the provider's live heap grows with the
// pods on the node (about 12 KiB each, the note on #18), so near the limit
// the kernel would kill what one more collection would have saved. It
// returns the limit set, 0 for none.
func setMemoryLimit() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	for _, f := range cgroupMemoryFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if limit := heapLimit(string(data)); limit > 0 {
			debug.SetMemoryLimit(limit)
			return limit
		}
		return 0
	}
	return 0
}

// heapLimit is memoryLimitShare of a cgroup memory limit file's value; 0
// for "max", an unreadable value, or cgroup v1's "no limit" (a number
// near the largest int64).
func heapLimit(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0
	}
	return int64(float64(n) * memoryLimitShare)
}
