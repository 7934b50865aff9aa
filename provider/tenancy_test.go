package provider

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

func TestTenancyValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		t       Tenancy
		wantErr string
	}{
		{name: "default is single, all namespaces", t: Tenancy{}},
		{name: "single with an allow-list", t: Tenancy{Namespaces: map[string]Tenant{"a": {}, "b": {Account: "x"}}}},
		{name: "mapped", t: Tenancy{Mode: TenancyMapped, Namespaces: map[string]Tenant{"a": {User: "alice"}, "b": {User: "bob", TokenFile: "/t"}}}},
		{name: "unknown mode", t: Tenancy{Mode: "shared"}, wantErr: `mode "shared"`},
		{name: "mapped without namespaces", t: Tenancy{Mode: TenancyMapped}, wantErr: "at least one namespace"},
		{name: "mapped without a user", t: Tenancy{Mode: TenancyMapped, Namespaces: map[string]Tenant{"a": {Account: "x"}}}, wantErr: "namespace a: a user is required"},
		{name: "root", t: Tenancy{Mode: TenancyMapped, Namespaces: map[string]Tenant{"a": {User: "root"}}}, wantErr: "not an unprivileged"},
		{name: "hostile user", t: Tenancy{Mode: TenancyMapped, Namespaces: map[string]Tenant{"a": {User: "x\nX-Evil: 1"}}}, wantErr: "not an unprivileged"},
		{name: "user in single mode", t: Tenancy{Namespaces: map[string]Tenant{"a": {User: "alice"}}}, wantErr: "need mode"},
		{name: "bad namespace", t: Tenancy{Namespaces: map[string]Tenant{"A_b": {}}}, wantErr: "not a namespace name"},
		{name: "bad account", t: Tenancy{Namespaces: map[string]Tenant{"a": {Account: "x,y"}}}, wantErr: "account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.t.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestTenancyFor(t *testing.T) {
	mapped := Tenancy{Mode: TenancyMapped, Namespaces: map[string]Tenant{"bank": {User: "banker", Account: "fin"}}}
	if te, err := mapped.For("bank"); err != nil || te.User != "banker" || te.Account != "fin" {
		t.Errorf("For(bank) = %+v, %v", te, err)
	}
	var bad *InvalidPodError
	if _, err := mapped.For("evil"); !errors.As(err, &bad) || bad.Reason != ReasonNamespaceNotAllowed || !strings.Contains(bad.Message, "bank") {
		t.Errorf("For(evil) = %v, want %s naming the mapped namespaces", err, ReasonNamespaceNotAllowed)
	}
	if te, err := (Tenancy{}).For("anything"); err != nil || te.User != "" {
		t.Errorf("single mode, no allow-list: For = %+v, %v", te, err)
	}
	if _, err := (Tenancy{Namespaces: map[string]Tenant{"a": {}}}).For("b"); !errors.As(err, &bad) {
		t.Errorf("single mode allow-list: For(b) = %v, want refused", err)
	}
}

// TestOwnJobs: of the jobs naming this node's pods, only the first job per
// pod, run as the namespace's user, counts; copies of a comment are not.
func TestOwnJobs(t *testing.T) {
	tn := Tenancy{Mode: TenancyMapped, Namespaces: map[string]Tenant{"bank": {User: "banker"}, "evil": {User: "mallory"}}}
	c := func(ns, uid string) string { return "slurm-vk:n:" + ns + "/p:" + uid }
	jobs := []slurmclient.Job{
		{ID: 12, Comment: c("bank", "u1"), UserName: "banker"},  // a copy by the same user: later
		{ID: 10, Comment: c("bank", "u1"), UserName: "banker"},  // the real one
		{ID: 11, Comment: c("bank", "u1"), UserName: "mallory"}, // another user's copy
		{ID: 9, Comment: c("bank", "u2"), UserName: "mallory"},  // another user's copy, no real job
		{ID: 20, Comment: c("evil", "u3"), UserName: "mallory"},
		{ID: 21, Comment: c("unmapped", "u4"), UserName: "banker"},
		{ID: 22, Comment: "slurm-vk:other-node:bank/p:u5", UserName: "banker"},
		{ID: 23, Comment: "a user's own job", UserName: "banker"},
	}
	var got []slurmclient.JobID
	for _, j := range ownJobs(context.Background(), "n", tn, jobs) {
		got = append(got, j.ID)
	}
	if len(got) != 2 || got[0] != 10 || got[1] != 20 {
		t.Errorf("own jobs %v, want [10 20]", got)
	}
	// Single mode cannot tell users apart; the first job still wins.
	got = nil
	for _, j := range ownJobs(context.Background(), "n", Tenancy{}, jobs[:3]) {
		got = append(got, j.ID)
	}
	if len(got) != 1 || got[0] != 10 {
		t.Errorf("single mode: own jobs %v, want [10]", got)
	}
}

// userSlurm is fakeSlurm acting for one user: the jobs it submits are
// that user's.
type userSlurm struct {
	*fakeSlurm
	user string
}

func (u userSlurm) Submit(ctx context.Context, s slurmclient.JobSpec) (slurmclient.JobID, error) {
	id, err := u.fakeSlurm.Submit(ctx, s)
	if err == nil {
		u.mu.Lock()
		u.jobs[id].UserName = u.user
		u.mu.Unlock()
	}
	return id, err
}

// ownerFiles records the owner each pod directory was created for.
type ownerFiles struct {
	noFiles
	mu      sync.Mutex
	created map[string]string // pod dir -> user
}

func (o *ownerFiles) CreatePod(_ context.Context, pod layout.Pod, user string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.created[pod.Dir()] = user
	return nil
}

func tenantPod(ns, uid string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", UID: types.UID(uid)},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Command: []string{"true"}}}}}
}

// TestMappedTenancy: a mapped namespace's pod is staged for its user and
// submitted through its user's client with the namespace's account; an
// unmapped namespace's pod fails before anything is written or submitted.
func TestMappedTenancy(t *testing.T) {
	f := newFakeSlurm()
	files := &ownerFiles{created: map[string]string{}}
	var asked []string
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone},
		Tenancy: Tenancy{Mode: TenancyMapped, Namespaces: map[string]Tenant{"bank": {User: "banker", Account: "fin"}}},
		TenantClient: func(te Tenant) (slurmclient.Interface, error) {
			asked = append(asked, te.User)
			return userSlurm{f, te.User}, nil
		}}, f, files, lookups)
	ctx := context.Background()

	if err := p.CreatePod(ctx, tenantPod("evil", "u-evil")); err != nil {
		t.Fatal(err)
	}
	st, _ := p.get("evil", "p")
	if st == nil || st.pod.Status.Phase != corev1.PodFailed || st.pod.Status.Reason != ReasonNamespaceNotAllowed {
		t.Errorf("unmapped namespace: status %+v, want Failed/%s", st, ReasonNamespaceNotAllowed)
	}
	if len(files.created) != 0 || f.count("submit") != 0 {
		t.Errorf("unmapped namespace: directories %v, %d submits; want none", files.created, f.count("submit"))
	}

	bank := tenantPod("bank", "u-bank")
	if err := p.CreatePod(ctx, bank); err != nil {
		t.Fatal(err)
	}
	if u := files.created[PodRef(bank).Dir()]; u != "banker" {
		t.Errorf("pod directory created for %q, want banker", u)
	}
	st, _ = p.get("bank", "p")
	j, _ := f.Job(ctx, st.job)
	if j == nil || j.UserName != "banker" {
		t.Errorf("job %+v: want it submitted as banker", j)
	}
	if len(asked) != 1 || asked[0] != "banker" {
		t.Errorf("tenant clients made for %v, want [banker] once", asked)
	}
	// The cancel of a deleted pod goes through the tenant's client too (a
	// second pod reuses the client).
	if err := p.DeletePod(ctx, bank); err != nil {
		t.Fatal(err)
	}
	if len(f.cancelled) != 1 || f.cancelled[0] != st.job || len(asked) != 1 {
		t.Errorf("cancelled %v with clients %v; want job %d through banker's one client", f.cancelled, asked, st.job)
	}
}

