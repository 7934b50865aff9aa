package provider

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Node labels and the taint the virtual node carries.
const (
	LabelPartition    = "slurm-vk.io/partition"
	LabelCluster      = "slurm-vk.io/cluster"
	LabelSlurmVersion = "slurm-vk.io/slurm-version"
	// Per resource, the most one node of the partition has: the most one
	// pod can ask for, as a pod runs on one node.
	LabelLargestNodeCPUs   = "slurm-vk.io/largest-node-cpus"
	LabelLargestNodeMemory = "slurm-vk.io/largest-node-memory"
	LabelLargestNodeGPUs   = "slurm-vk.io/largest-node-gpus"
	TaintKey               = "virtual-kubelet.io/provider"
	TaintValue             = "slurm"
)

// NodeConfig describes the virtual node.
type NodeConfig struct {
	Name      string
	Partition string
	MaxPods   int
	// InternalIP and KubeletPort are where the API server reaches the
	// kubelet API (logs).
	InternalIP  string
	KubeletPort int32
	// Interval is how often capacity and readiness are refreshed
	// (default 30s).
	Interval time.Duration
	// Labels and Taints are added to the node when it registers, like a
	// kubelet's --node-labels and --register-with-taints; the provider's
	// own taint is always there, so pods must tolerate it.
	Labels map[string]string
	Taints []corev1.Taint
	// QueueFactor scales what the node offers the Kubernetes scheduler
	// (allocatable) over the partition's real size (capacity), so that up
	// to that many partitions' worth of pods reach Slurm and wait in its
	// queue, with its reason, rather than Pending in Kubernetes as
	// "Insufficient cpu". 0 or 1: the real size.
	QueueFactor float64
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Runtime is the container runtime jobs run pods with, for the
	// node's system info.
	Runtime string
	// NoProviderTaint leaves the provider's taint off (a lab running the
	// upstream e2e suite, whose pods do not tolerate it).
	NoProviderTaint bool
}

// NodeProvider keeps the virtual node's capacity and readiness current.
type NodeProvider struct {
	cfg   NodeConfig
	slurm slurmclient.Interface

	mu    sync.Mutex
	node  *corev1.Node
	sizes []NodeSize        // the partition's nodes, as last read
	addrs map[string]string // their IP addresses, by name
}

var _ node.NodeProvider = (*NodeProvider)(nil)

// NewNodeProvider fills in the node virtual-kubelet will register (labels,
// taint and addresses are only written when the node is created) and
// returns the provider that keeps its status. It does no I/O: Prime takes
// the first look at Slurm.
func NewNodeProvider(cfg NodeConfig, slurm slurmclient.Interface, n *corev1.Node) *NodeProvider {
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	for k, v := range cfg.Labels {
		n.Labels[k] = v
	}
	n.Labels[LabelPartition] = cfg.Partition
	if !cfg.NoProviderTaint {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: TaintKey, Value: TaintValue, Effect: corev1.TaintEffectNoSchedule})
	}
	n.Spec.Taints = append(n.Spec.Taints, cfg.Taints...)
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: cfg.InternalIP}, {Type: corev1.NodeHostName, Address: cfg.Name}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = cfg.KubeletPort
	n.Status.NodeInfo.OperatingSystem = "linux"
	n.Status.NodeInfo.Architecture = "amd64"
	n.Status.NodeInfo.KubeletVersion = "slurm-vk"
	if cfg.Runtime != "" {
		// Its version is the compute nodes', which the node cannot see.
		n.Status.NodeInfo.ContainerRuntimeVersion = cfg.Runtime + "://slurm-job"
	}
	return &NodeProvider{cfg: cfg, slurm: slurm, node: n.DeepCopy()}
}

// Carry takes the conditions of the node as the API server has it from an
// earlier run, so that a restart keeps their transition times where their
// status has not changed: a node Ready before and after a restart was
// Ready throughout. Call it before Prime.
func (np *NodeProvider) Carry(prev *corev1.Node) {
	np.mu.Lock()
	defer np.mu.Unlock()
	np.node.Status.Conditions = nil
	for _, c := range prev.Status.Conditions {
		if c.Type == corev1.NodeReady || c.Type == ConditionSlurmNodesDown {
			np.node.Status.Conditions = append(np.node.Status.Conditions, c)
		}
	}
}

