// Package tokenfile serves a secret kept in a file, re-reading it when the
// file changes: size, modification time or identity (so the atomic symlink
// swap of a Kubernetes Secret volume counts). Nothing here logs the secret.
package tokenfile

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
)

// File is a token file. The zero value is not usable; use New.
type File struct {
	path string

	mu    sync.Mutex
	token string
	stat  os.FileInfo
}

// New returns a File for path; it reads nothing yet.
func New(path string) *File { return &File{path: path} }

// Path is the file's path.
func (f *File) Path() string { return f.path }

// Get returns the token, re-reading the file if it changed since the last
// read, or always when force is set (after the peer rejected the token).
// Surrounding white space is trimmed; an empty token is an error.
func (f *File) Get(force bool) (string, error) {
	st, err := os.Stat(f.path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !force && f.stat != nil && os.SameFile(f.stat, st) &&
		st.ModTime().Equal(f.stat.ModTime()) && st.Size() == f.stat.Size() {
		return f.token, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("token file " + f.path + " is empty")
	}
	f.token, f.stat = tok, st
	return tok, nil
}

// String names the file, never the token.
func (f *File) String() string { return "token file " + f.path }
