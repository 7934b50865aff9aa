package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func events(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

func TestReport(t *testing.T) {
	allowList := filepath.Join(t.TempDir(), "skips.txt")
	if err := os.WriteFile(allowList, []byte(`# comment
lab-* example.com/p TestBench a measurement: bench/x.sh runs it
unit  example.com/p TestRoot/sub.* needs root
`), 0o644); err != nil {
		t.Fatal(err)
	}
	allow, err := readAllow(allowList)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, lane, in string
		ok             bool
		want           []string // in the output
	}{
		{"all pass", "unit", events(
			`{"Action":"run","Package":"example.com/p","Test":"TestA"}`,
			`{"Action":"output","Package":"example.com/p","Test":"TestA","Output":"hidden\n"}`,
			`{"Action":"pass","Package":"example.com/p","Test":"TestA"}`,
			`{"Action":"pass","Package":"example.com/p"}`,
		), true, []string{"lane unit: 1 passed, 0 failed, 0 skipped", "ok  \texample.com/p"}},
		{"a skip not on the list fails the lane and shows why", "unit", events(
			`{"Action":"output","Package":"example.com/p","Test":"TestB","Output":"    x_test.go:1: no lab\n"}`,
			`{"Action":"skip","Package":"example.com/p","Test":"TestB"}`,
			`{"Action":"pass","Package":"example.com/p","Test":"TestA"}`,
		), false, []string{"no lab", "does not allow", "example.com/p TestB"}},
		{"a skip on the list, in its lane", "lab-sid", events(
			`{"Action":"skip","Package":"example.com/p","Test":"TestBench"}`,
			`{"Action":"pass","Package":"example.com/p","Test":"TestA"}`,
		), true, []string{"skipped, as allowed: example.com/p TestBench (a measurement: bench/x.sh runs it)"}},
		{"the same skip in another lane", "unit", events(
			`{"Action":"skip","Package":"example.com/p","Test":"TestBench"}`,
			`{"Action":"pass","Package":"example.com/p","Test":"TestA"}`,
		), false, []string{"does not allow"}},
		{"the test pattern is anchored", "unit", events(
			`{"Action":"skip","Package":"example.com/p","Test":"TestRootless/sub1"}`,
			`{"Action":"pass","Package":"example.com/p","Test":"TestA"}`,
		), false, []string{"does not allow"}},
		{"a failure prints the test's output", "unit", events(
			`{"Action":"output","Package":"example.com/p","Test":"TestC","Output":"    boom\n"}`,
			`{"Action":"fail","Package":"example.com/p","Test":"TestC"}`,
			`{"Action":"output","Package":"example.com/p","Output":"FAIL\n"}`,
			`{"Action":"fail","Package":"example.com/p"}`,
		), false, []string{"boom", "failed: example.com/p TestC", "FAIL\texample.com/p"}},
		{"a package that fails alone (a panic, a build error)", "unit", events(
			`{"Action":"pass","Package":"example.com/p","Test":"TestA"}`,
			`{"Action":"output","Package":"example.com/q","Output":"panic: x\n"}`,
			`{"Action":"fail","Package":"example.com/q"}`,
		), false, []string{"panic: x", "package failed: example.com/q"}},
		{"a lane that ran nothing", "unit", events(
			`{"Action":"skip","Package":"example.com/p"}`,
		), false, []string{"ran no test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			r := newReport(tt.lane, append([]allowed(nil), allow...), &out, false)
			defer func() {
				// Verbose or not, the verdict is the same.
				v := newReport(tt.lane, append([]allowed(nil), allow...), &strings.Builder{}, true)
				v.read(strings.NewReader(tt.in))
				if ok := v.finish(); ok != tt.ok {
					t.Errorf("verbose: ok = %v, want %v", ok, tt.ok)
				}
			}()
			if err := r.read(strings.NewReader(tt.in)); err != nil {
				t.Fatal(err)
			}
			if ok := r.finish(); ok != tt.ok {
				t.Errorf("ok = %v, want %v\n%s", ok, tt.ok, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), "hidden") {
				t.Errorf("a passing test's output was printed:\n%s", out.String())
			}
		})
	}
}

func TestAllowListNeedsAReason(t *testing.T) {
	f := filepath.Join(t.TempDir(), "skips.txt")
	os.WriteFile(f, []byte("unit example.com/p TestA\n"), 0o644)
	if _, err := readAllow(f); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Fatalf("an entry without a reason: %v", err)
	}
}

func TestSummary(t *testing.T) {
	var r strings.Builder
	rec := filepath.Join(t.TempDir(), "rec")
	a := newReport("unit", nil, &r, false)
	a.read(strings.NewReader(`{"Action":"pass","Package":"p","Test":"TestA"}` + "\n"))
	a.finish()
	if err := a.appendRecord(rec); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := printSummary(&out, rec); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "unit") || !strings.Contains(out.String(), "ok") {
		t.Fatalf("%s", out.String())
	}
}