// Prime takes the first look at Slurm (bounded, best effort: a Slurm that
// does not answer makes the node NotReady) and writes what it found into
// n, the node virtual-kubelet is about to register: capacity, readiness
// and the labels that need Slurm, so pods can be scheduled at once.
func (np *NodeProvider) Prime(ctx context.Context, n *corev1.Node) {
	np.refresh(ctx)
	np.mu.Lock()
	defer np.mu.Unlock()
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	for k, v := range np.node.Labels {
		n.Labels[k] = v
	}
	n.Status = *np.node.Status.DeepCopy()
}

// Ping implements node.NodeProvider; it is the heartbeat, so it only
// reports whether slurmrestd answers an authenticated call.
func (np *NodeProvider) Ping(ctx context.Context) error {
	_, err := np.slurm.Ping(ctx)
	return err
}

// NotifyNodeStatus implements node.NodeProvider: it refreshes the node
// every Interval and reports changes.
func (np *NodeProvider) NotifyNodeStatus(ctx context.Context, cb func(*corev1.Node)) {
	go func() {
		t := time.NewTicker(np.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if np.refresh(ctx) {
				np.mu.Lock()
				n := np.node.DeepCopy()
				np.mu.Unlock()
				cb(n)
			}
		}
	}()
}

// refresh reads the partition's capacity and slurmrestd's health; it
// reports whether anything changed.
func (np *NodeProvider) refresh(ctx context.Context) bool {
	// Bounded: an unreachable slurmrestd must turn the node NotReady within
	// a check, not after the client's whole retry budget.
	ctx, cancel := context.WithTimeout(ctx, min(np.cfg.Interval, 10*time.Second))
	defer cancel()
	now := metav1.NewTime(np.cfg.Now())
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "SlurmReachable",
		Message: "slurmrestd answers and accepts the token", LastHeartbeatTime: now}
	var capacity corev1.ResourceList
	var sizes []NodeSize
	var nodes []slurmclient.Node
	var addrs map[string]string
	info, err := np.slurm.Ping(ctx)
	if err == nil {
		capacity, sizes, nodes, err = np.capacity(ctx)
	}
	if err == nil {
		np.mu.Lock()
		known := np.addrs
		np.mu.Unlock()
		addrs = nodeAddresses(nodes, known)
	}
	if err != nil {
		ready.Status = corev1.ConditionFalse
		ready.Reason = "SlurmUnreachable"
		if errors.Is(err, slurmclient.ErrUnauthenticated) || errors.Is(err, slurmclient.ErrForbidden) {
			ready.Reason = "SlurmAuthFailed"
		}
		ready.Message = err.Error()
		log.G(ctx).WithError(err).Warn("node not ready")
	}
	np.mu.Lock()
	defer np.mu.Unlock()
	n := np.node
	changed := false
	if err == nil {
		if info.Cluster != "" && n.Labels[LabelCluster] != info.Cluster {
			n.Labels[LabelCluster], changed = info.Cluster, true
		}
		if info.SlurmVersion != "" && n.Labels[LabelSlurmVersion] != info.SlurmVersion {
			n.Labels[LabelSlurmVersion], changed = info.SlurmVersion, true
		}
		np.sizes, np.addrs = sizes, addrs
		if ni := nodeInfo(n.Status.NodeInfo, info, np.cfg.Partition, nodes); ni != n.Status.NodeInfo {
			n.Status.NodeInfo, changed = ni, true
		}
		for k, v := range largestLabels(sizes) {
			if n.Labels[k] != v {
				n.Labels[k], changed = v, true
			}
		}
		if !equalResources(n.Status.Capacity, capacity) {
			n.Status.Capacity, n.Status.Allocatable, changed = capacity, np.allocatable(capacity), true
		}
	}
	var moved bool
	n.Status.Conditions, moved = setCondition(n.Status.Conditions, ready, now)
	changed = changed || moved
	if err == nil {
		n.Status.Conditions, moved = setCondition(n.Status.Conditions, nodesCondition(nodes, now), now)
		changed = changed || moved
	}
	if ready.Status == corev1.ConditionTrue {
		n.Status.Phase = corev1.NodeRunning
	}
	return changed
}

