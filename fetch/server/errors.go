package server

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"syscall"
)

// errorBody is every 4xx/5xx answer's body.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorBody{Error: reason})
}

// fsError maps a file-system error to an HTTP answer without leaking host
// paths.
func (s *Server) fsError(w http.ResponseWriter, what string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		writeError(w, http.StatusNotFound, what+" does not exist")
	case errors.Is(err, errOtherOwner):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, errNotYours):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		s.log.Error("the shared file system is full", "what", what, "err", err)
		writeError(w, http.StatusInsufficientStorage, what+": no space left on the shared file system (or the quota is used up)")
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		// Out of descriptors for now: the client backs off and retries.
		s.log.Warn("out of file descriptors", "what", what, "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, what+": the server is busy; retry later")
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENOTDIR), errors.Is(err, errEscapes):
		writeError(w, http.StatusForbidden, what+" is not a plain file inside the pod directory")
	case errors.Is(err, fs.ErrPermission):
		// The job took its own files away from the endpoint (chmod 000):
		// its answer, not a server fault.
		writeError(w, http.StatusForbidden, what+": permission denied")
	default:
		s.log.Error("file system error", "what", what, "err", err)
		writeError(w, http.StatusInternalServerError, what+": file system error")
	}
}

// errEscapes is os.Root's refusal to leave its root. The os package does
// not export it, so it is taken once from a real refusal (".." from "/")
// and compared by identity (errors.Is), not by its text.
var errEscapes = func() error {
	var pe *fs.PathError
	r, err := os.OpenRoot("/")
	if err == nil {
		_, err = r.Stat("..")
		r.Close()
	}
	if errors.As(err, &pe) && !errors.Is(pe.Err, fs.ErrNotExist) {
		return pe.Err
	}
	return errors.New("os.Root's escape error could not be taken") // never matches
}()
