package tokenfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGet: the token is trimmed; a rewritten file, a Kubernetes-style
// symlink swap and a forced read all give the new token; an unchanged
// file is not read again; an empty or missing file is an error that
// names the file and never a token.
func TestGet(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	os.WriteFile(path, []byte("  first\n"), 0o600)
	f := New(path)
	if tok, err := f.Get(false); err != nil || tok != "first" {
		t.Fatalf("Get = %q, %v", tok, err)
	}

	// Rewritten with another size: re-read.
	os.WriteFile(path, []byte("second-token\n"), 0o600)
	if tok, _ := f.Get(false); tok != "second-token" {
		t.Errorf("after a rewrite: %q", tok)
	}

	// Same size and time as before, but another file behind the name (the
	// atomic swap of a Secret volume's ..data link): re-read.
	mtime := time.Now().Add(-time.Hour)
	os.Chtimes(path, mtime, mtime)
	f.Get(true)
	swap := filepath.Join(dir, "token.new")
	os.WriteFile(swap, []byte("thirdtoken12\n"), 0o600) // same length as second-token
	os.Chtimes(swap, mtime, mtime)
	if err := os.Rename(swap, path); err != nil {
		t.Fatal(err)
	}
	if tok, _ := f.Get(false); tok != "thirdtoken12" {
		t.Errorf("after a swap of the file behind the name: %q", tok)
	}

	// Unchanged: the cached token, even if the content were to differ
	// without any visible change (it cannot, but the read is skipped).
	f.mu.Lock()
	f.token = "cached"
	f.mu.Unlock()
	if tok, _ := f.Get(false); tok != "cached" {
		t.Errorf("an unchanged file was read again: %q", tok)
	}
	if tok, _ := f.Get(true); tok != "thirdtoken12" {
		t.Errorf("a forced read: %q", tok)
	}

	os.WriteFile(path, []byte(" \n"), 0o600)
	if _, err := f.Get(false); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("empty file: %v, want an error naming the file", err)
	}
	os.Remove(path)
	if _, err := f.Get(false); err == nil || strings.Contains(err.Error(), "third") {
		t.Errorf("missing file: %v", err)
	}
	if s := f.String(); strings.Contains(s, "third") || !strings.Contains(s, path) {
		t.Errorf("String() = %q", s)
	}
}
