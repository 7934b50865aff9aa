// Package fetch is the home of the fetch endpoint's parts: the on-disk
// layout contract (fetch/layout), the HTTP server that runs next to the
// shared file system (fetch/server, cmd/slurm-fetchd) and the client the
// provider uses to read job output and stage files (fetch/client). The
// protocol is described in README.md beside this file.
package fetch
