// Package integration holds tests that need the real Slurm lab
// (hack/lab/lab-up.sh) and nothing of ours: they check the lab itself, and
// serve as the raw baseline the project's own clients are compared against.
package integration
