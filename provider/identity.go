package provider

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// JobComment is the comment that ties a job to its pod: node, namespace,
// name and UID. Recovery after a restart relies on it.
func JobComment(node string, pod *corev1.Pod) string {
	return "slurm-vk:" + node + ":" + pod.Namespace + "/" + pod.Name + ":" + string(pod.UID)
}

// ParseJobComment is the inverse of JobComment; ok is false for jobs that
// are not this node's.
func ParseJobComment(node, comment string) (namespace, name, uid string, ok bool) {
	rest, found := strings.CutPrefix(comment, "slurm-vk:"+node+":")
	if !found {
		return "", "", "", false
	}
	nsName, uid, found := strings.Cut(rest, ":")
	if !found {
		return "", "", "", false
	}
	namespace, name, found = strings.Cut(nsName, "/")
	return namespace, name, uid, found && uid != ""
}

// PodRef is the pod's directory in the layout contract.
func PodRef(pod *corev1.Pod) layout.Pod {
	return layout.Pod{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
}
