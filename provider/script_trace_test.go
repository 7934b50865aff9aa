package provider

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/logtime"
	"github.com/slurmkube/slurm-vk/internal/testbin"
)

// The tracing shim (internal/testshim): a small program run under the
// name of every program in /usr/bin, /bin, /usr/sbin and /sbin through a
// directory of symbolic links that is the script's whole PATH; it records
// each call, then runs the real program. The pod's own command is the
// shim under the name svk-payload: it records its argv, its working
// directory and the pod's environment, and exits 0. Under the names of the
// container runtimes it is a stub of each, which starts the container's
// command from what the runtime's command line says.
const (
	shimTrace   = "SVK_SHIM_TRACE" // file the calls are appended to
	payloadName = "svk-payload"
)

var realDirs = []string{"/usr/bin", "/bin", "/usr/sbin", "/sbin"}

// stubbed are the runtime programs the shim stands in for.
var stubbed = []string{"podman", "ch-run", "ch-image", "apptainer", "enroot"}

// call is one recorded program start.
type call struct {
	Name string            `json:"name"`
	Args []string          `json:"args"`
	Argv []string          `json:"argv"` // all of them, where Args keeps only a runtime's verb
	Dir  string            `json:"dir,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
}

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == DefaultLogTimeHelper {
		os.Exit(logtime.Command(os.Args[1:])) // the test binary as the jobs' helper
	}
	os.Exit(m.Run())
}

// traceRoot is a shared root for a traced pod: a fresh directory whose
// path has no '#' or blank (a subtest's t.TempDir() has its name, and a
// fuzz seed's has '#', which enroot's fstab lines cannot hold).
func traceRoot(t testing.TB) string {
	d, err := os.MkdirTemp("", "svk-trace-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// shimDir links every program name to the shim.
func shimDir(t testing.TB) string {
	shim := testbin.Path(t, "testshim")
	dir := t.TempDir()
	for _, d := range realDirs {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			os.Symlink(shim, filepath.Join(dir, e.Name())) // the first directory wins, as in PATH
		}
	}
	for _, name := range append(stubbed, payloadName) {
		os.Remove(filepath.Join(dir, name)) // a real one here would be linked already
		if err := os.Symlink(shim, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// hostileAtoms are the pieces hostile strings are made of: shell syntax,
// quoting, field separators, option-like words, references the kubelet
// expands and ones it must not, control characters and unicode. Each
// command substitution or redirection, if the shell ever ran it, would
// create the canary file.
var hostileAtoms = []string{
	`'`, `"`, `\`, "`touch CANARY`", `$(touch CANARY)`, `${IFS}`, `$((7*6))`, `; touch CANARY`, `&& touch CANARY #`,
	`| tee CANARY`, `>CANARY`, "\n", "\r", "\t", " ", ",", ":", "=", "-n", "--privileged", "-", "*", "?", "[a]", "~", "!!",
	"%s%n", "{a,b}", "ü∂ 日本", "$$", "$(H_LIT)", "$(H_SECRET)", "$$(H_LIT)", "$(UNDEFINED)", "$(", ")", "$", "'\"'\"'",
	"\x1b[31m", "\u202e", "/usr/bin/touch CANARY",
}