func equalResources(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || v.Cmp(w) != 0 {
			return false
		}
	}
	return true
}

// allocatable is the capacity times the queue factor; pods stays as is.
func (np *NodeProvider) allocatable(capacity corev1.ResourceList) corev1.ResourceList {
	out := capacity.DeepCopy()
	f := np.cfg.QueueFactor
	if f <= 1 {
		return out
	}
	for name, q := range capacity {
		if name == corev1.ResourcePods {
			continue
		}
		scaled := resource.NewQuantity(int64(float64(q.Value())*f), q.Format)
		if name == corev1.ResourceCPU {
			scaled = resource.NewMilliQuantity(int64(float64(q.MilliValue())*f), q.Format)
		}
		out[name] = *scaled
	}
	return out
}

// capacity sums the CPUs, memory and GPUs of the partition's nodes, and
// returns their sizes and the nodes themselves.
func (np *NodeProvider) capacity(ctx context.Context) (corev1.ResourceList, []NodeSize, []slurmclient.Node, error) {
	nodes, err := np.slurm.Nodes(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	var cpus, gpus, memMB int64
	var sizes []NodeSize
	var mine []slurmclient.Node
	for _, n := range nodes {
		in := false
		for _, p := range n.Partitions {
			in = in || p == np.cfg.Partition
		}
		if !in {
			continue
		}
		mine = append(mine, n)
		size := NodeSize{Name: n.Name, CPUs: int64(n.CPUs), MemoryMB: n.MemoryMB, GPUs: gresGPUs(n.Gres)}
		sizes = append(sizes, size)
		cpus += size.CPUs
		memMB += size.MemoryMB
		gpus += size.GPUs
	}
	if cpus == 0 {
		return nil, nil, nil, fmt.Errorf("partition %q has no nodes", np.cfg.Partition)
	}
	list := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(cpus, resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(memMB<<20, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(int64(np.cfg.MaxPods), resource.DecimalSI),
	}
	if gpus > 0 {
		list["nvidia.com/gpu"] = *resource.NewQuantity(gpus, resource.DecimalSI)
	}
	return list, sizes, mine, nil
}

// ConditionSlurmNodesDown is True while some of the partition's nodes are
// down, drained or failing; its message lists every node with its state
// and size, for kubectl describe node.
const ConditionSlurmNodesDown corev1.NodeConditionType = "SlurmNodesDown"

// downStates are Slurm node states (and flags) in which a node runs no new
// job.
var downStates = []string{"DOWN", "DRAIN", "FAIL", "NOT_RESPONDING", "INVALID", "INVALID_REG", "POWERED_DOWN"}

// nodesCondition summarizes the partition's nodes.
func nodesCondition(nodes []slurmclient.Node, now metav1.Time) corev1.NodeCondition {
	const most = 16
	var down, list []string
	for i, n := range nodes {
		for _, s := range n.State {
			if contains(downStates, s) {
				down = append(down, n.Name)
				break
			}
		}
		if i < most {
			size := NodeSize{CPUs: int64(n.CPUs), MemoryMB: n.MemoryMB, GPUs: gresGPUs(n.Gres)}
			list = append(list, fmt.Sprintf("%s %s (%s)", n.Name, strings.ToLower(strings.Join(n.State, "+")), size))
		}
	}
	if len(nodes) > most {
		list = append(list, fmt.Sprintf("and %d more", len(nodes)-most))
	}
	c := corev1.NodeCondition{Type: ConditionSlurmNodesDown, Status: corev1.ConditionFalse, Reason: "AllNodesUp", LastHeartbeatTime: now,
		Message: fmt.Sprintf("%d nodes: %s", len(nodes), strings.Join(list, "; "))}
	if len(down) > 0 {
		c.Status, c.Reason = corev1.ConditionTrue, "NodesDown"
		c.Message = fmt.Sprintf("%d of %d nodes down or drained (%s). %s", len(down), len(nodes), strings.Join(down, ", "), c.Message)
	}
	return c
}

// setCondition puts c in conds, in place of the condition of its type; the
// transition time moves only when the status or reason does. moved says
// whether anything but the heartbeat changed.
func setCondition(conds []corev1.NodeCondition, c corev1.NodeCondition, now metav1.Time) (out []corev1.NodeCondition, moved bool) {
	for i, old := range conds {
		if old.Type != c.Type {
			continue
		}
		if old.Status != c.Status || old.Reason != c.Reason {
			c.LastTransitionTime, moved = now, true
		} else {
			c.LastTransitionTime = old.LastTransitionTime
			moved = old.Message != c.Message
		}
		out = append(append(out, conds[:i]...), c)
		return append(out, conds[i+1:]...), moved
	}
	c.LastTransitionTime = now
	return append(conds, c), true
}

// nodeInfo is the node's system info as kubectl get nodes -o wide shows
// it: Slurm's version and cluster as the OS image, and the kernel and
// architecture of the partition's compute nodes (the most common, when
// they differ).
func nodeInfo(ni corev1.NodeSystemInfo, info slurmclient.ServerInfo, partition string, nodes []slurmclient.Node) corev1.NodeSystemInfo {
	if info.SlurmVersion != "" {
		where := "partition " + partition
		if info.Cluster != "" {
			where = "cluster " + info.Cluster + ", " + where
		}
		ni.OSImage = fmt.Sprintf("Slurm %s (%s)", info.SlurmVersion, where)
	}
	kernels, arches := map[string]int{}, map[string]int{}
	for _, n := range nodes {
		// "Linux 6.1.0-28-amd64 #1 SMP ...": the release, as uname -r.
		if f := strings.Fields(n.OperatingSystem); len(f) >= 2 {
			kernels[f[1]]++
		}
		if n.Architecture != "" {
			arches[n.Architecture]++
		}
	}
	if k := mostCommon(kernels); k != "" {
		ni.KernelVersion = k
	}
	switch mostCommon(arches) {
	case "x86_64":
		ni.Architecture = "amd64"
	case "aarch64":
		ni.Architecture = "arm64"
	case "ppc64le":
		ni.Architecture = "ppc64le"
	}
	return ni
}

func mostCommon(counts map[string]int) string {
	best, n := "", 0
	for k, c := range counts {
		if c > n || c == n && k < best {
			best, n = k, c
		}
	}
	return best
}

// NodeSizes are the partition's nodes as last read from Slurm; nil until
// a read succeeded. The provider checks that a pod fits one of them.
func (np *NodeProvider) NodeSizes() []NodeSize {
	np.mu.Lock()
	defer np.mu.Unlock()
	return np.sizes
}

// NodeAddress is the IP address of the partition's node name, as Slurm
// reaches it (its NodeAddr, resolved here where it is a name), or "" if
// unknown: a pod's host and pod IP (its containers share the node's
// network).
func (np *NodeProvider) NodeAddress(name string) string {
	np.mu.Lock()
	defer np.mu.Unlock()
	return np.addrs[name]
}

// Allocatable is what the node offers pods now: the default limits the
// downward API gives a container without its own.
func (np *NodeProvider) Allocatable() corev1.ResourceList {
	np.mu.Lock()
	defer np.mu.Unlock()
	return np.node.Status.Allocatable.DeepCopy()
}

// nodeAddresses resolves the nodes' NodeAddr to IP addresses (a name that
// does not resolve here is left out); known are the last ones, which a
// name keeps rather than being looked up again.
func nodeAddresses(nodes []slurmclient.Node, known map[string]string) map[string]string {
	out := map[string]string{}
	for _, n := range nodes {
		a := n.Address
		if a == "" {
			a = n.Name
		}
		if ip := net.ParseIP(a); ip != nil {
			out[n.Name] = ip.String()
			continue
		}
		if ip, ok := known[n.Name]; ok {
			out[n.Name] = ip
			continue
		}
		if ips, err := net.LookupIP(a); err == nil && len(ips) > 0 {
			out[n.Name] = ips[0].String()
		}
	}
	return out
}

var gresGPU = regexp.MustCompile(`(?:^|,)gpu(?::[^:,(]+)?:(\d+)`)

// gresGPUs counts GPUs in a gres string such as "gpu:a100:4(S:0-1),nic:1".
func gresGPUs(gres string) int64 {
	var n int64
	for _, m := range gresGPU.FindAllStringSubmatch(gres, -1) {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		n += v
	}
	return n
}
