package provider

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Tenancy modes.
const (
	// TenancySingle runs every allowed namespace's jobs as the slurmrestd
	// token's own user: the namespaces share one Slurm identity, and so
	// each other's files and jobs. For small sites that trust all tenants.
	TenancySingle = "single"
	// TenancyMapped runs each namespace's jobs as the Slurm user mapped to
	// it; namespaces without a mapping cannot run pods.
	TenancyMapped = "mapped"
)

// ReasonNamespaceNotAllowed fails a pod whose namespace may not run on this
// node.
const ReasonNamespaceNotAllowed = "NamespaceNotAllowed"

// Tenancy maps namespaces to Slurm users: the one place that decides who a
// pod's job runs as. Slurm and the file system then keep the users apart.
type Tenancy struct {
	// Mode is TenancySingle (the default) or TenancyMapped.
	Mode string `json:"mode,omitempty"`
	// Namespaces: in mapped mode, each namespace's tenant (a user is
	// required); in single mode, the namespaces allowed to run pods (empty:
	// all), with an optional account each.
	Namespaces map[string]Tenant `json:"namespaces,omitempty"`
}

// Tenant is who a namespace's jobs run as.
type Tenant struct {
	// User is the Slurm (Unix) user; empty in single mode: the token's user.
	User string `json:"user,omitempty"`
	// Account is the default Slurm account for the namespace's jobs.
	Account string `json:"account,omitempty"`
	// TokenFile, when set, holds a slurmrestd JWT of User itself: the
	// provider then acts for this tenant with that token instead of
	// sending X-SLURM-USER-NAME with the node's token (which must then be
	// SlurmUser's or root's).
	TokenFile string `json:"tokenFile,omitempty"`
}

// unixUser is what useradd accepts by default, and what can safely reach a
// header and a file owner.
var unixUser = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// Validate checks the mode and every entry.
func (t Tenancy) Validate() error {
	switch t.Mode {
	case "", TenancySingle, TenancyMapped:
	default:
		return fmt.Errorf("tenancy mode %q: want %q or %q", t.Mode, TenancySingle, TenancyMapped)
	}
	if t.Mode == TenancyMapped && len(t.Namespaces) == 0 {
		return fmt.Errorf("tenancy mode %q needs at least one namespace mapping", TenancyMapped)
	}
	for _, ns := range t.names() {
		e := t.Namespaces[ns]
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("tenancy: %q is not a namespace name", ns)
		}
		switch {
		case t.mapped() && e.User == "":
			return fmt.Errorf("tenancy: namespace %s: a user is required in mapped mode", ns)
		case !t.mapped() && (e.User != "" || e.TokenFile != ""):
			return fmt.Errorf("tenancy: namespace %s: user and tokenFile need mode %q (single mode runs every job as the token's user)", ns, TenancyMapped)
		case e.User != "" && (!unixUser.MatchString(e.User) || e.User == "root"):
			return fmt.Errorf("tenancy: namespace %s: user %q is not an unprivileged Unix user name", ns, e.User)
		case strings.ContainsAny(e.Account, ",\x00\n") || len(e.Account) > 64:
			return fmt.Errorf("tenancy: namespace %s: account %q is not a Slurm account name", ns, e.Account)
		}
	}
	return nil
}

func (t Tenancy) mapped() bool { return t.Mode == TenancyMapped }

