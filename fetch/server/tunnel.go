package server

import (
	"crypto/subtle"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// The tunnel (package tunnel): agents in jobs connect here, the provider's
// exec and port-forward sessions are joined to them.

// tunnelSession joins the provider's session to the pod's agent. The
// caller must reach the pod as for its files: its directory is opened
// (openPod checks the owner) before anything is joined.
func (s *Server) tunnelSession(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	pr, ok := s.podDir(w, r, pod)
	if !ok {
		return
	}
	pr.Close()
	s.hub.Session(w, r, pod.Dir())
}

// tunnelAgent takes an agent's connection for the pod its token names:
// the bearer must be the pod's agent token, which the provider staged
// into the pod's directory for its job alone. A pod without one (no
// exec, or its job ended and its staged files went) has no agent.
func (s *Server) tunnelAgent(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	defer func() { s.m.requests.WithLabelValues("agent", strconv.Itoa(sw.code)).Inc() }()
	pod := layout.Pod{Namespace: r.PathValue("namespace"), Name: r.PathValue("name"), UID: r.PathValue("uid")}
	if err := pod.Validate(); err != nil {
		writeError(sw, http.StatusBadRequest, err.Error())
		return
	}
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	want, err := s.agentToken(pod)
	if err != nil && !tokenAbsent(err) {
		// The file system failing is not the agent's fault: it retries.
		s.fsError(sw, "agent token", err)
		return
	}
	if err != nil || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		// One answer for a wrong token and for a pod without one: the
		// caller learns nothing about other pods.
		writeError(sw, http.StatusUnauthorized, "not this pod's agent token")
		return
	}
	owner := -1
	if pr, err := s.root.OpenRoot(pod.Dir()); err == nil {
		owner = ownerOf(pr)
		pr.Close()
	}
	if s.hub.Agent(sw, r, pod.Dir(), owner, s.userShare(s.cfg.MaxAgents, 1)) {
		sw.code = http.StatusSwitchingProtocols
	}
}

// agentToken reads the pod's agent token, a regular file only: the job
// owns the directory, and O_NONBLOCK|O_NOFOLLOW keep a FIFO or a link put
// there from holding or redirecting the open.
func (s *Server) agentToken(pod layout.Pod) (string, error) {
	pr, err := s.root.OpenRoot(pod.Dir())
	if err != nil {
		return "", err
	}
	defer pr.Close()
	f, err := pr.OpenFile(layout.Staged(layout.StagedAgentToken), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", errNotYours
	}
	b, err := io.ReadAll(io.LimitReader(f, 256))
	return strings.TrimSpace(string(b)), err
}

// tokenAbsent: the pod has no agent token an agent could match (no file,
// not a plain file, or out of reach), as opposed to a file system failing
// for now.
func tokenAbsent(err error) bool {
	for _, e := range []error{fs.ErrNotExist, fs.ErrPermission, errNotYours, errEscapes, syscall.ELOOP, syscall.ENOTDIR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
