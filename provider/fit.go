package provider

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

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

// noNodeFits says why a job can never run on the node's partition, or ""
// when it can, or nothing is known (no sizes yet, or the pod chose another
// partition). A job of one task needs one node that holds it all; a job
// of tasks (a shape) needs enough nodes that hold their share. Only what
// can never run is refused: a node that is down may come back.
func (p *Provider) noNodeFits(spec slurmclient.JobSpec) string {
	if p.cfg.NodeSizes == nil || spec.Partition != p.cfg.Partition {
		return ""
	}
	sizes := p.cfg.NodeSizes()
	if len(sizes) == 0 {
		return ""
	}
	j := jobNeedsOf(spec)
	if j.nodes == 1 && j.tasks == 1 {
		return oneNodeFits(j.perNode(1), spec.Partition, sizes)
	}
	usable, held := j.place(sizes)
	if usable >= j.nodes && held >= j.tasks {
		return ""
	}
	return fmt.Sprintf("the job needs %d tasks of %s each on %d nodes or more (each node at least %d tasks: %s); partition %s has %d nodes, %d of them large enough, which hold %d of its tasks (%s)",
		j.tasks, j.task, j.nodes, j.minPerNode, j.perNode(int64(j.minPerNode)), spec.Partition, len(sizes), usable, held, list(sizes))
}

// oneNodeFits is noNodeFits for a job of one task.
func oneNodeFits(need NodeSize, partition string, sizes []NodeSize) string {
	for _, s := range sizes {
		if s.holds(need) {
			return ""
		}
	}
	m, _ := mostOf(sizes)
	return fmt.Sprintf("the pod needs %s on one node; no node of partition %s has that much (at most %d CPUs, on %s; %s memory, on %s; %d GPUs, on %s). A pod runs on one node unless it has a job shape: lower its requests, or spread it over nodes with the annotation %s",
		need, partition, m.cpus.CPUs, m.cpus.Name, memory(m.mem.MemoryMB), m.mem.Name, m.gpus.GPUs, m.gpus.Name, AnnotationNodes)
}

// jobNeeds is a job's demand as its description gives it.
type jobNeeds struct {
	task       NodeSize // each task: CPUs, memory per CPU times its CPUs, GPUs per task
	node       NodeSize // each node besides its tasks: memory, GPUs per node
	nodes      int      // at least
	maxNodes   int      // at most; 0: no limit
	tasks      int      // in all
	minPerNode int      // tasks on each node, at least
	maxPerNode int      // 0: no limit
}

func jobNeedsOf(spec slurmclient.JobSpec) jobNeeds {
	cpt := max(int64(spec.CPUsPerTask), 1)
	j := jobNeeds{
		task:       NodeSize{CPUs: cpt, MemoryMB: spec.MemoryPerCPUMB * cpt, GPUs: gresGPUs(spec.GresPerTask)},
		node:       NodeSize{MemoryMB: spec.MemoryMB, GPUs: gresGPUs(spec.Gres)},
		nodes:      max(spec.MinNodes, 1),
		maxNodes:   max(spec.MaxNodes, spec.MinNodes),
		minPerNode: max(spec.TasksPerNode, 1),
		maxPerNode: spec.TasksPerNode,
	}
	j.tasks = j.minPerNode * j.nodes
	if spec.Tasks > 0 {
		// With a task count, Slurm takes tasks per node as a maximum.
		j.minPerNode, j.tasks = 1, spec.Tasks
	}
	return j
}

// perNode is n tasks and the node's own share.
func (j jobNeeds) perNode(n int64) NodeSize {
	return NodeSize{CPUs: j.task.CPUs * n, MemoryMB: j.node.MemoryMB + j.task.MemoryMB*n, GPUs: j.node.GPUs + j.task.GPUs*n}
}

// place counts the nodes that hold the least share a node of the job
// gets, and how many tasks the largest of them (as many as the job may
// use) hold in all.
func (j jobNeeds) place(sizes []NodeSize) (usable, held int) {
	var fits []int
	for _, s := range sizes {
		n := j.tasksOn(s)
		if n >= j.minPerNode {
			fits = append(fits, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(fits)))
	for i, n := range fits {
		if j.maxNodes > 0 && i >= j.maxNodes {
			break
		}
		held += n
	}
	return len(fits), held
}

// tasksOn is how many of the job's tasks node s holds.
func (j jobNeeds) tasksOn(s NodeSize) int {
	if s.MemoryMB < j.node.MemoryMB || s.GPUs < j.node.GPUs {
		return 0
	}
	n := s.CPUs / j.task.CPUs
	if j.task.MemoryMB > 0 {
		n = min(n, (s.MemoryMB-j.node.MemoryMB)/j.task.MemoryMB)
	}
	if j.task.GPUs > 0 {
		n = min(n, (s.GPUs-j.node.GPUs)/j.task.GPUs)
	}
	if j.maxPerNode > 0 {
		n = min(n, int64(j.maxPerNode))
	}
	return int(n)
}

// list names the nodes and their sizes, the first few.
func list(sizes []NodeSize) string {
	const most = 8
	var b strings.Builder
	for i, s := range sizes {
		if i == most {
			fmt.Fprintf(&b, "; and %d more", len(sizes)-most)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", s.Name, s)
	}
	return b.String()
}
