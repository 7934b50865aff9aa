// Package slurmclient is the provider's only door to Slurm: a
// version-neutral interface and model over slurmrestd's REST API, with API
// version negotiation, token authentication, typed errors and retries.
//
// Each supported API version lives in its own sub-package, generated from the
// OpenAPI document served by a real slurmrestd (see openapi/), plus an
// adapter to the neutral model. No generated type crosses this package's API.
package slurmclient
