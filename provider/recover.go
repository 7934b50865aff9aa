package provider

import (
	"context"
	"fmt"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Recover finds this node's jobs in Slurm, so that pods created again after
// a restart are re-attached to their jobs instead of submitted twice, and
// cancels jobs whose pods no longer exist (alive says which UIDs do).
func (p *Provider) Recover(ctx context.Context, alive func(uid string) bool) error {
	jobs, err := p.slurm.Jobs(ctx, slurmclient.JobFilter{})
	if err != nil {
		return fmt.Errorf("list Slurm jobs for recovery: %w", err)
	}
	for _, j := range ownJobs(ctx, p.cfg.NodeName, p.cfg.Tenancy, jobs) {
		ns, name, uid, _ := ParseJobComment(p.cfg.NodeName, j.Comment)
		if alive(uid) {
			p.mu.Lock()
			p.adopt[j.Comment] = j.ID
			p.mu.Unlock()
			continue
		}
		if !j.State.Terminal() {
			log.G(ctx).WithField("job", j.ID).WithField("pod", ns+"/"+name).Info("cancelling the job of a pod that is gone")
			if err := p.cancelAs(ctx, ns, j.ID); err != nil {
				log.G(ctx).WithError(err).WithField("job", j.ID).Warn("cancel orphaned job")
			}
		}
		// The pod is gone, so is its directory (its Secrets): a delete the
		// provider did not live to finish, or one it never saw.
		if ref := (layout.Pod{Namespace: ns, Name: name, UID: uid}); ref.Validate() == nil {
			if err := p.files.DeletePod(ctx, ref); err != nil {
				log.G(ctx).WithError(err).WithField("pod", ns+"/"+name).Warn("remove the directory of a pod that is gone")
			}
		}
	}
	p.mu.Lock()
	p.recovered = true
	p.mu.Unlock()
	return nil
}

// RecoverNode runs Recover for the pods the API server has on this node;
// call it before the pod controller starts. Only listing the pods is an
// error: with slurmrestd down, recovery is skipped, and each pod this
// node ran before is looked for by its job's comment when it is created
// again (create's uncertain path) or found done by its markers.
func (p *Provider) RecoverNode(ctx context.Context, kube kubernetes.Interface) error {
	pods, err := kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", p.cfg.NodeName).String()})
	if err != nil {
		return fmt.Errorf("list this node's pods: %w", err)
	}
	alive := map[string]bool{}
	for _, pod := range pods.Items {
		alive[string(pod.UID)] = true
	}
	if err := p.Recover(ctx, func(uid string) bool { return alive[uid] }); err != nil {
		log.G(ctx).WithError(err).Warn("recovery skipped")
	}
	return nil
}
