package model

import "context"

// Backend is one slurmrestd API version's adapter. Each call is one HTTP
// request; retries, negotiation and authentication live above and below it
// (package slurmclient and its transport).
type Backend interface {
	// Version is the API version spoken, e.g. "v0.0.42".
	Version() string
	Ping(ctx context.Context) (ServerInfo, error)
	Submit(ctx context.Context, spec JobSpec) (JobID, error)
	Job(ctx context.Context, id JobID) (*Job, error)
	// JobStates leaves out IDs that slurmctld does not know (any more).
	JobStates(ctx context.Context, ids []JobID) ([]JobStatus, error)
	Jobs(ctx context.Context, f JobFilter) ([]Job, error)
	// Cancel cancels a job (signal "") or only delivers a signal to it
	// (signal a name such as "SIGTERM"): one DELETE /job/{id}.
	Cancel(ctx context.Context, id JobID, signal string) error
	Nodes(ctx context.Context) ([]Node, error)
	Partitions(ctx context.Context) ([]Partition, error)
}
