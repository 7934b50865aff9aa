package main

import "testing"

func TestHeapLimit(t *testing.T) {
	for in, want := range map[string]int64{
		"536870912\n":           483183820, // 512Mi
		"max\n":                 0,
		"9223372036854771712\n": 0, // cgroup v1 without a limit
		"":                      0,
		"-1":                    0,
	} {
		if got := heapLimit(in); got != want {
			t.Errorf("heapLimit(%q) = %d, want %d", in, got, want)
		}
	}
}