func (t Tenancy) names() []string {
	ns := make([]string, 0, len(t.Namespaces))
	for n := range t.Namespaces {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// For is the tenant a namespace's pods run as; a namespace that may not
// run pods here is an *InvalidPodError naming the namespaces that may.
func (t Tenancy) For(namespace string) (Tenant, error) {
	e, ok := t.Namespaces[namespace]
	if ok || (!t.mapped() && len(t.Namespaces) == 0) {
		return e, nil
	}
	what := "mapped to a Slurm user"
	if !t.mapped() {
		what = "allowed"
	}
	return Tenant{}, invalid(ReasonNamespaceNotAllowed,
		"namespace %s may not run pods on this node: only namespaces %s here are (%s); ask the cluster's administrators to add it",
		namespace, what, strings.Join(t.names(), ", "))
}

// Users lists the distinct mapped users (none in single mode).
func (t Tenancy) Users() []string {
	seen := map[string]bool{}
	var out []string
	for _, ns := range t.names() {
		if u := t.Namespaces[ns].User; u != "" && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

// Summary says in one line what the tenancy means, for the start-up log.
func (t Tenancy) Summary() string {
	if t.mapped() {
		return fmt.Sprintf("mapped: each of %d namespaces runs as its own Slurm user", len(t.Namespaces))
	}
	which := "every namespace"
	if len(t.Namespaces) > 0 {
		which = "namespaces " + strings.Join(t.names(), ", ")
	}
	return "single: " + which + " run as the slurmrestd token's user and can read, change and cancel each other's jobs and files"
}

// owns tells whether a job found in Slurm may belong to a pod of tenant:
// in mapped mode it must run as the tenant's user, so another user's job
// with a copied comment is never adopted.
func (te Tenant) owns(j slurmclient.Job) bool {
	return te.User == "" || j.UserName == te.User
}

// ownJobs keeps the jobs that are this node's pods' own: the comment names
// this node, the job runs as the namespace's tenant, and of several jobs
// naming one pod only the first submitted counts. Anyone who can submit
// can copy a comment, but only after the provider's own job showed it,
// so a copy always has the higher job ID. The rest are logged as forged.
func ownJobs(ctx context.Context, node string, t Tenancy, jobs []slurmclient.Job) []slurmclient.Job {
	first := map[string]int{} // comment -> index in out
	var out []slurmclient.Job
	for _, j := range jobs {
		ns, name, _, ok := ParseJobComment(node, j.Comment)
		if !ok {
			continue
		}
		logger := log.G(ctx).WithField("job", j.ID).WithField("pod", ns+"/"+name).WithField("user", j.UserName)
		te, err := t.For(ns)
		if err != nil && t.mapped() {
			logger.Warn("ignoring a job for a namespace that is not mapped to a Slurm user")
			continue
		}
		if !te.owns(j) {
			logger.WithField("tenant", te.User).Warn("ignoring a forged job: it names a pod of this node but runs as another user")
			continue
		}
		i, seen := first[j.Comment]
		switch {
		case !seen:
			first[j.Comment] = len(out)
			out = append(out, j)
		case j.ID < out[i].ID:
			logger.WithField("job", out[i].ID).Warn("ignoring a forged job: a later job copied this pod's comment")
			out[i] = j
		default:
			logger.WithField("first", out[i].ID).Warn("ignoring a forged job: a later job copied this pod's comment")
		}
	}
	return out
}

// slurmAs is the client that acts for a namespace's tenant: the node's own
// in single mode, and for what is left of a namespace no longer mapped
// (CreatePod refuses those before any submit). If a tenant's client cannot
// be made, that is an error, never the node's client instead: the node's
// token may act as anyone.
func (p *Provider) slurmAs(namespace string) (slurmclient.Interface, error) {
	te, err := p.cfg.Tenancy.For(namespace)
	if err != nil || te.User == "" || p.cfg.TenantClient == nil {
		return p.slurm, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[te.User]; ok {
		return c, nil
	}
	c, err := p.cfg.TenantClient(te)
	if err != nil {
		return nil, fmt.Errorf("the Slurm client for user %s: %w", te.User, err)
	}
	p.clients[te.User] = c
	return c, nil
}

// cancelAs cancels a job as the namespace's tenant; a job Slurm no longer
// knows is no error.
func (p *Provider) cancelAs(ctx context.Context, namespace string, id slurmclient.JobID) error {
	slurm, err := p.slurmAs(namespace)
	if err == nil {
		err = slurm.Cancel(ctx, id)
	}
	if errors.Is(err, slurmclient.ErrNotFound) {
		return nil
	}
	return err
}
