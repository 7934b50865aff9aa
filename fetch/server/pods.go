package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// openPod opens the pod directory as its own root, for the request's
// caller: a client limited to some users gets errNotYours for a directory
// none of them owns, as the opened directory itself says.
func (s *Server) openPod(r *http.Request, pod layout.Pod) (*os.Root, error) {
	pr, err := s.root.OpenRoot(pod.Dir())
	if err != nil {
		return nil, err
	}
	if c, _ := r.Context().Value(callerKey{}).(*caller); c != nil && !c.all {
		if o, err := podOwner(pr); err != nil || o == nil || !c.uids[o.UID] {
			pr.Close()
			return nil, errors.Join(err, errNotYours)
		}
	}
	return pr, nil
}

// podDir opens the request's pod directory (openPod), or answers why it
// cannot; not ok: the answer is written.
func (s *Server) podDir(w http.ResponseWriter, r *http.Request, pod layout.Pod) (*os.Root, bool) {
	pr, err := s.openPod(r, pod)
	if err != nil {
		s.fsError(w, "pod directory", err)
		return nil, false
	}
	return pr, true
}

func chown(r *os.Root, name string, o *Owner) error {
	if o == nil {
		return nil
	}
	return r.Lchown(name, o.UID, o.GID)
}

// podOwner is who owns an existing pod directory, as the file system
// says: what the server stages for the pod becomes theirs.
func podOwner(pr *os.Root) (*Owner, error) {
	fi, err := pr.Lstat(".")
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, nil
	}
	return &Owner{UID: int(st.Uid), GID: int(st.Gid)}, nil
}

// newPodDir makes the pod directory with _staged and _work, 0700 and
// owner's, under a temporary name, and renames it into place; fs.ErrExist
// if the pod directory is there already.
func (s *Server) newPodDir(pod layout.Pod, owner *Owner) error {
	tmp := fmt.Sprintf(".new-%d-%s", time.Now().UnixNano(), pod.Dir())
	if err := s.root.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	err := func() error {
		for _, d := range []string{layout.StagedDir, layout.WorkDir} {
			if err := s.root.Mkdir(tmp+"/"+d, 0o700); err != nil {
				return err
			}
			if err := chown(s.root, tmp+"/"+d, owner); err != nil {
				return err
			}
		}
		if err := chown(s.root, tmp, owner); err != nil {
			return err
		}
		return s.root.Rename(tmp, pod.Dir())
	}()
	if err != nil {
		s.root.RemoveAll(tmp)
		if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return fs.ErrExist
		}
	}
	return err
}

// errOtherOwner refuses a pod directory that belongs to someone else.
var errOtherOwner = errors.New("the pod directory exists and belongs to another user")

// createPod makes the pod directory with its staging and work folders,
// owned by the pod's user and closed to everyone else (0700): the job runs
// as that user, the server as root. Idempotent; a directory that exists
// for another user is refused, not taken over.
func (s *Server) createPod(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	owner := s.cfg.Owner
	if u := r.URL.Query().Get("user"); u != "" {
		o, ok := s.cfg.Users[u]
		if !ok {
			writeError(w, http.StatusForbidden, fmt.Sprintf("user %q may not own pod directories on this endpoint (its -users list)", u))
			return
		}
		owner = &o
	}
	// Built under a temporary name and renamed into place: the directory
	// appears already closed and already its user's, and two creates
	// cannot race to own it.
	if err := s.newPodDir(pod, owner); err != nil && !errors.Is(err, fs.ErrExist) {
		s.fsError(w, "pod directory", err)
		return
	}
	pr, ok := s.podDir(w, r, pod)
	if !ok {
		return
	}
	defer pr.Close()
	want := os.Geteuid()
	if owner != nil {
		want = owner.UID
	}
	if had, err := podOwner(pr); err != nil {
		s.fsError(w, "pod directory", err)
		return
	} else if had != nil && had.UID != want {
		s.fsError(w, "pod directory", errOtherOwner)
		return
	}
	if err := pr.Chmod(".", 0o700); err != nil { // a directory made by an older server was 0755
		s.fsError(w, "pod directory", err)
		return
	}
	// A pod re-created with the same UID is not deleted any more.
	pr.Remove(layout.DeletedMarker)
	s.log.Info("pod directory ready", "pod", pod.String())
	w.WriteHeader(http.StatusNoContent)
}

