// Package testenv decides what a test does when the machine lacks what it
// needs (root, a capability, a tool): skip it on a developer's machine,
// fail it under CI (CI set, as .ci/run sets it), where every test must run.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// CI reports whether the tests run under CI.
func CI() bool { return os.Getenv("CI") != "" }

// Need skips the test, or fails it under CI, unless ok. why says what is
// missing.
func Need(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	why := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s (under CI every test runs: a test that cannot run here fails)", why)
	}
	t.Skip(why)
}

// NeedRoot is Need for tests that must run as root.
func NeedRoot(t testing.TB, what string) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "needs root to %s", what)
}
