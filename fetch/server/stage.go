package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// stage writes one file under the pod's staging directory atomically: a
// temporary file in the same directory, fsync, then rename.
func (s *Server) stage(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	rel := r.PathValue("path")
	if err := layout.ValidateStaged(rel); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if r.URL.Query().Get("dir") == "1" {
		s.stageDir(w, r, pod, rel)
		return
	}
	mode := os.FileMode(0o644)
	if m := r.URL.Query().Get("mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v&^0o777 != 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("mode %q must be octal permission bits (e.g. 0600)", m))
			return
		}
		mode = os.FileMode(v)
	}
	// The body must arrive within a minute: a trickle cannot hold the
	// handler (16 MiB a minute is 270 KiB/s).
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Minute))
	if r.ContentLength > s.cfg.MaxUpload {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("file larger than %d bytes", s.cfg.MaxUpload))
		return
	}
	pr, ok := s.podDir(w, r, pod)
	if !ok {
		return
	}
	defer pr.Close()
	target := layout.Staged(rel)
	dir := target[:strings.LastIndexByte(target, '/')]
	owner, err := podOwner(pr)
	if err != nil {
		s.fsError(w, "pod directory", err)
		return
	}
	if err := pr.MkdirAll(dir, 0o755); err != nil {
		s.fsError(w, "staging directory", err)
		return
	}
	tmp := fmt.Sprintf("%s/.tmp-%d-%s", dir, time.Now().UnixNano(), target[len(dir)+1:])
	f, err := pr.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, mode)
	if err != nil {
		s.fsError(w, "staged file", err)
		return
	}
	n, err := io.Copy(f, http.MaxBytesReader(w, r.Body, s.cfg.MaxUpload))
	if err == nil {
		err = f.Sync()
	}
	// On the open file, not by name: the job may play with names in its
	// own directory, never with what this descriptor is.
	if err == nil {
		err = f.Chmod(mode) // the umask may have narrowed it
	}
	if err == nil && owner != nil {
		err = f.Chown(owner.UID, owner.GID)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = pr.Rename(tmp, target)
	}
	if err != nil {
		pr.Remove(tmp)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("file larger than %d bytes", s.cfg.MaxUpload))
			return
		}
		s.fsError(w, "staged file", err)
		return
	}
	s.m.staged.Add(float64(n))
	s.log.Info("file staged", "pod", pod.String(), "path", rel, "bytes", n, "mode", fmt.Sprintf("%04o", mode))
	w.WriteHeader(http.StatusNoContent)
}

// unstageFile removes one staged file, as a volume's key goes when its
// ConfigMap or Secret loses it; a missing file is no error (idempotent).
// Only the name goes (os.Root: a link the job left there is removed, not
// followed).
func (s *Server) unstageFile(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	rel := r.PathValue("path")
	if err := layout.ValidateStaged(rel); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pr, ok := s.podDir(w, r, pod)
	if !ok {
		return
	}
	defer pr.Close()
	if err := pr.Remove(layout.Staged(rel)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.fsError(w, "staged file", err)
		return
	}
	s.log.Info("staged file removed", "pod", pod.String(), "path", rel)
	w.WriteHeader(http.StatusNoContent)
}

// stageDir makes a staged directory (and its parents), empty until files
// come: a volume whose optional source does not exist yet is an empty
// directory, as on a kubelet, which containers bind (idempotent).
func (s *Server) stageDir(w http.ResponseWriter, r *http.Request, pod layout.Pod, rel string) {
	pr, ok := s.podDir(w, r, pod)
	if !ok {
		return
	}
	defer pr.Close()
	if err := pr.MkdirAll(layout.Staged(rel), 0o755); err != nil {
		s.fsError(w, "staging directory", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
