package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// TestOnlyTheJobsOwnFiles: a job hard-links a file it cannot read (a
// root-only file of the shared file system, where fs.protected_hardlinks
// is off) into its log's or marker's place; the endpoint, running as
// root, serves none of it, not even its size: 403. A single-link file of
// another user in that place is refused too.
func TestOnlyTheJobsOwnFiles(t *testing.T) {
	for _, tt := range []struct {
		name, file, path string
	}{
		{"log, read", layout.LogFile("main", 0), "/containers/main/log?offset=0"},
		{"log, info", layout.LogFile("main", 0), "/containers/main/info"},
		{"log, tail", layout.LogFile("main", 0), "/containers/main/info?tail_lines=1"},
		{"exit marker", layout.ExitFile("main", 0), "/containers/main/info"},
		{"time index", layout.TimesFile("main", 0), "/containers/main/log?offset=0&times=1"},
	} {
		t.Run("hard link/"+tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.writeLog("main", 0, "out\n", nil)
			secret := filepath.Join(e.outside, "root-only")
			if err := os.WriteFile(secret, []byte("0\nroot's secret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(e.root, testPod.Dir(), tt.file)
			os.Remove(p)
			if err := os.Link(secret, p); err != nil {
				t.Fatal(err)
			}
			status, _, b := e.do("GET", podURL(testPod)+tt.path, nil)
			body := string(b)
			if status != http.StatusForbidden || strings.Contains(body, "secret") || strings.Contains(body, "15") {
				t.Errorf("GET %s with a hard link in place: %d %q, want 403 and nothing of the file", tt.path, status, body)
			}
		})
	}
	t.Run("another user's file", func(t *testing.T) {
		testenv.NeedRoot(t, "own a file as another user")
		e := newEnv(t)
		e.writeLog("main", 0, "out\n", nil)
		p := filepath.Join(e.root, testPod.Dir(), layout.LogFile("main", 0))
		if err := os.Chown(p, 2002, 2002); err != nil {
			t.Fatal(err)
		}
		if status, _, body := e.do("GET", podURL(testPod)+"/containers/main/log?offset=0", nil); status != http.StatusForbidden {
			t.Errorf("another user's log: %d %q, want 403", status, body)
		}
	})
}

// TestNoWatchThroughALink: a job that makes its container directory a
// symbolic link (here to a directory of its own pod, which os.Root lets a
// read through; a link out of the pod is refused before any wait) has a
// follow's long-poll watch the pod directory, never the link: inotify
// would follow it, and where it points is the job's to choose.
func TestNoWatchThroughALink(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.root, testPod.Dir())
	os.MkdirAll(filepath.Join(dir, "elsewhere"), 0o755)
	os.WriteFile(filepath.Join(dir, "elsewhere", "0.log"), []byte("x\n"), 0o644)
	if err := os.Symlink("elsewhere", filepath.Join(dir, "main")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, "GET", e.http.URL+podURL(testPod)+"/containers/main/log?offset=2&wait=60s", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	var watched []string
	for deadline := time.Now().Add(30 * time.Second); len(watched) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the follow never waited")
		}
		e.srv.watch.mu.Lock()
		for d := range e.srv.watch.subs {
			watched = append(watched, d)
		}
		e.srv.watch.mu.Unlock()
	}
	cancel()
	<-done
	for _, d := range watched {
		if fi, err := os.Lstat(d); err != nil || !fi.IsDir() {
			t.Errorf("watched %s, which is not a directory (%v)", d, err)
		}
	}
}

// noNewlines is a log of size bytes without a newline, counting what is
// read of it.
type noNewlines struct {
	size int64
	read int64
}

func (n *noNewlines) ReadAt(p []byte, off int64) (int, error) {
	if off >= n.size {
		return 0, io.EOF
	}
	k := min(int64(len(p)), n.size-off)
	for i := range p[:k] {
		p[i] = 'x'
	}
	n.read += k
	return int(k), nil
}

// TestLineStartIsBounded: a line start sought in a log with no newline
// (a job that prints one endless line) looks at most MaxTailScan bytes
// ahead, not the whole log.
func TestLineStartIsBounded(t *testing.T) {
	log := &noNewlines{size: 4 * MaxTailScan}
	at, err := LineStart(context.Background(), log, 1, log.size)
	if err != nil {
		t.Fatal(err)
	}
	if at > 1+MaxTailScan || log.read > MaxTailScan+(64<<10)+1 {
		t.Errorf("LineStart read %d bytes and answered %d; want at most %d read", log.read, at, MaxTailScan)
	}
}
