// Command testreport reads `go test -json` for one lane of `make test`,
// prints it as go test would, and fails the lane on any skipped test that
// the checked-in allow-list does not name: a skipped test is a test that
// did not run, and CI must say so. Each lane appends its counts to a
// record file; -summary prints the table of every lane at the end.
//
//	go test -json ./... | testreport -lane unit -allow hack/test-skips.txt -record FILE [-v]
//	testreport -summary FILE
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strings"
	"time"
)

func main() {
	lane := flag.String("lane", "", "the lane's name (matched against the allow-list's lane globs)")
	allowFile := flag.String("allow", "", "the allow-list of skips: lines of LANE-GLOB PACKAGE TEST-REGEXP REASON")
	record := flag.String("record", "", "append the lane's counts to this file")
	verbose := flag.Bool("v", false, "print every test's output as it comes (else only failed and skipped tests')")
	tests := flag.Bool("tests", false, "print a line for each top-level test's result and time")
	summary := flag.String("summary", "", "print the table of the lanes recorded in this file and exit")
	flag.Parse()
	if *summary != "" {
		if err := printSummary(os.Stdout, *summary); err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			os.Exit(1)
		}
		return
	}
	if *lane == "" {
		fmt.Fprintln(os.Stderr, "testreport: -lane is required")
		os.Exit(2)
	}
	var allow []allowed
	if *allowFile != "" {
		var err error
		if allow, err = readAllow(*allowFile); err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			os.Exit(2)
		}
	}
	r := newReport(*lane, allow, os.Stdout, *verbose)
	r.tests = *tests
	if err := r.read(os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	}
	ok := r.finish()
	if *record != "" {
		if err := r.appendRecord(*record); err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			os.Exit(1)
		}
	}
	if !ok {
		os.Exit(1)
	}
}

// event is one line of test2json's output.
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// allowed is one allow-list entry: a skip that is expected, and why.
type allowed struct {
	lane, pkg string
	test      *regexp.Regexp
	reason    string
	line      int
	used      bool
}

func readAllow(file string) ([]allowed, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []allowed
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 4 {
			return nil, fmt.Errorf("%s:%d: want LANE-GLOB PACKAGE TEST-REGEXP REASON (a reason is required)", file, n)
		}
		if _, err := path.Match(fields[0], ""); err != nil {
			return nil, fmt.Errorf("%s:%d: lane glob: %w", file, n, err)
		}
		re, err := regexp.Compile("^(?:" + fields[2] + ")$")
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n, err)
		}
		reason := strings.Join(fields[3:], " ")
		out = append(out, allowed{lane: fields[0], pkg: fields[1], test: re, reason: reason, line: n})
	}
	return out, sc.Err()
}

type key struct{ pkg, test string }

type report struct {
	lane    string
	allow   []allowed
	out     io.Writer
	verbose bool
	tests   bool // a line per top-level test
	began   time.Time

	output map[key]*strings.Builder // held back until the test ends
	// counts over every test and subtest
	passed, failed, skipped int
	top                     int // top-level tests that ran
	badSkips, failures      []string
	allowedSkips            []string
	pkgFailed               []string
	packages                int
}

func newReport(lane string, allow []allowed, out io.Writer, verbose bool) *report {
	return &report{lane: lane, allow: allow, out: out, verbose: verbose, began: time.Now(), output: map[key]*strings.Builder{}}
}

func (r *report) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not an event (go's own messages): as it is.
			fmt.Fprintf(r.out, "%s\n", line)
			continue
		}
		r.event(e)
	}
	return sc.Err()
}

