package e2e

import (
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/slurmkube/slurm-vk/internal/testenv"
)

// conformanceSpec is one entry of test/conformance/specs.yaml.
type conformanceSpec struct {
	Spec   string `json:"spec"`
	Expect string `json:"expect"`
	Reason string `json:"reason,omitempty"`
	Quick  bool   `json:"quick,omitempty"`
}

const (
	expectPass = "pass"
	expectNA   = "not applicable"
)

// readSpecs reads the checked-in list and checks it: every entry has a
// known expectation, and one not applicable says why.
func readSpecs(path string) ([]conformanceSpec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var specs []conformanceSpec
	if err := yaml.UnmarshalStrict(b, &specs); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	seen := map[string]bool{}
	for _, s := range specs {
		switch {
		case s.Spec == "":
			return nil, fmt.Errorf("%s: an entry without a spec", path)
		case seen[s.Spec]:
			return nil, fmt.Errorf("%s: %q listed twice", path, s.Spec)
		case s.Expect != expectPass && s.Expect != expectNA:
			return nil, fmt.Errorf("%s: %q: expect %q, want %q or %q", path, s.Spec, s.Expect, expectPass, expectNA)
		case s.Expect == expectNA && strings.TrimSpace(s.Reason) == "":
			return nil, fmt.Errorf("%s: %q is not applicable without a reason", path, s.Spec)
		case s.Expect == expectNA && s.Quick:
			return nil, fmt.Errorf("%s: %q is not applicable, so not quick", path, s.Spec)
		}
		seen[s.Spec] = true
	}
	return specs, nil
}

// TestConformanceList: the list is well formed (no network, no cluster).
func TestConformanceList(t *testing.T) {
	specs, err := readSpecs("../conformance/specs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) < 100 {
		t.Errorf("%d specs: the list lost entries", len(specs))
	}
}

// specName is a JUnit test case's spec, as the list names it: Ginkgo
// puts the node's type first ("[It] [sig-node] ...").
func specName(junit string) string { return strings.TrimPrefix(junit, "[It] ") }

