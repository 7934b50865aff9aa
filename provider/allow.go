package provider

import (
	"strings"
)

// ReasonAnnotationNotAllowed fails a pod whose slurm-vk.io/ annotation
// asks for something its node does not allow.
const ReasonAnnotationNotAllowed = "AnnotationNotAllowed"

// AllowAny in an allow-list admits every value.
const AllowAny = "*"

// Allowed lists what the slurm-vk.io/ annotations may choose on a node,
// beyond the node's own runtime and partition (always allowed). An empty
// list allows nothing else; AllowAny allows anything. The options
// annotation has its own list, TranslateConfig.AllowedOptions.
type Allowed struct {
	Runtimes     []string `json:"runtimes,omitempty"`
	Partitions   []string `json:"partitions,omitempty"`
	Accounts     []string `json:"accounts,omitempty"`
	QOS          []string `json:"qos,omitempty"`
	Reservations []string `json:"reservations,omitempty"`
	Constraints  []string `json:"constraints,omitempty"`
}

// allow checks one annotation's value against its list; own is the node's
// setting ("" if none). The message names the annotation and what is
// allowed, for the pod's status.
func allow(annotation, value, own string, list []string) error {
	if value == "" || value == own || contains(list, AllowAny) || contains(list, value) {
		return nil
	}
	var ok []string
	if own != "" {
		ok = append(ok, own)
	}
	ok = append(ok, list...)
	what := "no value: the node's administrators can allow some"
	if len(ok) > 0 {
		what = strings.Join(ok, ", ")
	}
	return invalid(ReasonAnnotationNotAllowed, "annotation %s: %q is not allowed on this node (allowed: %s)", annotation, value, what)
}

// ReservedOptions are job fields slurm-vk sets itself, or that decide who
// and where a job runs: the options annotation may never set them, even
// where -allowed-options lists them (cmd/slurm-vk refuses such a list).
var ReservedOptions = []string{
	"account", "argv", "comment", "constraints", "container", "container_id", "cpus_per_task", "current_working_directory",
	"environment", "group_id", "memory_per_cpu", "memory_per_node", "name", "partition", "qos", "reservation", "script",
	"standard_error", "standard_input", "standard_output", "time_limit", "tres_per_job", "tres_per_node", "tres_per_task",
	"user_id", "gres", "clusters", "cluster_constraint", "prefer", "burst_buffer", "chdir",
	"minimum_nodes", "maximum_nodes", "nodes", "tasks", "tasks_per_node", "minimum_cpus", "shared",
	// The job's size beside its shape: the pod's requests account for it.
	"maximum_cpus", "minimum_cpus_per_node", "overcommit", "cpus_per_tres", "memory_per_tres", "ntasks_per_tres",
}

// reservedOption tells whether the options annotation may never set key.
func reservedOption(key string) bool { return contains(ReservedOptions, key) }
