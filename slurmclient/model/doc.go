// Package model is the version-neutral vocabulary of package slurmclient:
// job specs, job and node status, typed errors, and the Backend interface
// that each slurmrestd API version's adapter implements. It imports nothing
// of ours, so both slurmclient and the per-version packages can use it.
package model
