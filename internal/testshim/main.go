// Command testshim traces the job scripts the provider writes, for its
// tests (provider/script_trace_test.go): linked under the name of every
// program in /usr/bin, /bin, /usr/sbin and /sbin, in a directory that is
// a script's whole PATH, it records each call (name and arguments, one
// JSON line appended to $SVK_SHIM_TRACE), then runs the real program.
// Under the name svk-payload it is the pod's own command: it records its
// argv, working directory and the pod's environment (H_* variables) and
// exits 0. Under the names of the container runtimes' programs it is a
// stub of that runtime (stubs.go).
//
// It is a binary of its own, not the test binary, so that a script's
// dozens of program starts cost a small static program each, whatever
// the tests are built with (-race makes a test binary slow to start).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const (
	shimTrace   = "SVK_SHIM_TRACE" // file the calls are appended to
	payloadName = "svk-payload"
)

var realDirs = []string{"/usr/bin", "/bin", "/usr/sbin", "/sbin"}

// call is one recorded program start.
type call struct {
	Name string            `json:"name"`
	Args []string          `json:"args"`
	Argv []string          `json:"argv"` // all of them, where Args keeps only a runtime's verb
	Dir  string            `json:"dir,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
}

func main() {
	name := filepath.Base(os.Args[0])
	c := call{Name: name, Args: os.Args[1:], Argv: os.Args[1:]}
	stub, isStub := stubRuntimes[name]
	if isStub && len(c.Args) > 0 && (name == "ch-run" && c.Args[0] != "--version" || c.Args[0] == "run" || c.Args[0] == "create" || c.Args[0] == "exec" || c.Args[0] == "start") {
		// The rest carries the pod's strings: the payload records them.
		c.Args = c.Args[:1]
		if name == "ch-run" {
			c.Args = nil
		}
	}
	if name == payloadName {
		c.Dir, _ = os.Getwd()
		c.Env = map[string]string{}
		for _, kv := range os.Environ() {
			if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "H_") || strings.HasPrefix(k, "H.") {
				c.Env[k] = v
			}
		}
	}
	line, _ := json.Marshal(c)
	// One write with O_APPEND: calls from concurrent processes do not mix.
	if f, err := os.OpenFile(os.Getenv(shimTrace), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		f.Write(append(line, '\n'))
		f.Close()
	}
	if name == payloadName {
		os.Exit(0)
	}
	if isStub {
		stub(os.Args[1:])
		os.Exit(0)
	}
	for _, d := range realDirs {
		if p := filepath.Join(d, name); syscall.Access(p, 1) == nil {
			syscall.Exec(p, append([]string{name}, os.Args[1:]...), os.Environ())
		}
	}
	fmt.Fprintf(os.Stderr, "shim: %s: not found\n", name)
	os.Exit(127)
}
