package provider

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// jobSpec sets resources, placement and identity.
func (t *translator) jobSpec() (slurmclient.JobSpec, error) {
	p := t.pod
	spec := slurmclient.JobSpec{
		Name:      truncate("vk-"+p.Namespace+"-"+p.Name, 200),
		Comment:   JobComment(t.cfg.NodeName, p),
		WorkDir:   t.ref.Path(t.cfg.SharedRoot, layout.WorkDir),
		Env:       []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SLURM_VK_POD=" + p.Namespace + "/" + p.Name},
		Stdout:    t.ref.Path(t.cfg.SharedRoot, layout.JobOutput),
		Partition: t.cfg.Partition,
	}
	a := p.Annotations
	al := t.cfg.Allowed
	for _, c := range []struct {
		annotation, own string
		list            []string
	}{
		{AnnotationPartition, t.cfg.Partition, al.Partitions},
		{AnnotationAccount, "", al.Accounts},
		{AnnotationQOS, "", al.QOS},
		{AnnotationReservation, "", al.Reservations},
		{AnnotationConstraint, "", al.Constraints},
	} {
		if err := allow(c.annotation, a[c.annotation], c.own, c.list); err != nil {
			return spec, err
		}
	}
	if v := a[AnnotationPartition]; v != "" {
		spec.Partition = v
	}
	spec.Account, spec.QOS, spec.Reservation, spec.Constraints = a[AnnotationAccount], a[AnnotationQOS], a[AnnotationReservation], a[AnnotationConstraint]

	// Containers run at once, init containers one by one: the job needs
	// the larger of the containers' sum and the biggest init container.
	cpu, mem, gpu := effective(p.Spec.Containers, p.Spec.InitContainers)
	if t.shape != nil {
		if err := t.shape.fit(cpu, mem, gpu); err != nil {
			return spec, err
		}
		t.shape.apply(&spec)
	} else {
		oneTask(&spec, cpu, mem, gpu)
	}
	if d := p.Spec.ActiveDeadlineSeconds; d != nil && *d > 0 {
		spec.TimeLimit = time.Duration(*d) * time.Second
	}
	if raw := a[AnnotationOptions]; raw != "" {
		var opts map[string]any
		if err := json.Unmarshal([]byte(raw), &opts); err != nil {
			return spec, invalid("InvalidOptions", "annotation %s must be a JSON object: %w", AnnotationOptions, err)
		}
		for k := range opts {
			if reservedOption(k) {
				return spec, invalid("OptionNotAllowed", "annotation %s: option %q is set by slurm-vk itself or by a node setting; use the slurm-vk.io/ annotation for it where there is one", AnnotationOptions, k)
			}
			if !contains(t.cfg.AllowedOptions, k) {
				return spec, invalid("OptionNotAllowed", "annotation %s: option %q is not allowed on this node (allowed: %s)", AnnotationOptions, k, strings.Join(t.cfg.AllowedOptions, ", "))
			}
		}
		spec.Extra = opts
	}
	return spec, nil
}

// oneTask sizes a pod without a shape: one task on one node with all of
// the pod's requests.
func oneTask(spec *slurmclient.JobSpec, cpu, mem, gpu int64) {
	if cpu > 0 {
		spec.CPUsPerTask = int(math.Ceil(float64(cpu) / 1000))
	}
	if mem > 0 {
		spec.MemoryMB = mebibytes(mem)
	}
	if gpu > 0 {
		spec.Gres = fmt.Sprintf("gpu:%d", gpu)
	}
}

// effective returns the pod's CPU (millicores), memory (bytes) and GPUs:
// requests, else limits, per container.
func effective(containers, inits []corev1.Container) (cpu, mem, gpu int64) {
	one := func(c corev1.Container) (int64, int64, int64) {
		get := func(name corev1.ResourceName) resource.Quantity {
			if q, ok := c.Resources.Requests[name]; ok {
				return q
			}
			return c.Resources.Limits[name]
		}
		g := get("nvidia.com/gpu")
		cq, mq := get(corev1.ResourceCPU), get(corev1.ResourceMemory)
		return cq.MilliValue(), mq.Value(), g.Value()
	}
	for _, c := range containers {
		a, b, g := one(c)
		cpu, mem, gpu = cpu+a, mem+b, gpu+g
	}
	for _, c := range inits {
		a, b, g := one(c)
		cpu, mem, gpu = max(cpu, a), max(mem, b), max(gpu, g)
	}
	return cpu, mem, gpu
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
