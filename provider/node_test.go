package provider

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

func TestNodeCapacityAndQueueFactor(t *testing.T) {
	slurm := newFakeSlurm()
	slurm.nodes = []slurmclient.Node{
		{Name: "c1", CPUs: 4, MemoryMB: 8192, Gres: "gpu:a100:2", Partitions: []string{"debug", "all"},
			OperatingSystem: "Linux 6.1.0-28-arm64 #1 SMP Debian", Architecture: "aarch64"},
		{Name: "c2", CPUs: 2, MemoryMB: 1024, Partitions: []string{"debug"},
			OperatingSystem: "Linux 6.1.0-28-arm64 #1 SMP Debian", Architecture: "aarch64"},
		{Name: "x1", CPUs: 64, MemoryMB: 1 << 20, Partitions: []string{"other"}, OperatingSystem: "Linux 5.14.0 #1", Architecture: "x86_64"},
	}
	for _, tc := range []struct {
		factor                    float64
		cpu, mem, gpu, pods       string
		allocCPU, allocMem, alloc string
	}{
		{0, "6", "9Gi", "2", "110", "6", "9Gi", "2"},
		{1, "6", "9Gi", "2", "110", "6", "9Gi", "2"},
		{2.5, "6", "9Gi", "2", "110", "15", "23040Mi", "5"},
	} {
		n := &corev1.Node{}
		NewNodeProvider(NodeConfig{Name: "vk", Partition: "debug", MaxPods: 110, QueueFactor: tc.factor, Runtime: RuntimePodman,
			Labels: map[string]string{"site/x": "y"}, Taints: []corev1.Taint{{Key: "gpu", Effect: corev1.TaintEffectNoSchedule}}}, slurm, n).Prime(context.Background(), n)
		c, a := n.Status.Capacity, n.Status.Allocatable
		q := func(l corev1.ResourceList, name corev1.ResourceName) string { v := l[name]; return v.String() }
		if q(c, corev1.ResourceCPU) != tc.cpu || q(c, corev1.ResourceMemory) != tc.mem || q(c, "nvidia.com/gpu") != tc.gpu ||
			q(c, corev1.ResourcePods) != tc.pods {
			t.Errorf("factor %v: capacity %v", tc.factor, c)
		}
		if q(a, corev1.ResourceCPU) != tc.allocCPU || q(a, corev1.ResourceMemory) != tc.allocMem || q(a, "nvidia.com/gpu") != tc.alloc ||
			q(a, corev1.ResourcePods) != tc.pods {
			t.Errorf("factor %v: allocatable %v", tc.factor, a)
		}
		if n.Labels["site/x"] != "y" || n.Labels[LabelPartition] != "debug" || len(n.Spec.Taints) != 2 || n.Spec.Taints[1].Key != "gpu" {
			t.Errorf("labels %v taints %v", n.Labels, n.Spec.Taints)
		}
		if n.Labels[LabelLargestNodeCPUs] != "4" || n.Labels[LabelLargestNodeMemory] != "8Gi" || n.Labels[LabelLargestNodeGPUs] != "2" {
			t.Errorf("largest node labels %v, want c1's 4 CPUs, 8Gi, 2 GPUs", n.Labels)
		}
		// The system info is the partition's nodes', not another partition's.
		want := corev1.NodeSystemInfo{OSImage: "Slurm 24.11.5 (partition debug)", KernelVersion: "6.1.0-28-arm64", Architecture: "arm64",
			OperatingSystem: "linux", KubeletVersion: "slurm-vk", ContainerRuntimeVersion: "podman://slurm-job"}
		if n.Status.NodeInfo != want {
			t.Errorf("node info %+v, want %+v", n.Status.NodeInfo, want)
		}
	}
}

// TestNoNodeFits: a pod that no single node of the partition can hold
// fails before it is submitted, with the numbers; one that some node
// holds (all of CPUs, memory and GPUs on the same node) goes on.
func TestNoNodeFits(t *testing.T) {
	sizes := []NodeSize{{Name: "c1", CPUs: 4, MemoryMB: 8192, GPUs: 2}, {Name: "c2", CPUs: 8, MemoryMB: 1024}}
	for _, tt := range []struct {
		name string
		spec slurmclient.JobSpec
		want string // "" fits; else in the message
	}{
		{"fits the wide node", slurmclient.JobSpec{Partition: "debug", CPUsPerTask: 8, MemoryMB: 1024}, ""},
		{"fits the GPU node", slurmclient.JobSpec{Partition: "debug", CPUsPerTask: 2, Gres: "gpu:2"}, ""},
		{"no default CPUs: one", slurmclient.JobSpec{Partition: "debug"}, ""},
		{"CPUs of one node, memory of the other", slurmclient.JobSpec{Partition: "debug", CPUsPerTask: 8, MemoryMB: 2048},
			"the pod needs 8 CPUs, 2Gi memory, 0 GPUs on one node; no node of partition debug has that much (at most 8 CPUs, on c2; 8Gi memory, on c1; 2 GPUs, on c1)"},
		{"more GPUs than any node", slurmclient.JobSpec{Partition: "debug", Gres: "gpu:3"}, "3 GPUs"},
		{"another partition: Slurm decides", slurmclient.JobSpec{Partition: "long", CPUsPerTask: 64}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{TranslateConfig: TranslateConfig{Partition: "debug"}, NodeSizes: func() []NodeSize { return sizes }}, newFakeSlurm(), noFiles{}, lookups)
			got := p.noNodeFits(tt.spec)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("noNodeFits = %q, want %q", got, tt.want)
			}
		})
	}
	unknown := New(Config{TranslateConfig: TranslateConfig{Partition: "debug"}, NodeSizes: func() []NodeSize { return nil }}, newFakeSlurm(), noFiles{}, lookups)
	if got := unknown.noNodeFits(slurmclient.JobSpec{Partition: "debug", CPUsPerTask: 1000}); got != "" {
		t.Errorf("with no sizes known yet: %q, want no verdict", got)
	}
}

