// Command slurm-vk-logtime records when a container's output was written:
// the job script starts it beside each container attempt, and it appends a
// time index (fetch/logtime) next to the log until the script stops it or
// goes away. Install it on the compute nodes (in PATH, or where the node's
// logTimeHelper setting says); without it, logs still work and
// --timestamps/--since fall back to the log's modification time.
//
//	slurm-vk-logtime LOG INDEX
package main

import (
	"os"

	"github.com/slurmkube/slurm-vk/fetch/logtime"
)

func main() { os.Exit(logtime.Command(os.Args[1:])) }
