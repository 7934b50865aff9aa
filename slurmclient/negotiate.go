package slurmclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/slurmkube/slurm-vk/slurmclient/model"
	v0042 "github.com/slurmkube/slurm-vk/slurmclient/v0042"
	v0045 "github.com/slurmkube/slurm-vk/slurmclient/v0045"
)

// backendFactory builds one API version's adapter.
type backendFactory func(server string, doer *http.Client) (model.Backend, error)

// Supported lists the API versions this client speaks, newest first.
var supported = []struct {
	version string
	build   backendFactory
}{
	{v0045.APIVersion, func(s string, d *http.Client) (model.Backend, error) { return v0045.New(s, d) }},
	{v0042.APIVersion, func(s string, d *http.Client) (model.Backend, error) { return v0042.New(s, d) }},
}

// SupportedVersions lists the API versions this client speaks, newest first.
func SupportedVersions() []string {
	out := make([]string, len(supported))
	for i, s := range supported {
		out[i] = s.version
	}
	return out
}

func factory(version string) backendFactory {
	for _, s := range supported {
		if s.version == version {
			return s.build
		}
	}
	return nil
}

// APIVersion implements Interface.
func (c *Client) APIVersion() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.backend == nil {
		return ""
	}
	return c.backend.Version()
}

// backendFor returns the negotiated backend, negotiating on first use.
func (c *Client) backendFor(ctx context.Context) (model.Backend, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.backend != nil {
		return c.backend, nil
	}
	version := c.cfg.APIVersion
	if version == "" {
		v, err := c.negotiate(ctx)
		if err != nil {
			return nil, err
		}
		version = v
	}
	b, err := factory(version)(c.base, c.http)
	if err != nil {
		return nil, err
	}
	c.backend = b
	return b, nil
}

// negotiate picks the newest supported version the server serves: a path
// under an unserved version answers 404, a served one anything else.
func (c *Client) negotiate(ctx context.Context) (string, error) {
	const op = "negotiate API version"
	for _, s := range supported {
		status, err := c.probe(ctx, "/slurm/"+s.version+"/ping/")
		if err != nil {
			return "", model.Transport(op, err)
		}
		if status != http.StatusNotFound {
			return s.version, nil
		}
	}
	offered := c.offered(ctx)
	return "", &model.Error{Kind: model.ErrUnavailable, Op: op,
		Err: fmt.Errorf("slurmrestd serves %s; this client speaks %s", offered, strings.Join(SupportedVersions(), ", "))}
}

func (c *Client) probe(ctx context.Context, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode, nil
}

var versionPath = regexp.MustCompile(`"/slurm/(v[0-9.]+)/`)

// offered lists the /slurm/ versions in the server's OpenAPI document, for
// the error message when nothing matches.
func (c *Client) offered(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/openapi/v3", nil)
	if err != nil {
		return "an unknown set of versions"
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "an unknown set of versions (" + err.Error() + ")"
	}
	defer resp.Body.Close()
	var doc struct {
		Paths map[string]json.RawMessage `json:"paths"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&doc) != nil {
		return fmt.Sprintf("an unknown set of versions (GET /openapi/v3: HTTP %d)", resp.StatusCode)
	}
	seen := map[string]bool{}
	for p := range doc.Paths {
		if m := versionPath.FindStringSubmatch(`"` + p); m != nil {
			seen[m[1]] = true
		}
	}
	if len(seen) == 0 {
		return "no /slurm/ API versions"
	}
	var vs []string
	for v := range seen {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	return strings.Join(vs, ", ")
}