// junitSuites is the e2e suite's JUnit report, the parts read here.
type junitSuites struct {
	Suites []struct {
		Cases []struct {
			Name    string  `xml:"name,attr"`
			Time    float64 `xml:"time,attr"`
			Failure *struct {
				Message string `xml:"message,attr"`
				Text    string `xml:",chardata"`
			} `xml:"failure"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// TestE2EConformance runs upstream Kubernetes' own e2e specs (the list in
// test/conformance/specs.yaml) against a Slurm virtual node: podman, the
// exec agent, and no provider taint, as the suite's pods do not tolerate
// it. SLURM_VK_CONFORMANCE says which: quick (the default: the entries
// marked quick, on the trixie lab only, as make test runs it) or all
// (make conformance); SLURM_VK_CONFORMANCE_FOCUS narrows either to the
// specs matching a regular expression, SLURM_VK_CONFORMANCE_SKIP leaves
// out the ones matching another. It prints the table of spec,
// result, seconds and reason (also written, with the suite's JUnit, to
// .cache/conformance/report) and fails if a spec expected to pass did not.
func TestE2EConformance(t *testing.T) {
	mode := os.Getenv("SLURM_VK_CONFORMANCE")
	if mode == "" {
		mode = "quick"
	}
	specs, err := readSpecs("../conformance/specs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, lab := requireEnv(t)
	if mode == "quick" && lab.Suite != "trixie" {
		t.Skip("make test runs the quick conformance specs on one Slurm suite, trixie")
	}
	focus, skip := os.Getenv("SLURM_VK_CONFORMANCE_FOCUS"), os.Getenv("SLURM_VK_CONFORMANCE_SKIP")
	var run []conformanceSpec
	for _, s := range specs {
		if s.Expect != expectPass || mode == "quick" && !s.Quick {
			continue
		}
		if focus != "" && !regexp.MustCompile(focus).MatchString(s.Spec) || skip != "" && regexp.MustCompile(skip).MatchString(s.Spec) {
			continue
		}
		run = append(run, s)
	}
	if len(run) == 0 && mode == "quick" && focus == "" {
		t.Skip("no spec of test/conformance/specs.yaml is marked quick yet (#29): make conformance runs them all")
	}
	if len(run) == 0 {
		t.Fatalf("no spec to run (mode %s, focus %q)", mode, focus)
	}

	// The suite and agnhost, built from the control plane's module.
	out, err := exec.Command("../../hack/conformance/build.sh").Output()
	if err != nil {
		t.Fatalf("hack/conformance/build.sh: %v", err)
	}
	bin := strings.TrimSpace(string(out))
	// The suite's images, into the lab's registry.
	state := filepath.Dir(lab.TokenFile)
	push := exec.Command(filepath.Join(state, "registry"), "-push-e2e", lab.Registry, "-tls-dir", filepath.Join(state, "registry-tls"),
		"-busybox", filepath.Join(lab.Rootfs, "bin/busybox"), "-agnhost", filepath.Join(bin, "agnhost"), "-nnp", filepath.Join(bin, "nnp"))
	if b, err := push.CombinedOutput(); err != nil {
		t.Fatalf("push the e2e images: %v\n%s", err, b)
	}
	repoList := filepath.Join(t.TempDir(), "repo-list.yaml")
	os.WriteFile(repoList, []byte(fmt.Sprintf("promoterE2eRegistry: %s/e2e-test-images\ngcRegistry: %s/k8s\n", lab.Registry, lab.Registry)), 0o644)

	_, agent := sharedAgent(t, lab)
	// hostPath /etc/hosts: the KubeletManagedEtcHosts spec compares a
	// container's /etc/hosts with the node's (the job's user can only read
	// it; a site would list no such prefix).
	c := setup(t, "-runtime", "podman", "-agent", agent, "-no-provider-taint", "-hostpath-prefixes", "/etc/hosts")
	// Only this node: nodes earlier tests registered are NotReady, and the
	// suite wants every node ready.
	for _, n := range strings.Fields(c.must("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}")) {
		if n != nodeName {
			c.kubectl("delete", "node", n, "--ignore-not-found")
		}
	}

	report := os.Getenv("SLURM_VK_CONFORMANCE_REPORT")
	if report == "" {
		report = filepath.Join(bin, "report")
	}
	os.RemoveAll(report)
	os.MkdirAll(report, 0o755)
	// Whole names from their end: the text Ginkgo matches has something
	// before the [sig-…] prefix, so ^ would match none.
	names := make([]string, len(run))
	for i, s := range run {
		names[i] = regexp.QuoteMeta(s.Spec)
	}
	args := []string{"-kubeconfig", c.kubeconfig, "-provider", "skeleton", "-minStartupPods", "-1", "-allowed-not-ready-nodes", "0",
		"-disable-log-dump", "-report-dir", report, "-kubectl-path", mustLookPath(t, "kubectl"), "-node-os-distro", "debian",
		"-ginkgo.focus", "(" + strings.Join(names, "|") + ")$", "-ginkgo.no-color", "-ginkgo.timeout", "6h", "-ginkgo.v"}
	cmd := exec.Command(filepath.Join(bin, "e2e.test"), args...)
	cmd.Env = append(os.Environ(), "KUBE_TEST_REPO_LIST="+repoList)
	logf, err := os.Create(filepath.Join(report, "e2e.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	began := time.Now()
	runErr := cmd.Run()
	t.Logf("the e2e suite ran %d specs in %s (%v); its log: %s", len(run), time.Since(began).Round(time.Second), runErr, logf.Name())

	results := map[string]string{}
	secs := map[string]float64{}
	files, _ := filepath.Glob(filepath.Join(report, "junit*.xml"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		var j junitSuites
		if err := xml.Unmarshal(b, &j); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, s := range j.Suites {
			for _, tc := range s.Cases {
				tc.Name = specName(tc.Name)
				switch {
				case tc.Failure != nil:
					results[tc.Name] = "failed"
				case tc.Skipped != nil:
					if _, ok := results[tc.Name]; !ok {
						results[tc.Name] = "skipped"
					}
				default:
					results[tc.Name] = "passed"
				}
				secs[tc.Name] += tc.Time
			}
		}
	}
	var table strings.Builder
	fmt.Fprintf(&table, "| spec | result | seconds | reason |\n|---|---|---|---|\n")
	counts := map[string]int{}
	failed := 0
	for _, s := range specs {
		res, reason := results[s.Spec], s.Reason
		switch {
		case s.Expect == expectNA:
			res = "not applicable"
		case !contains(run, s.Spec):
			continue
		case res == "":
			res = "did not run"
		}
		counts[res]++
		if s.Expect == expectPass && res != "passed" {
			failed++
			t.Errorf("%s: %s", s.Spec, res)
		}
		fmt.Fprintf(&table, "| %s | %s | %.0f | %s |\n", s.Spec, res, secs[s.Spec], reason)
	}
	var sum []string
	for k, v := range counts {
		sum = append(sum, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(sum)
	fmt.Fprintf(&table, "\n%s\n", strings.Join(sum, ", "))
	os.WriteFile(filepath.Join(report, "table.md"), []byte(table.String()), 0o644)
	t.Logf("conformance (%s):\n%s", mode, table.String())
	if failed > 0 {
		t.Errorf("%d specs expected to pass did not; the suite's log is %s", failed, logf.Name())
	}
}

func contains(specs []conformanceSpec, name string) bool {
	for _, s := range specs {
		if s.Spec == name {
			return true
		}
	}
	return false
}

func mustLookPath(t *testing.T, name string) string {
	p, err := exec.LookPath(name)
	testenv.Need(t, err == nil, "%s is not installed", name)
	return p
}

// TestSpecName: the report's names are the list's (a table of "did not
// run" otherwise).
func TestSpecName(t *testing.T) {
	if got := specName("[It] [sig-node] Pods should get a host IP [Conformance]"); got != "[sig-node] Pods should get a host IP [Conformance]" {
		t.Errorf("specName: %q", got)
	}
}
