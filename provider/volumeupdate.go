package provider

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"strings"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// A pod's configMap, secret, downwardAPI and projected volumes follow
// their sources while it is pending or running, as on a kubelet: the sync
// loop translates the pod again every volumeRefresh, stages the volume
// files that changed (each replaced by a rename, which the containers'
// bind of the volume's directory shows) and removes the ones that are
// gone. A subPath mount does not follow, as on a kubelet. When the pod
// does not translate now (a source deleted, a key gone from a required
// reference), its files stay as they were.

// volumeRefresh is how often a pod's volumes are compared with their
// sources (a kubelet's is its sync period, about a minute, plus its
// cache's TTL).
const volumeRefresh = 10 * time.Second

// digest is a staged file's content and mode.
type digest [sha256.Size]byte

func digestOf(f StagedFile) digest {
	h := sha256.New()
	binary.Write(h, binary.BigEndian, f.Mode)
	h.Write(f.Data)
	return digest(h.Sum(nil))
}

// volumeFiles are the staged files of the pod's volumes, by path.
func volumeFiles(staged []StagedFile) map[string]StagedFile {
	out := map[string]StagedFile{}
	for _, f := range staged {
		if strings.HasPrefix(f.Path, layout.StagedVolume("")+"/") {
			out[f.Path] = f
		}
	}
	return out
}

func digests(files map[string]StagedFile) map[string]digest {
	out := make(map[string]digest, len(files))
	for p, f := range files {
		out[p] = digestOf(f)
	}
	return out
}

// followsSources tells whether the pod has a volume whose content can
// change under it.
func followsSources(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if fromSources(v) {
			return true
		}
	}
	return false
}

// refreshVolumes brings the volumes of the pods due for it up to date; a
// pod whose files could not all be written is tried again next time.
func (p *Provider) refreshVolumes(ctx context.Context) {
	now := p.cfg.Now()
	type due struct {
		st  *podState
		pod *corev1.Pod
		had map[string]digest
	}
	var list []due
	p.mu.Lock()
	for _, st := range p.pods {
		if st.job == 0 || st.final || !followsSources(st.pod) || now.Sub(st.volumesAt) < volumeRefresh {
			continue
		}
		st.volumesAt = now
		list = append(list, due{st, st.pod.DeepCopy(), st.volumes})
	}
	p.mu.Unlock()
	for _, d := range list {
		plan, err := Translate(d.pod, p.translateConfig(), p.look)
		if err != nil {
			log.G(ctx).WithField("pod", key(d.pod.Namespace, d.pod.Name)).WithError(err).Debug("volumes not refreshed: the pod does not translate now; its files stay")
			continue
		}
		files := volumeFiles(plan.Staged)
		cur := digests(files)
		ref := PodRef(d.pod)
		var failed error
		for path, f := range files {
			if old, ok := d.had[path]; ok && old == cur[path] {
				continue
			}
			if failed = p.files.Stage(ctx, ref, f.Path, f.Data, os.FileMode(f.Mode)); failed != nil {
				break
			}
		}
		for path := range d.had {
			if _, keep := files[path]; !keep && failed == nil {
				failed = p.files.UnstageFile(ctx, ref, path)
			}
		}
		if failed != nil {
			log.G(ctx).WithField("pod", key(d.pod.Namespace, d.pod.Name)).WithError(failed).Warn("volume update not staged; trying again")
			p.mu.Lock()
			d.st.volumesAt = time.Time{}
			p.mu.Unlock()
			continue
		}
		p.mu.Lock()
		d.st.volumes = cur
		p.mu.Unlock()
	}
}
