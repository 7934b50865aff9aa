package server

import (
	"context"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// Janitor removes pod directories whose deletion marker is older than the
// retention, every interval, until ctx ends.
func (s *Server) Janitor(ctx context.Context, interval time.Duration) {
	if s.cfg.Retention <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.Sweep(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep removes, once, the pod directories whose deletion marker is
// older than the retention at now.
func (s *Server) Sweep(now time.Time) {
	d, err := s.root.Open(".")
	if err != nil {
		s.log.Error("janitor: open root", "err", err)
		return
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		s.log.Error("janitor: list root", "err", err)
		return
	}
	for _, name := range names {
		pod, err := layout.ParseDir(name)
		if err != nil {
			continue // not ours
		}
		st, err := s.root.Lstat(pod.Dir() + "/" + layout.DeletedMarker)
		if err != nil || now.Sub(st.ModTime()) < s.cfg.Retention {
			continue
		}
		if err := s.root.RemoveAll(name); err != nil {
			s.log.Error("janitor: remove pod directory", "pod", pod.String(), "err", err)
			continue
		}
		s.log.Info("janitor: pod directory removed", "pod", pod.String())
	}
}
