package provider

import (
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// ReasonNoNodeFits: the pod needs more on one node than any node of the
// partition has. Slurm 24.11 refuses such a job and 26.05 queues it for
// ever; the provider says so before submitting, with the numbers.
const ReasonNoNodeFits = "NoNodeLargeEnough"

// NodeSize is one Slurm node's size, as one job on it may use it.
type NodeSize struct {
	Name     string
	CPUs     int64
	MemoryMB int64
	GPUs     int64
}

func (s NodeSize) String() string {
	return fmt.Sprintf("%d CPUs, %s memory, %d GPUs", s.CPUs, memory(s.MemoryMB), s.GPUs)
}

func (s NodeSize) holds(need NodeSize) bool {
	return s.CPUs >= need.CPUs && s.MemoryMB >= need.MemoryMB && s.GPUs >= need.GPUs
}

// most is, per resource, the most any one node has, and a node that has
// it (not necessarily the same node for each).
type most struct {
	cpus, mem, gpus NodeSize
}

func mostOf(sizes []NodeSize) (m most, ok bool) {
	for i, s := range sizes {
		if i == 0 || s.CPUs > m.cpus.CPUs {
			m.cpus = s
		}
		if i == 0 || s.MemoryMB > m.mem.MemoryMB {
			m.mem = s
		}
		if i == 0 || s.GPUs > m.gpus.GPUs {
			m.gpus = s
		}
	}
	return m, len(sizes) > 0
}

func memory(mb int64) string { return resource.NewQuantity(mb<<20, resource.BinarySI).String() }

// largestLabels are the node labels that publish, per resource, the most
// one node of the partition has: the most one pod can ask for.
func largestLabels(sizes []NodeSize) map[string]string {
	m, ok := mostOf(sizes)
	if !ok {
		return nil
	}
	return map[string]string{
		LabelLargestNodeCPUs:   strconv.FormatInt(m.cpus.CPUs, 10),
		LabelLargestNodeMemory: memory(m.mem.MemoryMB),
		LabelLargestNodeGPUs:   strconv.FormatInt(m.gpus.GPUs, 10),
	}
}

// noNodeFits says why a job can never start on the node's partition, or
// "" when some node holds it, or nothing is known (no sizes yet, or the
// pod chose another partition).
func (p *Provider) noNodeFits(spec slurmclient.JobSpec) string {
	if p.cfg.NodeSizes == nil || spec.Partition != p.cfg.Partition {
		return ""
	}
	sizes := p.cfg.NodeSizes()
	need := NodeSize{CPUs: max(int64(spec.CPUsPerTask), 1), MemoryMB: spec.MemoryMB, GPUs: gresGPUs(spec.Gres)}
	for _, s := range sizes {
		if s.holds(need) {
			return ""
		}
	}
	m, ok := mostOf(sizes)
	if !ok {
		return ""
	}
	return fmt.Sprintf("the pod needs %s on one node; no node of partition %s has that much (at most %d CPUs, on %s; %s memory, on %s; %d GPUs, on %s). A pod runs on one node: lower its requests",
		need, spec.Partition, m.cpus.CPUs, m.cpus.Name, memory(m.mem.MemoryMB), m.mem.Name, m.gpus.GPUs, m.gpus.Name)
}