// TestRecoverIgnoresForgedJobs: after a restart, a job submitted by
// another user with a copied comment is not adopted, nor cancelled, and
// the pod re-attaches to its own job.
func TestRecoverIgnoresForgedJobs(t *testing.T) {
	f := newFakeSlurm()
	cfg := Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone},
		Tenancy:      Tenancy{Mode: TenancyMapped, Namespaces: map[string]Tenant{"bank": {User: "banker"}, "evil": {User: "mallory"}}},
		TenantClient: func(te Tenant) (slurmclient.Interface, error) { return userSlurm{f, te.User}, nil }}
	first := New(cfg, f, noFiles{}, lookups)
	ctx := context.Background()
	bank := tenantPod("bank", "u-bank")
	if err := first.CreatePod(ctx, bank); err != nil {
		t.Fatal(err)
	}
	st, _ := first.get("bank", "p")
	real := st.job
	// mallory, from a job of her own, copies the comment: twice, so that
	// the copy has both a higher ID and, by the old rule, would have won.
	comment := JobComment("n", bank)
	forged1, _ := userSlurm{f, "mallory"}.Submit(ctx, slurmclient.JobSpec{Comment: comment})
	forged2, _ := userSlurm{f, "banker"}.Submit(ctx, slurmclient.JobSpec{Comment: comment})

	restarted := New(cfg, f, noFiles{}, lookups)
	if err := restarted.Recover(ctx, func(uid string) bool { return uid == "u-bank" }); err != nil {
		t.Fatal(err)
	}
	bank.Status.StartTime = &metav1.Time{}
	if err := restarted.CreatePod(ctx, bank); err != nil {
		t.Fatal(err)
	}
	st, _ = restarted.get("bank", "p")
	if st == nil || st.job != real {
		t.Fatalf("re-attached to %+v, want the real job %d (forged %d, %d)", st, real, forged1, forged2)
	}
	if err := restarted.DeletePod(ctx, bank); err != nil {
		t.Fatal(err)
	}
	if len(f.cancelled) != 1 || f.cancelled[0] != real {
		t.Errorf("delete cancelled %v, want the real job %d only", f.cancelled, real)
	}
}

