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
	return fmt.Sprintf("%d CPUs, %s memory, %d GPUs", s.CPUs, resource.NewQuantity(s.MemoryMB<<20, resource.BinarySI), s.GPUs)
}

func (s NodeSize) holds(need NodeSize) bool {
	return s.CPUs >= need.CPUs && s.MemoryMB >= need.MemoryMB && s.GPUs >= need.GPUs
}

// larger orders nodes by CPUs, then memory, then GPUs.
func (s NodeSize) larger(o NodeSize) bool {
	if s.CPUs != o.CPUs {
		return s.CPUs > o.CPUs
	}
	if s.MemoryMB != o.MemoryMB {
		return s.MemoryMB > o.MemoryMB
	}
	return s.GPUs > o.GPUs
}

func largest(sizes []NodeSize) (NodeSize, bool) {
	var big NodeSize
	for i, s := range sizes {
		if i == 0 || s.larger(big) {
			big = s
		}
	}
	return big, len(sizes) > 0
}

// largestLabels are the node labels that publish the largest node's size.
func largestLabels(sizes []NodeSize) map[string]string {
	big, ok := largest(sizes)
	if !ok {
		return nil
	}
	return map[string]string{
		LabelLargestNodeCPUs:   strconv.FormatInt(big.CPUs, 10),
		LabelLargestNodeMemory: resource.NewQuantity(big.MemoryMB<<20, resource.BinarySI).String(),
		LabelLargestNodeGPUs:   strconv.FormatInt(big.GPUs, 10),
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
	big, ok := largest(sizes)
	if !ok {
		return ""
	}
	return fmt.Sprintf("the pod needs %s on one node; no node of partition %s has that much (the largest, %s, has %s). A pod runs on one node: lower its requests",
		need, spec.Partition, big.Name, big)
}
