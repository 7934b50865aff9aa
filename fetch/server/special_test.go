package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/internal/testenv"
)

// TestSpecialFilesNeverStall: a job may put a FIFO, a socket or a device
// node where its log, exit marker or deletion marker belongs. Every
// request about it is answered at once: 403 (not a plain file) for output,
// and a delete replaces the marker; none waits on it.
func TestSpecialFilesNeverStall(t *testing.T) {
	kinds := map[string]func(path string) error{
		"fifo": func(p string) error { return syscall.Mkfifo(p, 0o644) },
		"socket": func(p string) error {
			// Bound under a short name (a socket path has ~108 bytes),
			// then moved into place.
			dir, err := os.MkdirTemp("", "s")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			l, err := net.Listen("unix", filepath.Join(dir, "s"))
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
			return os.Rename(filepath.Join(dir, "s"), p)
		},
		"device": func(p string) error { return syscall.Mknod(p, syscall.S_IFCHR|0o644, 1<<8|3) }, // like /dev/null
	}
	client := &http.Client{Timeout: 30 * time.Second} // the failure mode is waiting for ever
	for kind, make := range kinds {
		for _, tt := range []struct {
			name, file, method, path string
			want                     int
		}{
			{"exit marker, info", layout.ExitFile("main", 0), "GET", "/containers/main/info", 403},
			{"exit marker, log", layout.ExitFile("main", 0), "GET", "/containers/main/log?offset=0", 403},
			{"log, read", layout.LogFile("main", 0), "GET", "/containers/main/log?offset=0", 403},
			{"log, tail", layout.LogFile("main", 0), "GET", "/containers/main/info?tail_lines=1", 403},
			{"time index, timestamped read", layout.TimesFile("main", 0), "GET", "/containers/main/log?offset=0&times=1", 403},
			{"time index, since", layout.TimesFile("main", 0), "GET", "/containers/main/info?since=2026-01-01T00:00:00Z", 403},
			{"start marker, info", layout.StartFile("main", 0), "GET", "/containers/main/info", 200}, // ignored
			{"container directory, containers", "main", "GET", "/containers?name=main", 403},
			{"container directory, latest attempt", "main", "GET", "/containers/main/info?attempt=latest", 403},
			// The job's own directory: what it put there goes, the delete
			// happens, and the marker is a plain file.
			{"deletion marker, delete", layout.DeletedMarker, "DELETE", "", 204},
		} {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				e := newEnv(t, func(c *Config) { c.Retention = time.Hour })
				e.writeLog("main", 0, "out\n", nil)
				p := filepath.Join(e.root, testPod.Dir(), tt.file)
				os.RemoveAll(p)
				if err := make(p); err != nil {
					testenv.Need(t, false, "cannot make a %s here: %v", kind, err)
				}
				req, _ := http.NewRequest(tt.method, e.http.URL+podURL(testPod)+tt.path, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s %s with a %s as %s: %v", tt.method, tt.path, kind, tt.file, err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Errorf("%s %s with a %s as %s: %d, want %d", tt.method, tt.path, kind, tt.file, resp.StatusCode, tt.want)
				}
				if fi, err := os.Lstat(p); tt.want == 204 && (err != nil || !fi.Mode().IsRegular()) {
					t.Errorf("after the delete, %s is %v (%v), want a plain file", tt.file, fi, err)
				}
			})
		}
	}
}

// TestTailIsBounded: --tail on output without newlines looks back at most
// MaxTailScan bytes, and stops when the request's context ends.
func TestTailIsBounded(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "huge.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 2 << 30 // sparse: zeros, no newline anywhere
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	reads := &countingReaderAt{f: f}
	off, err := TailOffset(context.Background(), reads, size, 1)
	if err != nil || off != size-MaxTailScan {
		t.Errorf("tail 1 of 2 GiB without newlines: offset %d, %v; want %d", off, err, size-MaxTailScan)
	}
	if reads.n > MaxTailScan+64<<10 {
		t.Errorf("read %d bytes, want at most %d", reads.n, MaxTailScan)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := TailOffset(ctx, f, size, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("a client that went away: %v, want context.Canceled", err)
	}
	// The bound never changes an answer it can give: a newline inside it.
	if _, err := f.WriteAt([]byte("\nlast line"), size-100); err != nil {
		t.Fatal(err)
	}
	if off, err := TailOffset(context.Background(), f, size, 1); err != nil || off != size-99 {
		t.Errorf("tail 1 with a newline near the end: %d %v", off, err)
	}
}

type countingReaderAt struct {
	f *os.File
	n int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.n += int64(len(p))
	return c.f.ReadAt(p, off)
}
