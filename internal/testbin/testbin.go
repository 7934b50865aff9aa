// Package testbin hands tests the project's binaries, built once per run.
//
// `make test` builds every command (and internal/testshim) into one
// directory before the lanes start and names it in SLURM_VK_TEST_BIN, so no test spends its time in
// `go build`. Without it (go test by hand) a binary is built on first use
// into .cache/test-bin at the module's root, which go build keeps
// incremental; CGO_ENABLED=0 in both cases, as the binaries run inside
// the lab's root file system and in jobs.
package testbin

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Env names the directory of prebuilt binaries.
const Env = "SLURM_VK_TEST_BIN"

var (
	mu    sync.Mutex
	built = map[string]string{}
)

// packages are the binaries built from elsewhere than ./cmd/<name>.
var packages = map[string]string{"testshim": "internal/testshim"}

// Path returns the binary of ./cmd/<name> (or the test-only command of
// that name: internal/testshim), building it if no prebuilt one is there.
func Path(t testing.TB, name string) string {
	t.Helper()
	p, err := path(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func path(name string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[name]; ok {
		return p, nil
	}
	if dir := os.Getenv(Env); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w (hack/test.sh builds every command there)", Env, dir, err)
		}
		built[name] = p
		return p, nil
	}
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	dir := filepath.Join(filepath.Dir(strings.TrimSpace(string(root))), ".cache", "test-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Under a temporary name, then renamed: test binaries of several
	// packages may build the same command at once.
	tmp, err := os.CreateTemp(dir, name+".*")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	pkg := packages[name]
	if pkg == "" {
		pkg = "cmd/" + name
	}
	cmd := exec.Command("go", "build", "-o", tmp.Name(), "github.com/slurmkube/slurm-vk/"+pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", name, err, out)
	}
	p := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", err
	}
	built[name] = p
	return p, nil
}

// Copy puts a copy of the binary at dst (mode 0755): where a job must
// find it, on the shared file system.
func Copy(t testing.TB, name, dst string) {
	t.Helper()
	src, err := os.Open(Path(t, name))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
