package provider

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestExpandIsTheKubelets: on random strings of the bytes that matter
// ($, parentheses, name bytes and others), expand gives what the kubelet's
// expansion gives (kubeletExpand, written apart from it in
// script_trace_test.go), for names of every byte a kubelet allows.
func TestExpandIsTheKubelets(t *testing.T) {
	env := []envVar{{name: "A", value: "1"}, {name: "B_2", value: "two"}, {name: "a-b.c", value: "dash$(A)"}, {name: "S", file: "/staged/s"}}
	vars := map[string]string{}
	for _, e := range env {
		vars[e.name] = e.value
		if e.file != "" {
			vars[e.name] = refMark + e.name + refMark
		}
	}
	alphabet := []string{"$", "(", ")", "A", "B", "_", "2", "a", "-", "b", ".", "c", "S", " ", "x", "$(A)", "$(S)", "$$", "$(a-b.c)"}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var b strings.Builder
		for range r.IntN(24) {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		s := b.String()
		got, err := expand(s, lookup(env))
		if err != nil {
			t.Fatalf("expand(%q): %v", s, err)
		}
		if want := kubeletExpand(s, vars); got != want {
			t.Fatalf("expand(%q) = %q, the kubelet's %q", s, got, want)
		}
	}
}

// TestExpandBounded: a result past MaxExpanded is refused, whatever makes
// it long (the value, or what its references bring), and one exactly at
// the bound is not.
func TestExpandBounded(t *testing.T) {
	env := []envVar{{name: "A", value: strings.Repeat("a", 1024)}}
	for _, tt := range []struct {
		name string
		s    string
		long bool
	}{
		{"at the bound", strings.Repeat("x", MaxExpanded), false},
		{"a byte past it", strings.Repeat("x", MaxExpanded+1), true},
		{"references at the bound", strings.Repeat("$(A)", MaxExpanded/1024), false},
		{"references past it", strings.Repeat("$(A)", MaxExpanded/1024+1), true},
		{"unclosed references", strings.Repeat("$(", MaxExpanded/2+1), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := expand(tt.s, lookup(env))
			if tt.long != errors.Is(err, errTooLong) || !tt.long && len(got) > MaxExpanded {
				t.Errorf("len %d, err %v; want too long: %v", len(got), err, tt.long)
			}
		})
	}
}

// expandQuadratic is expand as it was before #28: every "$(" looked ahead
// for the next ')' (the baseline of BenchmarkExpand), without bounds.
func expandQuadratic(s string, env []envVar) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i:], ')'); end > 0 {
				name := s[i+2 : i+end]
				for _, e := range env {
					if e.name == name {
						b.WriteString(e.value)
						i += end
						goto next
					}
				}
			}
		}
		b.WriteByte('$')
	next:
	}
	return b.String()
}

// BenchmarkExpand: a hostile value ("$(" repeated, one ')' at its end) of
// 1 KiB to 1 MiB, expand against the quadratic baseline, in the same run.
// Past MaxExpanded expand refuses (at the bound, not at the end); the
// baseline at 1 MiB takes seconds: bench/translate.sh runs it once.
func BenchmarkExpand(b *testing.B) {
	env := []envVar{{name: "A", value: "1"}}
	for _, kib := range []int{1, 16, 128, 1024} {
		s := strings.Repeat("$(", kib<<9) + ")"
		b.Run(fmt.Sprintf("size=%dKiB", kib), func(b *testing.B) {
			var lin, quad time.Duration
			for range b.N {
				start := time.Now()
				expand(s, lookup(env))
				lin += time.Since(start)
				start = time.Now()
				expandQuadratic(s, env)
				quad += time.Since(start)
			}
			b.ReportMetric(float64(lin.Nanoseconds())/float64(b.N), "linear-ns/op")
			b.ReportMetric(float64(quad.Nanoseconds())/float64(b.N), "quadratic-ns/op")
			b.ReportMetric(float64(lin.Nanoseconds())/float64(b.N)/float64(len(s)), "linear-ns/byte")
		})
	}
}