// TestNodeClock: the node's conditions are stamped by the configured
// clock, and the constructor asks Slurm nothing (Prime does).
func TestNodeClock(t *testing.T) {
	slurm := newFakeSlurm()
	slurm.nodes = []slurmclient.Node{{Name: "c1", CPUs: 4, MemoryMB: 8192, Partitions: []string{"debug"}}}
	at := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	n := &corev1.Node{}
	np := NewNodeProvider(NodeConfig{Name: "vk", Partition: "debug", MaxPods: 10, Now: func() time.Time { return at }}, slurm, n)
	if len(n.Status.Conditions) != 0 || n.Status.Capacity != nil {
		t.Fatalf("the constructor filled the status: %+v", n.Status)
	}
	np.Prime(context.Background(), n)
	if len(n.Status.Conditions) != 2 {
		t.Fatalf("conditions %+v, want Ready and %s", n.Status.Conditions, ConditionSlurmNodesDown)
	}
	for _, c := range n.Status.Conditions {
		if !c.LastHeartbeatTime.Time.Equal(at) || !c.LastTransitionTime.Time.Equal(at) {
			t.Errorf("condition %+v, want stamped %v", c, at)
		}
	}
}

// TestNodeCarry: after a restart, a node Ready before and now keeps its
// Ready condition's transition time; one that was not Ready gets a new one.
func TestNodeCarry(t *testing.T) {
	slurm := newFakeSlurm()
	slurm.nodes = []slurmclient.Node{{Name: "c1", CPUs: 4, MemoryMB: 8192, Partitions: []string{"debug"}}}
	before, now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2031, 1, 2, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		prev corev1.ConditionStatus
		want time.Time
	}{{corev1.ConditionTrue, before}, {corev1.ConditionFalse, now}} {
		prev := &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: tc.prev,
			Reason: "SlurmReachable", LastTransitionTime: metav1.NewTime(before)}}}}
		if tc.prev == corev1.ConditionFalse {
			prev.Status.Conditions[0].Reason = "SlurmUnreachable"
		}
		n := &corev1.Node{}
		np := NewNodeProvider(NodeConfig{Name: "vk", Partition: "debug", MaxPods: 10, Now: func() time.Time { return now }}, slurm, n)
		np.Carry(prev)
		np.Prime(context.Background(), n)
		if c := n.Status.Conditions; len(c) != 2 || c[0].Type != corev1.NodeReady || c[0].Status != corev1.ConditionTrue || !c[0].LastTransitionTime.Time.Equal(tc.want) {
			t.Errorf("was %s: conditions %+v, want Ready since %v", tc.prev, c, tc.want)
		}
	}
}

// TestNodesCondition: kubectl describe node lists the partition's nodes
// with their states and sizes; a drained or down node turns
// SlurmNodesDown True, naming it.
func TestNodesCondition(t *testing.T) {
	slurm := newFakeSlurm()
	slurm.nodes = []slurmclient.Node{
		{Name: "c1", CPUs: 4, MemoryMB: 8192, State: []string{"IDLE"}, Partitions: []string{"debug"}},
		{Name: "c2", CPUs: 2, MemoryMB: 4096, Gres: "gpu:2", State: []string{"MIXED"}, Partitions: []string{"debug"}},
	}
	cond := func() corev1.NodeCondition {
		n := &corev1.Node{}
		NewNodeProvider(NodeConfig{Name: "vk", Partition: "debug", MaxPods: 10}, slurm, n).Prime(context.Background(), n)
		for _, c := range n.Status.Conditions {
			if c.Type == ConditionSlurmNodesDown {
				return c
			}
		}
		t.Fatalf("no %s condition in %+v", ConditionSlurmNodesDown, n.Status.Conditions)
		return corev1.NodeCondition{}
	}
	c := cond()
	if want := "2 nodes: c1 idle (4 CPUs, 8Gi memory, 0 GPUs); c2 mixed (2 CPUs, 4Gi memory, 2 GPUs)"; c.Status != corev1.ConditionFalse || c.Message != want {
		t.Errorf("all up: %s %q, want False %q", c.Status, c.Message, want)
	}
	slurm.nodes[1].State = []string{"IDLE", "DRAIN"}
	c = cond()
	if c.Status != corev1.ConditionTrue || c.Reason != "NodesDown" || !strings.HasPrefix(c.Message, "1 of 2 nodes down or drained (c2). 2 nodes: c1 idle") {
		t.Errorf("c2 drained: %s %s %q", c.Status, c.Reason, c.Message)
	}
}
