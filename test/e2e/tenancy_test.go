package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/slurmclient"
	"github.com/slurmkube/slurm-vk/test/labenv"
)

const tenancyNode = "slurm-e2e-tenancy"

// TestE2ETenancy: a node in mapped tenancy, namespace e2e-bank on the
// lab's second job user and e2e-evil on the first. From inside its job, a
// pod of e2e-evil tries to read, change, rename and cancel what belongs to
// a pod of e2e-bank; every attempt fails, kubectl logs of each pod shows
// its own output, and a pod of an unmapped namespace fails with nothing
// submitted.
func TestE2ETenancy(t *testing.T) {
	c := setupSlurmSide(t)
	c.clearNode(tenancyNode)
	lab := c.lab
	for _, ns := range []string{"e2e-bank", "e2e-evil", "e2e-stranger"} {
		if out, err := c.kubectl("create", "namespace", ns); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
			t.Fatalf("%s: %v", out, err)
		}
		ns := ns
		t.Cleanup(func() { c.kubectl("delete", "namespace", ns, "--wait=false") })
	}
	c.kubectl("-n", "e2e-bank", "delete", "secret", "vault-db", "--ignore-not-found")
	c.must("-n", "e2e-bank", "create", "secret", "generic", "vault-db", "--from-literal=password=hunter2-bank-only")

	cfg := filepath.Join(c.bin, "tenancy.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`tenancy:
  mode: mapped
  namespaces:
    e2e-bank: {user: %s}
    e2e-evil: {user: %s}
`, lab.User2, lab.User)), 0o644)
	start(t, c.bin, "slurm-vk", "-config", cfg, "-kubeconfig", c.cp["CONTROLPLANE_PROVIDER_KUBECONFIG"], "-node-name", tenancyNode,
		"-partition", lab.Partition, "-slurmrestd-url", lab.URL, "-slurm-token-file", lab.AdminTokenFile,
		"-fetch-url", "http://"+c.fetchdAddr, "-fetch-token-file", c.tokenFile, "-shared-root", c.root, "-runtime", "none",
		"-listen", "127.0.0.1:10250", "-node-ip", "127.0.0.1", "-tls-cert", c.cp["CONTROLPLANE_KUBELET_CERT"],
		"-tls-key", c.cp["CONTROLPLANE_KUBELET_KEY"], "-client-ca", c.cp["CONTROLPLANE_CA"], "-status-interval", "1s")
	c.waitReady(tenancyNode)
	admin, err := slurmclient.New(slurmclient.Config{URL: lab.URL, TokenFile: lab.AdminTokenFile})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	phase := func(ns, name string) string {
		out, _ := c.kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}")
		return out
	}

	// A namespace that is not mapped: the pod fails, with the reason.
	stranger := fmt.Sprintf("stranger-%d", time.Now().UnixNano()%1000000)
	c.apply(strings.Replace(podOn(tenancyNode, stranger, "echo should-not-run"), "metadata:\n", "metadata:\n  namespace: e2e-stranger\n", 1))
	c.waitFor("the unmapped namespace's pod to fail", 2*time.Minute, func() bool { return phase("e2e-stranger", stranger) == "Failed" })
	if reason := c.must("-n", "e2e-stranger", "get", "pod", stranger, "-o", "jsonpath={.status.reason}"); reason != "NamespaceNotAllowed" {
		t.Errorf("unmapped namespace: reason %q, want NamespaceNotAllowed", reason)
	}

	// The victim: a Secret in env and as a volume, output, then it waits.
	gate := filepath.Join(c.root, "gate-tenancy")
	victim := fmt.Sprintf("vault-%d", time.Now().UnixNano()%1000000)
	c.apply(strings.Replace(podWith(tenancyNode, victim, fmt.Sprintf(`  terminationGracePeriodSeconds: 2
  volumes:
  - name: db
    secret: {secretName: vault-db}
  containers:
  - name: main
    image: none
    env:
    - name: DB_PASSWORD
      valueFrom: {secretKeyRef: {name: vault-db, key: password}}
    volumeMounts:
    - {name: db, mountPath: /etc/db}
    command: ["/bin/sh", "-c", %q]
`, `echo "balance 100 as $(id -un)"; while [ ! -e `+gate+` ]; do sleep 0.2; done; echo done`)), "metadata:\n", "metadata:\n  namespace: e2e-bank\n", 1))
	c.waitFor("the bank pod to run", 2*time.Minute, func() bool { return phase("e2e-bank", victim) == "Running" })
	uid := c.must("-n", "e2e-bank", "get", "pod", victim, "-o", "jsonpath={.metadata.uid}")
	jobs, err := admin.Jobs(ctx, slurmclient.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var job slurmclient.Job
	for _, j := range jobs {
		if strings.HasSuffix(j.Comment, ":"+uid) {
			job = j
		}
	}
	if job.ID == 0 || job.UserName != lab.User2 {
		t.Fatalf("the bank pod's job %+v: want one, run as %s", job, lab.User2)
	}
	// The Secret reaches the job as a file it reads, never as a value in
	// its script (Slurm keeps that in its state directory; virtual-kubelet
	// resolving env for the provider put Secrets there).
	script, err := os.ReadFile(filepath.Join(lab.Rootfs, "var/lib/slurm/slurmctld", fmt.Sprintf("hash.%d", job.ID%10), fmt.Sprintf("job.%d", job.ID), "script"))
	if err != nil {
		t.Fatalf("the bank pod's job script in Slurm's state: %v", err)
	}
	if strings.Contains(string(script), "hunter2-bank-only") {
		t.Error("the bank pod's Secret is in its job script, in Slurm's state directory")
	}
	victimDir := filepath.Join(c.root, "e2e-bank_"+victim+"_"+uid)
	var secret string
	filepath.WalkDir(victimDir, func(path string, d fs.DirEntry, err error) error {
		if b, rerr := os.ReadFile(path); err == nil && !d.IsDir() && rerr == nil && strings.Contains(string(b), "hunter2-bank-only") {
			secret, _ = filepath.Rel(victimDir, path)
		}
		return nil
	})
	if secret == "" {
		t.Fatal("the bank pod's Secret is not in its directory: nothing to steal, the test would prove nothing")
	}

	thief := fmt.Sprintf("thief-%d", time.Now().UnixNano()%1000000)
	c.apply(strings.Replace(podWith(tenancyNode, thief, fmt.Sprintf(`  containers:
  - name: main
    image: none
    env:
    - {name: SHARED, value: %q}
    - {name: VICTIM, value: %q}
    - {name: SECRET, value: %q}
    - {name: VICTIM_JOB, value: "%d"}
    - {name: VICTIM_COMMENT, value: %q}
    command: ["/bin/sh", "-c", %q]
`, c.root, victimDir, secret, job.ID, job.Comment, labenv.TenancyAttack)), "metadata:\n", "metadata:\n  namespace: e2e-evil\n", 1))
	c.waitFor("the thief to finish", 2*time.Minute, func() bool { return phase("e2e-evil", thief) == "Succeeded" })
	out := c.must("-n", "e2e-evil", "logs", thief)
	res := labenv.ParseAttack(out)
	if res.Forged != 0 {
		t.Cleanup(func() { admin.Cancel(context.Background(), slurmclient.JobID(res.Forged)) })
	}
	if !res.Done {
		t.Fatalf("the attack did not run to its end:\n%s", out)
	}
	for _, what := range res.Did {
		t.Errorf("a pod of e2e-evil could %s of e2e-bank", what)
	}
	if res.Refused != labenv.TenancyAttempts {
		t.Errorf("%d attempts refused, want %d:\n%s", res.Refused, labenv.TenancyAttempts, out)
	}

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the bank pod to succeed", 2*time.Minute, func() bool { return phase("e2e-bank", victim) == "Succeeded" })
	if got, want := c.must("-n", "e2e-bank", "logs", victim), "balance 100 as "+lab.User2+"\ndone"; got != want {
		t.Errorf("kubectl logs of the bank pod: %q, want %q", got, want)
	}
	j, err := admin.Job(ctx, job.ID)
	if err != nil || j.State != slurmclient.StateCompleted {
		t.Errorf("the bank pod's job: %+v, %v; want COMPLETED", j, err)
	}
}
