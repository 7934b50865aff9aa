// Package labenv loads the Slurm lab's env file (written by
// hack/lab/lab-up.sh) for integration tests.
//
// Tests find the file through SLURM_LAB_ENV. Without it they skip with a
// message saying how to bring the lab up; with SLURM_LAB_REQUIRED=1 (set by
// `make test`) a missing lab is a failure, so CI can never pass by skipping.
package labenv

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Lab describes one running lab cluster.
type Lab struct {
	Suite     string // Debian suite: trixie or sid
	Version   string // Slurm version, e.g. 24.11.5
	URL       string // slurmrestd base URL
	User      string // job user the token belongs to
	UID       int    // the job user's uid, which owns Shared
	TokenFile string // JWT for User
	// User2 (UID2) is a second job user, for tenancy tests; AdminTokenFile
	// holds SlurmUser's JWT, which may act for either (X-SLURM-USER-NAME).
	User2          string
	UID2           int
	AdminTokenFile string
	Shared         string // directory seen at the same path by jobs and the host
	Partition      string
	CPUs           int // CPUs of the largest node (c1)
	// Nodes are the lab's node names, NodeCPUs their CPUs, and GPUs the
	// GPUs of the last (gres, numbers only).
	Nodes     []string
	NodeCPUs  []int
	TotalCPUs int
	GPUs      int
	Rootfs    string
	Runtimes  []string // container runtimes jobs can use: none, podman
	// Registry serves the lab's test images anonymously; RegistryPrivate
	// the same images to RegistryUser with the password in
	// RegistryPasswordFile only (host:port, plain HTTP, on loopback).
	Registry, RegistryPrivate          string
	RegistryUser, RegistryPasswordFile string
}

// RequireRuntime skips the test (fails it when SLURM_LAB_REQUIRED=1) if the
// lab's jobs cannot use the runtime or it has no registry.
func (l *Lab) RequireRuntime(t testing.TB, runtime string) {
	t.Helper()
	for _, r := range l.Runtimes {
		if r == runtime && l.Registry != "" {
			return
		}
	}
	if os.Getenv("SLURM_LAB_REQUIRED") == "1" {
		t.Fatalf("SLURM_LAB_REQUIRED=1 but the lab has no runtime %s or no registry (SLURM_LAB_RUNTIMES=%v)", runtime, l.Runtimes)
	}
	t.Skipf("the lab has no runtime %s", runtime)
}

// RegistryPassword reads the private registry's password.
func (l *Lab) RegistryPassword() (string, error) {
	b, err := os.ReadFile(l.RegistryPasswordFile)
	return strings.TrimSpace(string(b)), err
}

// Token reads the current JWT from TokenFile.
func (l *Lab) Token() (string, error) {
	b, err := os.ReadFile(l.TokenFile)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Load parses an env file of KEY=VALUE lines.
func Load(path string) (*Lab, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: malformed line %q", path, line)
		}
		kv[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	l := &Lab{
		Suite:     kv["SLURM_LAB_SUITE"],
		Version:   kv["SLURM_LAB_VERSION"],
		URL:       kv["SLURM_LAB_URL"],
		User:      kv["SLURM_LAB_USER"],
		TokenFile: kv["SLURM_LAB_TOKEN_FILE"],
		User2:     kv["SLURM_LAB_USER2"],

		AdminTokenFile: kv["SLURM_LAB_ADMIN_TOKEN_FILE"],
		Shared:         kv["SLURM_LAB_SHARED"],
		Partition:      kv["SLURM_LAB_PARTITION"],
		Rootfs:         kv["SLURM_LAB_ROOTFS"],
		Runtimes:       strings.Split(kv["SLURM_LAB_RUNTIMES"], ","),

		Registry:             kv["SLURM_LAB_REGISTRY"],
		RegistryPrivate:      kv["SLURM_LAB_REGISTRY_PRIVATE"],
		RegistryUser:         kv["SLURM_LAB_REGISTRY_USER"],
		RegistryPasswordFile: kv["SLURM_LAB_REGISTRY_PASSWORD_FILE"],
	}
	for k, dst := range map[string]*int{"SLURM_LAB_UID": &l.UID, "SLURM_LAB_UID2": &l.UID2, "SLURM_LAB_CPUS": &l.CPUs, "SLURM_LAB_GPUS": &l.GPUs} {
		if *dst, err = strconv.Atoi(kv[k]); err != nil {
			return nil, fmt.Errorf("%s: %s: %w (an older lab: run make lab-up again)", path, k, err)
		}
	}
	l.Nodes = strings.Split(kv["SLURM_LAB_NODES"], ",")
	for _, c := range strings.Split(kv["SLURM_LAB_NODE_CPUS"], ",") {
		n, err := strconv.Atoi(c)
		if err != nil {
			return nil, fmt.Errorf("%s: SLURM_LAB_NODE_CPUS: %w", path, err)
		}
		l.NodeCPUs = append(l.NodeCPUs, n)
		l.TotalCPUs += n
	}
	if len(l.Nodes) != len(l.NodeCPUs) {
		return nil, fmt.Errorf("%s: SLURM_LAB_NODES and SLURM_LAB_NODE_CPUS differ in length", path)
	}
	if l.URL == "" || l.User == "" || l.TokenFile == "" || l.Shared == "" || l.User2 == "" || l.AdminTokenFile == "" {
		return nil, fmt.Errorf("%s: missing SLURM_LAB_URL, _USER, _TOKEN_FILE, _SHARED, _USER2 or _ADMIN_TOKEN_FILE (an older lab: run make lab-up again)", path)
	}
	return l, nil
}

// Require returns the lab named by SLURM_LAB_ENV, or skips the test (fails
// it when SLURM_LAB_REQUIRED=1).
func Require(t testing.TB) *Lab {
	t.Helper()
	path := os.Getenv("SLURM_LAB_ENV")
	if path == "" {
		if os.Getenv("SLURM_LAB_REQUIRED") == "1" {
			t.Fatal("SLURM_LAB_REQUIRED=1 but SLURM_LAB_ENV is not set")
		}
		t.Skip("no Slurm lab: run `make lab-up` and set SLURM_LAB_ENV=.cache/lab/trixie/lab.env (or use `make test`)")
	}
	l, err := Load(path)
	if err != nil {
		t.Fatalf("load lab env: %v", err)
	}
	return l
}
