// Package fetch is the home of the fetch endpoint's parts: the on-disk
// layout contract (fetch/layout), the HTTP server that runs next to the
// shared file system (fetch/server, cmd/slurm-fetchd) and the client the
// provider uses to read job output and stage files (fetch/client). The
// protocol is described in README.md beside this file; its header names and
// the info answer, which server and client must agree on, are defined once
// here.
package fetch
