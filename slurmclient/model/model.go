package model

import (
	"time"
)

// JobID is a Slurm job ID.
type JobID uint32

// JobSpec is what the provider asks Slurm to run: one batch job.
type JobSpec struct {
	Script  string   // the batch script, starting with #!
	Name    string   // job name
	Comment string   // free text; the provider stores the pod's identity here
	WorkDir string   // current working directory (required by slurmctld)
	Env     []string // KEY=VALUE; slurmctld requires at least one entry
	Stdout  string   // path of the job's own stdout; "" lets Slurm choose
	Stderr  string   // path of the job's own stderr; "" means with stdout

	Partition   string
	Account     string
	QOS         string
	Reservation string
	Constraints string

	CPUsPerTask int    // 0: Slurm's default
	MemoryMB    int64  // memory per node in MiB; 0: Slurm's default
	Gres        string // generic resources per node, e.g. "gpu:2"
	// The shape of a job over several nodes; zero values are Slurm's
	// defaults (one task on one node).
	MinNodes, MaxNodes int           // node count range; MaxNodes 0: MinNodes
	Tasks              int           // tasks in all
	TasksPerNode       int           // tasks on each node
	MemoryPerCPUMB     int64         // memory per CPU in MiB, instead of MemoryMB
	GresPerTask        string        // generic resources per task, e.g. "gpu:1"
	Exclusive          bool          // whole nodes, shared with no other job
	TimeLimit          time.Duration // rounded up to whole minutes; 0: partition default
	Hold               bool          // submit held (priority 0)

	// Extra are further fields of slurmrestd's job description, by their REST
	// names (e.g. "nice", "exclusive"), merged over the fields above. The
	// caller decides which are allowed; slurmrestd validates them.
	Extra map[string]any
}

// JobState is a job's base state as Slurm names it.
type JobState string

// Base states (flags such as COMPLETING or REQUEUED are reported apart).
const (
	StatePending     JobState = "PENDING"
	StateRunning     JobState = "RUNNING"
	StateSuspended   JobState = "SUSPENDED"
	StateCompleted   JobState = "COMPLETED"
	StateCancelled   JobState = "CANCELLED"
	StateFailed      JobState = "FAILED"
	StateTimeout     JobState = "TIMEOUT"
	StateNodeFail    JobState = "NODE_FAIL"
	StatePreempted   JobState = "PREEMPTED"
	StateBootFail    JobState = "BOOT_FAIL"
	StateDeadline    JobState = "DEADLINE"
	StateOutOfMemory JobState = "OUT_OF_MEMORY"
)

// Terminal tells whether a job in this state will never run again.
func (s JobState) Terminal() bool {
	switch s {
	case StatePending, StateRunning, StateSuspended, "":
		return false
	}
	return true
}

// SplitState separates Slurm's state list (base state plus flags, in any
// order, as API v0.0.40+ report it) into the base state and the flags.
func SplitState(list []string) (JobState, []string) {
	var base JobState
	var flags []string
	for _, s := range list {
		if base == "" && isBase(s) {
			base = JobState(s)
			continue
		}
		flags = append(flags, s)
	}
	return base, flags
}

func isBase(s string) bool {
	switch JobState(s) {
	case StatePending, StateRunning, StateSuspended, StateCompleted, StateCancelled,
		StateFailed, StateTimeout, StateNodeFail, StatePreempted, StateBootFail,
		StateDeadline, StateOutOfMemory:
		return true
	}
	return false
}

// ExitCode is how a job (or its batch step) ended.
type ExitCode struct {
	Set        bool     // false while the job has not ended
	Status     []string // e.g. ["SUCCESS"], ["NONZERO_EXIT"], ["SIGNALED"]
	ReturnCode int
	Signal     int // signal number, 0 if none
}

// Job is a job's full record.
type Job struct {
	ID          JobID
	Name        string
	Comment     string
	UserName    string
	Partition   string
	State       JobState
	StateFlags  []string
	StateReason string // e.g. "Priority", "Resources"; empty when none (Slurm's "None")
	StateDesc   string // Slurm's longer explanation, often empty
	ExitCode    ExitCode
	SubmitTime  time.Time
	StartTime   time.Time // zero until the job starts
	EndTime     time.Time // zero until the job ends (or its expected end while running)
	Nodes       string
	BatchHost   string // the node that runs the batch script (the pod's containers, one task)
	WorkDir     string
	Stdout      string // with %j, %x expanded by slurmrestd
	Stderr      string
	CPUs        int
}

// JobStatus is a job's compact state, as GET /jobs/state reports it.
type JobStatus struct {
	ID         JobID
	State      JobState
	StateFlags []string
}

// JobFilter narrows Jobs.
type JobFilter struct {
	// UpdatedSince asks only for jobs changed since then. slurmrestd treats it
	// as all-or-nothing: if anything changed, every job is returned.
	UpdatedSince time.Time
}

// Node is one Slurm node's capacity and state.
type Node struct {
	Name         string
	Address      string // NodeAddr: how the node is reached (an IP, or a name to resolve)
	CPUs         int
	MemoryMB     int64 // RealMemory
	FreeMemMB    int64
	AllocCPUs    int
	AllocMemMB   int64
	Gres         string // e.g. "gpu:a100:4"
	State        []string
	Partitions   []string
	Features     []string
	SlurmVersion string
	// OperatingSystem and Architecture are as slurmd reports them
	// (uname: "Linux 6.1.0-28-amd64 #1 SMP ...", "x86_64").
	OperatingSystem string
	Architecture    string
}

// Partition is one Slurm partition.
type Partition struct {
	Name       string
	Nodes      string // host list expression, e.g. "node[01-04]"
	TotalCPUs  int
	TotalNodes int
	State      []string
	MaxTime    time.Duration // 0: unlimited
}

// ServerInfo is what an authenticated ping learns about the server.
type ServerInfo struct {
	APIVersion   string // e.g. v0.0.42
	SlurmVersion string // e.g. 24.11.5
	Cluster      string
}