// openToRemove opens the pod directory for a removal; if it is gone
// already, or cannot be opened, it has answered (204: removals are
// idempotent) and reports false.
func (s *Server) openToRemove(w http.ResponseWriter, r *http.Request, pod layout.Pod) (*os.Root, bool) {
	pr, err := s.openPod(r, pod)
	if errors.Is(err, fs.ErrNotExist) {
		w.WriteHeader(http.StatusNoContent)
		return nil, false
	}
	if err != nil {
		s.fsError(w, "pod directory", err)
		return nil, false
	}
	return pr, true
}

// unstage removes what was staged for a pod (Secrets, ConfigMaps, image
// pull credentials) once its job has ended; logs stay. Idempotent.
func (s *Server) unstage(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	pr, ok := s.openToRemove(w, r, pod)
	if !ok {
		return
	}
	defer pr.Close()
	if err := pr.RemoveAll(layout.StagedDir); err != nil {
		s.fsError(w, layout.StagedDir, err)
		return
	}
	s.hub.Drop(pod.Dir()) // its token is gone: so is its exec channel
	s.log.Info("staged files removed", "pod", pod.String())
	w.WriteHeader(http.StatusNoContent)
}

// deletePod removes the pod directory now, or, when a retention is
// configured, removes its staged files and scratch space (Secrets and
// emptyDir data go with the pod, as on a kubelet) and marks the rest, the
// output, for the janitor. Idempotent.
func (s *Server) deletePod(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	if s.cfg.Retention <= 0 {
		pr, ok := s.openToRemove(w, r, pod) // the caller may reach it
		if !ok {
			return
		}
		pr.Close()
		s.hub.Drop(pod.Dir())
		if err := s.root.RemoveAll(pod.Dir()); err != nil {
			s.fsError(w, "pod directory", err)
			return
		}
		s.log.Info("pod directory removed", "pod", pod.String())
		w.WriteHeader(http.StatusNoContent)
		return
	}
	pr, ok := s.openToRemove(w, r, pod)
	if !ok {
		return
	}
	defer pr.Close()
	s.hub.Drop(pod.Dir())
	for _, d := range []string{layout.StagedDir, layout.WorkDir} {
		if err := pr.RemoveAll(d); err != nil {
			s.fsError(w, d, err)
			return
		}
	}
	// The job owns the directory, so whatever it left where the marker
	// belongs (a symbolic link, a FIFO, a directory) is removed and the
	// marker made anew: a pod can never make itself undeletable.
	if fi, err := pr.Lstat(layout.DeletedMarker); err == nil && !fi.Mode().IsRegular() {
		if err := pr.RemoveAll(layout.DeletedMarker); err != nil {
			s.fsError(w, "deletion marker", err)
			return
		}
	}
	// O_NONBLOCK: should a FIFO appear meanwhile, the open fails (ENXIO)
	// instead of holding the request until a reader comes.
	f, err := pr.OpenFile(layout.DeletedMarker, os.O_CREATE|os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
	if err == nil {
		if fi, serr := f.Stat(); serr != nil || !fi.Mode().IsRegular() {
			err = errors.Join(serr, errNotRegular)
		}
		f.Close()
	}
	if errors.Is(err, syscall.ENXIO) {
		err = errNotRegular
	}
	if err != nil {
		s.fsError(w, "deletion marker", err)
		return
	}
	s.log.Info("pod directory marked for removal", "pod", pod.String(), "retention", s.cfg.Retention)
	w.WriteHeader(http.StatusNoContent)
}
