// Package provider implements the virtual-kubelet provider that runs pods as
// Slurm batch jobs: pod to job translation, status mapping, the sync loop,
// node capacity and recovery after restart. It talks to Slurm only through
// package slurmclient and reads job output only through the fetch client.
package provider
