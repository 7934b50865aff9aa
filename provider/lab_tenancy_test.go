package provider

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/server"
	"github.com/slurmkube/slurm-vk/slurmclient"
	"github.com/slurmkube/slurm-vk/test/labenv"
)

// TestLabTenancy: two namespaces mapped to the lab's two job users. A pod
// of one (labenv.TenancyAttack, from inside its job on the compute node
// with runtime none: the strongest place a pod can be) cannot read, change, rename or cancel anything of the other's,
// its forged job is not adopted after a restart, and both pods' logs and
// statuses are their own.
func TestLabTenancy(t *testing.T) {
	r := newLabRig(t)
	lab := r.lab
	// The endpoint's root as a site sets it up: root's, 0711.
	if err := os.Chown(r.cfg.SharedRoot, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(r.cfg.SharedRoot, 0o711); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(t.TempDir(), "fetch-token")
	os.WriteFile(tok, []byte("tenancy-token"), 0o600)
	url := fetchtest.Start(t, server.Config{Root: r.cfg.SharedRoot, TokenFile: tok, PollInterval: 100 * time.Millisecond,
		Users: map[string]server.Owner{lab.User: {UID: lab.UID, GID: lab.UID}, lab.User2: {UID: lab.UID2, GID: lab.UID2}}})
	files, err := fetchclient.New(fetchclient.Config{URL: url, TokenFile: tok, Wait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r.files = files
	// The node's client holds SlurmUser's token and acts for each tenant.
	admin, err := slurmclient.New(slurmclient.Config{URL: lab.URL, TokenFile: lab.AdminTokenFile})
	if err != nil {
		t.Fatal(err)
	}
	r.slurm = admin
	r.cfg.Tenancy = Tenancy{Mode: TenancyMapped, Namespaces: map[string]Tenant{"bank": {User: lab.User2}, "evil": {User: lab.User}}}
	r.cfg.TenantClient = func(te Tenant) (slurmclient.Interface, error) {
		return slurmclient.New(slurmclient.Config{URL: lab.URL, TokenFile: lab.AdminTokenFile, User: te.User})
	}
	p := r.start()
	ctx := r.ctx(t)

	gate := filepath.Join(r.cfg.SharedRoot, "gate") // seen by jobs, written by root only
	victim := labPod("vault", corev1.Container{Name: "main", Command: []string{"/bin/sh", "-c",
		`echo "balance 100 as $(id -un)"; while [ ! -e "$GATE" ]; do sleep 0.2; done; echo done`},
		Env: []corev1.EnvVar{{Name: "GATE", Value: gate},
			{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}}}})
	victim.Namespace = "bank"
	if err := p.CreatePod(ctx, victim); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, victim, "running", phase(corev1.PodRunning))
	st, _ := p.get("bank", "vault")
	job, err := admin.Job(ctx, st.job)
	if err != nil {
		t.Fatal(err)
	}
	if job.UserName != lab.User2 {
		t.Fatalf("the bank pod's job %d runs as %q, want %s", job.ID, job.UserName, lab.User2)
	}
	victimDir := PodRef(victim).Path(r.cfg.SharedRoot)
	var secret string
	filepath.WalkDir(filepath.Join(victimDir, layout.StagedDir), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && secret == "" {
			b, _ := os.ReadFile(path)
			if strings.Contains(string(b), "hunter2") {
				secret, _ = filepath.Rel(victimDir, path)
			}
		}
		return nil
	})
	if secret == "" {
		t.Fatal("the bank pod's Secret is not staged: nothing to steal, the test would prove nothing")
	}

	thief := labPod("thief", sh("main", labenv.TenancyAttack))
	thief.Namespace = "evil"
	thief.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "SHARED", Value: r.cfg.SharedRoot}, {Name: "VICTIM", Value: victimDir},
		{Name: "SECRET", Value: secret}, {Name: "VICTIM_JOB", Value: strconv.Itoa(int(st.job))},
		{Name: "VICTIM_COMMENT", Value: JobComment(r.cfg.NodeName, victim)}}
	if err := p.CreatePod(ctx, thief); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, thief, "succeeded", phase(corev1.PodSucceeded))
	out := logsOf(t, p, thief, "main", apiOpts())
	res := labenv.ParseAttack(out)
	if !res.Done || res.Forged == 0 {
		t.Fatalf("the attack did not run to its end, or its own job (sbatch) failed; the test would prove nothing:\n%s", out)
	}
	for _, what := range res.Did {
		t.Errorf("a pod of namespace evil could %s of namespace bank", what)
	}
	if res.Refused != labenv.TenancyAttempts {
		t.Errorf("%d attempts refused, want %d:\n%s", res.Refused, labenv.TenancyAttempts, out)
	}
	forged := slurmclient.JobID(res.Forged)
	t.Cleanup(func() { admin.Cancel(context.Background(), forged) })

	// The forged job is not the bank pod's after a restart: the restarted
	// provider re-attaches the pod to its real job.
	restarted := New(r.cfg, r.slurm, r.files, r.look)
	if err := restarted.Recover(ctx, func(uid string) bool { return uid == string(victim.UID) }); err != nil {
		t.Fatal(err)
	}
	again := victim.DeepCopy()
	again.Status.StartTime = &metav1.Time{Time: time.Now()}
	if err := restarted.CreatePod(ctx, again); err != nil {
		t.Fatal(err)
	}
	if got, _ := restarted.get("bank", "vault"); got == nil || got.job != st.job {
		t.Errorf("after a restart the bank pod follows %+v, want its job %d (the forged one is %d)", got, st.job, forged)
	}
	if fj, err := admin.Job(ctx, forged); err != nil || fj.State.Terminal() {
		t.Errorf("the forged job %d: %+v, %v; want it left alone (it is evil's own job)", forged, fj, err)
	}

	// The victim runs on, untouched, and its log is its own.
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	done := r.waitFor(t, victim, "succeeded", phase(corev1.PodSucceeded))
	if cs := done.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.ExitCode != 0 {
		t.Errorf("the bank pod ended %+v", cs)
	}
	if got, want := logsOf(t, p, victim, "main", apiOpts()), "balance 100 as "+lab.User2+"\ndone\n"; got != want {
		t.Errorf("the bank pod's log is %q, want %q", got, want)
	}
	// Its job is over: its Secret goes now, its output stays.
	staged := filepath.Join(victimDir, layout.StagedDir)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(staged); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bank pod's staged Secret outlived its job")
		}
	}
	if _, err := os.Stat(filepath.Join(victimDir, "main", "0.log")); err != nil {
		t.Errorf("the bank pod's output went with its Secret: %v", err)
	}
	if strings.Contains(out, "balance") {
		t.Errorf("the thief's log shows the bank pod's output:\n%s", out)
	}
}
