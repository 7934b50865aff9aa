// Package v0045 speaks slurmrestd API v0.0.45 (Slurm 25.11 and 26.05): the
// oapi-codegen client generated from the spec in openapi/v0.0.45, and an
// adapter to slurmclient/model generated from v0042's (see generate.go).
package v0045
