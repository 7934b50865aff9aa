// Package helmbin finds the pinned helm binary for tests: HELM, else
// .cache/bin/helm at the repository's root (hack/tools/helm.sh builds it).
package helmbin

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Path returns helm's path. Without one the test skips, or fails when
// required (CI sets HELM_REQUIRED=1 or SLURM_E2E_REQUIRED=1), so CI never
// passes by skipping.
func Path(t testing.TB, required bool) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	_, file, _, _ := runtime.Caller(0)
	h := filepath.Join(filepath.Dir(file), "..", "..", ".cache", "bin", "helm")
	if _, err := os.Stat(h); err == nil {
		return h
	}
	if required {
		t.Fatal("helm is required but missing: run hack/tools/helm.sh")
	}
	t.Skip("no helm: run hack/tools/helm.sh (or set HELM)")
	return ""
}