// TestForgedCommentOfAnotherNamespace: a tenant names another tenant's
// pod UID under its own namespace (its own user, so the user check
// passes). Once the real job is forgotten by Slurm, a restarted provider
// still does not take that job for the other tenant's pod.
func TestForgedCommentOfAnotherNamespace(t *testing.T) {
	f := newFakeSlurm()
	cfg := Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone},
		Tenancy:      Tenancy{Mode: TenancyMapped, Namespaces: map[string]Tenant{"bank": {User: "banker"}, "evil": {User: "mallory"}}},
		TenantClient: func(te Tenant) (slurmclient.Interface, error) { return userSlurm{f, te.User}, nil }}
	ctx := context.Background()
	bank := tenantPod("bank", "u-bank")
	first := New(cfg, f, noFiles{}, lookups)
	if err := first.CreatePod(ctx, bank); err != nil {
		t.Fatal(err)
	}
	st, _ := first.get("bank", "p")
	forged, _ := userSlurm{f, "mallory"}.Submit(ctx, slurmclient.JobSpec{Comment: "slurm-vk:n:evil/x:u-bank"})
	f.mu.Lock()
	delete(f.jobs, st.job) // MinJobAge passed while the provider was away
	f.mu.Unlock()

	restarted := New(cfg, f, noFiles{}, lookups)
	if err := restarted.Recover(ctx, func(uid string) bool { return uid == "u-bank" }); err != nil {
		t.Fatal(err)
	}
	bank.Status.StartTime = &metav1.Time{}
	restarted.CreatePod(ctx, bank)
	if got, _ := restarted.get("bank", "p"); got != nil && got.job == forged {
		t.Fatalf("the bank pod was attached to evil's job %d", forged)
	}
}