func (r *report) event(e event) {
	k := key{e.Package, e.Test}
	switch e.Action {
	case "output", "build-output":
		if r.verbose {
			io.WriteString(r.out, e.Output)
			return
		}
		b := r.output[k]
		if b == nil {
			b = &strings.Builder{}
			r.output[k] = b
		}
		b.WriteString(e.Output)
	case "pass", "fail", "skip":
		if e.Test == "" {
			r.packageDone(e)
			return
		}
		held := r.output[k]
		delete(r.output, k)
		name := e.Package + " " + e.Test
		switch e.Action {
		case "pass":
			r.passed++
		case "fail":
			r.failed++
			r.failures = append(r.failures, name)
			if held != nil {
				io.WriteString(r.out, held.String())
			}
		case "skip":
			r.skipped++
			if a := r.allowedSkip(e.Package, e.Test); a != nil {
				r.allowedSkips = append(r.allowedSkips, fmt.Sprintf("%s (%s)", name, a.reason))
			} else {
				r.badSkips = append(r.badSkips, name)
				if held != nil && !r.verbose {
					io.WriteString(r.out, held.String())
				}
			}
		}
		if !strings.Contains(e.Test, "/") {
			if e.Action != "skip" {
				r.top++
			}
			if r.tests && !r.verbose {
				fmt.Fprintf(r.out, "--- %s: %s (%.2fs)\n", strings.ToUpper(e.Action), e.Test, e.Elapsed)
			}
		}
	}
}

// packageDone prints a package's line, as go test does, and its held
// output when it failed (a panic, a timeout, a build error).
func (r *report) packageDone(e event) {
	r.packages++
	k := key{e.Package, ""}
	held := r.output[k]
	delete(r.output, k)
	if e.Action == "fail" {
		r.pkgFailed = append(r.pkgFailed, e.Package)
	}
	if r.verbose {
		return // its lines were printed as they came
	}
	switch e.Action {
	case "fail":
		if held != nil {
			io.WriteString(r.out, held.String())
		}
		fmt.Fprintf(r.out, "FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
	case "skip":
		fmt.Fprintf(r.out, "?   \t%s\t[no test files]\n", e.Package)
	default:
		fmt.Fprintf(r.out, "ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
	}
}

func (r *report) allowedSkip(pkg, test string) *allowed {
	for i := range r.allow {
		a := &r.allow[i]
		if m, _ := path.Match(a.lane, r.lane); m && (a.pkg == pkg || a.pkg == "*") && a.test.MatchString(test) {
			a.used = true
			return a
		}
	}
	return nil
}

// finish prints the lane's verdict; false fails the lane.
func (r *report) finish() bool {
	ok := true
	fmt.Fprintf(r.out, "\n--- lane %s: %d passed, %d failed, %d skipped (%d allowed) in %d top-level tests, %s\n",
		r.lane, r.passed, r.failed, r.skipped, len(r.allowedSkips), r.top, time.Since(r.began).Round(time.Second))
	for _, s := range r.allowedSkips {
		fmt.Fprintf(r.out, "    skipped, as allowed: %s\n", s)
	}
	if len(r.badSkips) > 0 {
		ok = false
		fmt.Fprintf(r.out, "FAIL: %d tests skipped that hack/test-skips.txt does not allow (a skipped test did not run):\n", len(r.badSkips))
		for _, s := range r.badSkips {
			fmt.Fprintf(r.out, "    %s\n", s)
		}
	}
	if len(r.failures) > 0 || len(r.pkgFailed) > 0 {
		ok = false
		for _, s := range r.failures {
			fmt.Fprintf(r.out, "    failed: %s\n", s)
		}
		for _, s := range r.pkgFailed {
			fmt.Fprintf(r.out, "    package failed: %s\n", s)
		}
	}
	if r.passed+r.failed == 0 {
		ok = false
		fmt.Fprintf(r.out, "FAIL: lane %s ran no test\n", r.lane)
	}
	return ok
}

func (r *report) appendRecord(file string) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	verdict := "ok"
	if r.failed > 0 || len(r.pkgFailed) > 0 || len(r.badSkips) > 0 || r.passed == 0 {
		verdict = "FAIL"
	}
	_, err = fmt.Fprintf(f, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", r.lane, r.top, r.passed, r.failed, r.skipped,
		len(r.allowedSkips), time.Since(r.began).Round(time.Second), verdict)
	return err
}

func printSummary(w io.Writer, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%-14s %6s %8s %7s %8s %8s %9s  %s\n", "lane", "tests", "passed", "failed", "skipped", "allowed", "time", "")
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 8 {
			continue
		}
		fmt.Fprintf(w, "%-14s %6s %8s %7s %8s %8s %9s  %s\n", f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7])
	}
	return nil
}