// kubeletExpand is the kubelet's $(VAR) expansion, written apart from the
// provider's: $$ is a dollar, $(NAME) of a defined NAME its value, and
// anything else stays as written.
func kubeletExpand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			if s[i+1] == '$' {
				b.WriteByte('$')
				i++
				continue
			}
			if s[i+1] == '(' {
				if end := strings.IndexByte(s[i:], ')'); end > 0 {
					if v, ok := vars[s[i+2:i+end]]; ok {
						b.WriteString(v)
						i += end
						continue
					}
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// podStrings are the strings of a pod that its user controls and that
// reach the job script: command-line arguments; a literal, a ConfigMap, a
// Secret and an annotation (downward API) env value; the working directory.
type podStrings struct {
	args                 []string
	lit, cm, secret, ann string
	workingDir           string
	// extra are more env vars after those; the Secret's key "evil" holds
	// evil.
	extra []corev1.EnvVar
	evil  string
	// envFrom come before env, as in a container.
	envFrom []corev1.EnvFromSource
	// pod, when set, changes the pod before it is translated.
	pod func(*corev1.Pod)
}

// runTraced translates a pod made of ps with its pod directory under root,
// runs its script with bash under the shim in work, and returns the calls
// the shim saw; a script that fails is an error of the test, but its calls
// are still returned for a closer look.
func runTraced(t *testing.T, shims, root, work, runtime string, ps podStrings) ([]call, error) {
	pod := basePod("trace", corev1.Container{Name: "main", Image: "registry.example/lab/app:1", Command: []string{filepath.Join(shims, payloadName)}, Args: ps.args,
		WorkingDir: ps.workingDir,
		Env: []corev1.EnvVar{
			{Name: "H_LIT", Value: ps.lit},
			{Name: "H_CM", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hostile"}, Key: "v"}}},
			{Name: "H_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hostile"}, Key: "v"}}},
			{Name: "H_ANN", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['h']"}}},
		}})
	pod.Spec.Containers[0].Env = append(pod.Spec.Containers[0].Env, ps.extra...)
	pod.Spec.Containers[0].EnvFrom = ps.envFrom
	if ps.pod != nil {
		ps.pod(pod)
	}
	pod.Annotations = map[string]string{"h": ps.ann}
	look := Lookups{
		ConfigMap: func(_, _ string) (*corev1.ConfigMap, error) {
			return &corev1.ConfigMap{Data: map[string]string{"v": ps.cm}}, nil
		},
		Secret: func(_, _ string) (*corev1.Secret, error) {
			return &corev1.Secret{Data: map[string][]byte{"v": []byte(ps.secret), "evil": []byte(ps.evil)}}, nil
		},
	}
	cfg := testCfg
	cfg.SharedRoot, cfg.Runtime = root, runtime
	plan, err := Translate(pod, cfg, look)
	if err != nil {
		return nil, err
	}
	ref := PodRef(pod)
	for _, f := range plan.Staged { // what the fetch endpoint would stage
		p := ref.Path(root, "_staged", f.Path)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, f.Data, os.FileMode(f.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	trace := filepath.Join(t.TempDir(), "trace")
	cmd := exec.Command("/bin/bash", "-c", plan.Spec.Script)
	cmd.Dir = work
	cmd.Env = []string{"PATH=" + shims, "HOME=" + work, shimTrace + "=" + trace, "SLURM_JOB_ID=7",
		"SVK_STUB_ROOT=" + root, "SLURM_VK_IMAGE_CACHE=" + filepath.Join(root, "cache")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("script: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(ref.Path(root, "main", "0.log")); len(b) > 0 {
		t.Errorf("the payload prints nothing, yet its log holds %q", b)
	}
	b, _ := os.ReadFile(trace)
	var calls []call
	for _, line := range strings.Split(string(b), "\n") { // JSON escapes newlines in strings
		if line == "" {
			continue
		}
		var c call
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("trace line %q: %v", line, err)
		}
		calls = append(calls, c)
	}
	return calls, nil
}

// partPID is the script's PID in a pull's temporary file name.
var partPID = regexp.MustCompile(`\.[0-9]+\.part\b`)

// programs are the calls other than the payload, sorted, with the pod
// root written ROOT and a pull's PID written PID (they differ from run to
// run).
func programs(calls []call, root string) []string {
	var out []string
	for _, c := range calls {
		if c.Name != payloadName {
			line := strings.ReplaceAll(strings.Join(c.Args, " "), root, "ROOT")
			out = append(out, c.Name+" "+partPID.ReplaceAllString(line, ".PID.part"))
		}
	}
	slices.Sort(out)
	return out
}

// checkTraced runs a pod made of hostile strings and checks that the
// payload got exactly those strings and nothing else ran: the programs
// (and their arguments) of a harmless pod, want, and no canary file.
func checkTraced(t *testing.T, shims, runtime string, want []string, ps podStrings) {
	root, work := traceRoot(t), t.TempDir()
	wd := filepath.Join(work, ps.workingDir)
	if err := os.Mkdir(wd, 0o755); err != nil {
		t.Skipf("working directory %q: %v", ps.workingDir, err)
	}
	ps.workingDir = wd
	calls, err := runTraced(t, shims, root, work, runtime, ps)
	var bad *InvalidPodError
	if errors.As(err, &bad) {
		for _, s := range append([]string{ps.lit, ps.cm, ps.secret, ps.ann, ps.workingDir}, ps.args...) {
			if strings.ContainsRune(s, 0) {
				return // refused with a reason: a NUL reaches no process
			}
		}
		// enroot takes literal values on its command line, one per line of
		// its environment file: a newline is refused with a reason.
		if runtime == RuntimeEnroot && bad.Reason == "InvalidEnvValue" && strings.Contains(ps.lit+ps.cm+ps.ann+kubeletExpand(ps.lit, nil), "\n") {
			return
		}
		t.Fatalf("%s: refused: %v", runtime, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{work, root} {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && p != wd && strings.Contains(d.Name(), "CANARY") {
				t.Errorf("%s: the script ran a command hidden in a pod string: %s exists", runtime, p)
			}
			return nil
		})
	}
	if got := programs(calls, root); !slices.Equal(got, want) {
		t.Errorf("%s: programs run differ from a harmless pod's:\ngot  %q\nwant %q", runtime, got, want)
	}
	var payload call
	for _, c := range calls {
		if c.Name == payloadName {
			payload = c
		}
	}
	vars := map[string]string{"H_LIT": ps.lit, "H_SECRET": ps.secret}
	wantArgs := make([]string, len(ps.args))
	for i, a := range ps.args {
		wantArgs[i] = kubeletExpand(a, vars)
	}
	if !slices.Equal(payload.Args, wantArgs) {
		t.Errorf("%s: the container's arguments\n got %q\nwant %q", runtime, payload.Args, wantArgs)
	}
	wantEnv := map[string]string{"H_LIT": kubeletExpand(ps.lit, nil), "H_CM": ps.cm, "H_SECRET": ps.secret, "H_ANN": ps.ann}
	for k, v := range wantEnv {
		if payload.Env[k] != v {
			t.Errorf("%s: the container's %s = %q, want %q", runtime, k, payload.Env[k], v)
		}
	}
	if payload.Dir != wd {
		t.Errorf("%s: the container ran in %q, want %q", runtime, payload.Dir, wd)
	}
}

// FuzzHostilePodStrings: whatever a pod's strings hold, on every runtime
// (stubs of podman, Charliecloud, apptainer and enroot that start the
// container's command from what their command lines say), the script runs
// only its own programs, with its own arguments, and hands the container
// exactly the strings the pod gave (after the kubelet's own $(VAR)
// expansion), in its environment, argv and working directory. `go test` runs the seeds below; `go test -fuzz
// FuzzHostilePodStrings ./provider` looks for more.
func FuzzHostilePodStrings(f *testing.F) {
	if _, err := exec.LookPath("bash"); err != nil {
		f.Skip("no bash")
	}
	// Seeds: every atom in every field, two side by side per seed.
	half := (len(hostileAtoms) + 1) / 2
	for i := 0; i < half; i++ {
		a, b := hostileAtoms[i], hostileAtoms[(i+half)%len(hostileAtoms)]
		f.Add(a+b, b+a, a+b, b+a, a, strings.ReplaceAll(b+a, "/", "_"))
	}
	f.Add(strings.Join(hostileAtoms, ""), strings.Join(hostileAtoms, " "), "x\x00$(touch CANARY)\x00", "", "", "d")
	shims := shimDir(f)
	want := map[string][]string{} // a harmless pod's programs, per runtime, the first time they are needed
	f.Fuzz(func(t *testing.T, arg, lit, cm, secret, ann, dirName string) {
		if dirName == "" || dirName == "." || dirName == ".." || strings.ContainsAny(dirName, "/\x00") || len(dirName) > 200 {
			dirName = "d"
		}
		for _, rt := range allRuntimes {
			if want[rt] == nil {
				root := traceRoot(t)
				calls, err := runTraced(t, shims, root, t.TempDir(), rt, podStrings{args: []string{"a"}, lit: "l", cm: "c", secret: "s", ann: "n", workingDir: t.TempDir()})
				if err != nil || len(calls) < 2 {
					t.Fatalf("%s: a harmless pod: %v, calls %v", rt, err, calls)
				}
				want[rt] = programs(calls, root)
			}
			checkTraced(t, shims, rt, want[rt], podStrings{args: []string{arg, "-" + arg, arg + arg}, lit: lit, cm: cm, secret: secret, ann: ann, workingDir: dirName})
		}
	})
}

// scriptVariables are the shell variables a job script sets or reads, as
// read off the script itself: expansions ($X, ${X...}), assignments (X=,
// X+=, local, read, for, mapfile, {X}< file descriptors) and the bare
// names of arithmetic.
func scriptVariables(script string) []string {
	name := `[A-Za-z_][A-Za-z0-9_]*`
	res := []*regexp.Regexp{
		regexp.MustCompile(`\$\{?#?(` + name + `)`),
		regexp.MustCompile(`(?m)(?:^|[\s;&|(])(` + name + `)\+?=`),
		regexp.MustCompile(`\bread\b[^;\n<]*\s(` + name + `)\s*<`),
		regexp.MustCompile(`\bfor\s+(` + name + `)\s+in\b`),
		regexp.MustCompile(`\bmapfile\b[^;\n<]*\s(` + name + `)\s*<`),
		regexp.MustCompile(`\{(` + name + `)\}[<>]`),
	}
	seen := map[string]bool{}
	for _, re := range res {
		for _, m := range re.FindAllStringSubmatch(script, -1) {
			seen[m[1]] = true
		}
	}
	for _, m := range regexp.MustCompile(`\blocal\s+([^;\n]*)`).FindAllStringSubmatch(script, -1) {
		for _, w := range strings.Fields(m[1]) {
			if n, _, _ := strings.Cut(w, "="); regexp.MustCompile(`^` + name + `$`).MatchString(n) {
				seen[n] = true
			}
		}
	}
	for _, m := range regexp.MustCompile(`\$\(\((.*?)\)\)`).FindAllStringSubmatch(script, -1) {
		for _, w := range regexp.MustCompile(name).FindAllString(m[1], -1) {
			seen[w] = true
		}
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// TestPodEnvCannotSteerTheScript: a pod whose env names every shell
// variable its job script uses (read off the scripts of every runtime, with
// and without the agent, one task or srun's; not a list kept by hand),
// with values that name a program of the attacker's, from a literal or
// from a Secret, changes nothing the script does: on every runtime each
// such name is refused (InvalidEnvName, with the reason) or the container
// runs as a harmless pod's does, the payload with its own arguments, and
// no other program.
func TestPodEnvCannotSteerTheScript(t *testing.T) {
	shims := shimDir(t)
	work := t.TempDir()
	evil := filepath.Join(work, "evil")
	canary := filepath.Join(work, "CANARY")
	os.WriteFile(evil, []byte("#!/bin/sh\ntouch "+canary+"\n"), 0o755)

	names := map[string]bool{}
	for _, rt := range allRuntimes {
		for _, agent := range []bool{false, true} {
			for _, shaped := range []bool{false, true} {
				if shaped && rt != RuntimeNone && rt != RuntimePodman {
					continue // srun's tasks run under these two only
				}
				// A Secret-backed variable, referred to in args: the lines
				// that read it are the script's too.
				pod := basePod("vars", corev1.Container{Name: "main", Image: "registry.example/lab/app:1", Command: []string{"true"}, Args: []string{"$(H_S)"}, Stdin: true,
					Env: []corev1.EnvVar{{Name: "H_S", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "user"}}}}})
				if shaped {
					pod.Annotations = map[string]string{AnnotationNodes: "2"}
					pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: quantity("2")}
				}
				cfg := testCfg
				cfg.Runtime = rt
				if agent {
					cfg.Agent, cfg.AgentURL = "/opt/slurm-vk-agent", "https://fetch.example"
				}
				plan, err := Translate(pod, cfg, lookups)
				if err != nil {
					t.Fatalf("%s: %v", rt, err)
				}
				for _, n := range scriptVariables(plan.Spec.Script) {
					names[n] = true
				}
			}
		}
	}
	for _, must := range []string{"svk_pod_dir", "svk_podman", "svk_ch_run", "svk_dir", "svk_n", "SLURM_JOB_ID", "IFS"} {
		if !names[must] {
			t.Fatalf("the scripts' variables, as read off them, lack %s: %v", must, names)
		}
	}
	t.Logf("%d variables: %v", len(names), slices.Sorted(maps.Keys(names)))

	for _, rt := range allRuntimes {
		for _, from := range []string{"literal", "secret"} {
			t.Run(rt+"/"+from, func(t *testing.T) {
				base := podStrings{args: []string{"a"}, lit: "l", cm: "c", secret: "s", ann: "n", workingDir: t.TempDir(), evil: evil}
				root := traceRoot(t)
				calls, err := runTraced(t, shims, root, t.TempDir(), rt, base)
				if err != nil {
					t.Fatal(err)
				}
				want := programs(calls, root)
				left := maps.Clone(names)
				var refused []string
				for {
					ps := base
					for _, n := range slices.Sorted(maps.Keys(left)) {
						e := corev1.EnvVar{Name: n, Value: evil}
						if from == "secret" {
							e = corev1.EnvVar{Name: n, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: "hostile"}, Key: "evil"}}}
						}
						ps.extra = append(ps.extra, e)
					}
					root := traceRoot(t)
					calls, err := runTraced(t, shims, root, t.TempDir(), rt, ps)
					var bad *InvalidPodError
					if errors.As(err, &bad) {
						n := refusedName(bad, left)
						if bad.Reason != "InvalidEnvName" || n == "" {
							t.Fatalf("refused for another reason: %v", err)
						}
						delete(left, n)
						refused = append(refused, n)
						continue
					}
					if err != nil {
						t.Fatal(err)
					}
					if _, err := os.Stat(canary); err == nil {
						t.Fatalf("the attacker's program ran")
					}
					if got := programs(calls, root); !slices.Equal(got, want) {
						t.Errorf("programs run differ from a harmless pod's:\ngot  %q\nwant %q", got, want)
					}
					ran := 0
					for _, c := range calls {
						if c.Name == payloadName && slices.Equal(c.Args, []string{"a"}) {
							ran++
						}
					}
					if ran != 1 {
						t.Errorf("the container ran %d times with its arguments, want once: %v", ran, calls)
					}
					t.Logf("%d names set, %d refused: %v", len(left), len(refused), refused)
					return
				}
			})
		}
	}
}

// refusedName is the name, of those left, an InvalidEnvName refusal is
// about.
func refusedName(err *InvalidPodError, left map[string]bool) string {
	for n := range left {
		if strings.Contains(err.Message, "variable "+n+" ") || strings.Contains(err.Message, `name "`+n+`"`) {
			return n
		}
	}
	return ""
}
