// Package v0042 speaks slurmrestd API v0.0.42 (Slurm 24.11 through 26.05):
// the oapi-codegen client generated from the spec in openapi/v0.0.42, and
// the hand-written adapter to slurmclient/model in adapter.go.
package v0042
