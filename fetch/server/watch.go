package server

import (
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/fsnotify/fsnotify"
)

// watcher fans inotify events out to the long-polls waiting on a
// directory. One watch per directory, shared and reference-counted; a
// waiter's channel holds one pending wake-up, so bursts of writes coalesce.
// Failing to watch (limits, a file system without inotify) is not an error:
// the waiter's poll still runs.
type watcher struct {
	log *slog.Logger
	w   *fsnotify.Watcher

	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
	done chan struct{}
}

func newWatcher(log *slog.Logger) (*watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("no inotify: long-polls rely on polling alone", "err", err)
		fw = nil
	}
	w := &watcher{log: log, w: fw, subs: map[string]map[chan struct{}]struct{}{}, done: make(chan struct{})}
	if fw != nil {
		go w.loop()
	} else {
		close(w.done)
	}
	return w, nil
}

func (w *watcher) loop() {
	defer close(w.done)
	for {
		select {
		case ev, ok := <-w.w.Events:
			if !ok {
				return
			}
			w.wake(filepath.Dir(ev.Name))
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			// Overflow: wake everyone, their next look sees the truth.
			w.log.Warn("inotify error; waking all long-polls", "err", err)
			w.mu.Lock()
			for dir := range w.subs {
				w.wakeLocked(dir)
			}
			w.mu.Unlock()
		}
	}
}

func (w *watcher) wake(dir string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wakeLocked(dir)
}

func (w *watcher) wakeLocked(dir string) {
	for ch := range w.subs[dir] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// subscribe returns a channel that receives a value after changes in dir,
// and a function to stop.
func (w *watcher) subscribe(dir string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	set, ok := w.subs[dir]
	if !ok {
		set = map[chan struct{}]struct{}{}
		w.subs[dir] = set
		if w.w != nil {
			if err := w.w.Add(dir); err != nil {
				w.log.Debug("cannot watch; polling", "dir", dir, "err", err)
			}
		}
	}
	set[ch] = struct{}{}
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(set, ch)
		if len(set) == 0 {
			delete(w.subs, dir)
			if w.w != nil {
				w.w.Remove(dir)
			}
		}
	}
}

func (w *watcher) close() {
	if w.w != nil {
		w.w.Close()
	}
	<-w.done
}
