package provider

import (
	"github.com/slurmkube/slurm-vk/fetch/logtime"

	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The tracing shim: the test binary itself, run under the name of every
// program in /usr/bin, /bin, /usr/sbin and /sbin through a directory of
// symbolic links that is the script's whole PATH. Each call is recorded,
// then the real program runs. The pod's own command is the shim under the
// name svk-payload: it records its argv, its working directory and the
// pod's environment, and exits 0.
const (
	shimTrace   = "SVK_SHIM_TRACE" // file the calls are appended to
	payloadName = "svk-payload"
)

var realDirs = []string{"/usr/bin", "/bin", "/usr/sbin", "/sbin"}

// call is one recorded program start.
type call struct {
	Name string            `json:"name"`
	Args []string          `json:"args"`
	Dir  string            `json:"dir,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
}

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == DefaultLogTimeHelper {
		os.Exit(logtime.Command(os.Args[1:])) // the test binary as the jobs' helper
	}
	if os.Getenv(shimTrace) != "" {
		shimMain()
	}
	os.Exit(m.Run())
}

func shimMain() {
	name := filepath.Base(os.Args[0])
	c := call{Name: name, Args: os.Args[1:]}
	if name == payloadName {
		c.Dir, _ = os.Getwd()
		c.Env = map[string]string{}
		for _, kv := range os.Environ() {
			if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "H_") {
				c.Env[k] = v
			}
		}
	}
	line, _ := json.Marshal(c)
	// One write with O_APPEND: calls from concurrent processes do not mix.
	if f, err := os.OpenFile(os.Getenv(shimTrace), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		f.Write(append(line, '\n'))
		f.Close()
	}
	if name == payloadName {
		os.Exit(0)
	}
	for _, d := range realDirs {
		if p := filepath.Join(d, name); syscall.Access(p, 1) == nil {
			syscall.Exec(p, append([]string{name}, os.Args[1:]...), os.Environ())
		}
	}
	fmt.Fprintf(os.Stderr, "shim: %s: not found\n", name)
	os.Exit(127)
}

// shimDir links every program name to the test binary.
func shimDir(t testing.TB) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range realDirs {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			os.Symlink(self, filepath.Join(dir, e.Name())) // the first directory wins, as in PATH
		}
	}
	if err := os.Symlink(self, filepath.Join(dir, payloadName)); err != nil {
		t.Fatal(err)
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
}

// runTraced translates a pod made of ps with its pod directory under root,
// runs its script with bash under the shim in work, and returns the calls
// the shim saw; a script that fails is an error of the test, but its calls
// are still returned for a closer look.
func runTraced(t *testing.T, shims, root, work string, ps podStrings) ([]call, error) {
	pod := basePod("trace", corev1.Container{Name: "main", Command: []string{filepath.Join(shims, payloadName)}, Args: ps.args,
		WorkingDir: ps.workingDir,
		Env: []corev1.EnvVar{
			{Name: "H_LIT", Value: ps.lit},
			{Name: "H_CM", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hostile"}, Key: "v"}}},
			{Name: "H_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hostile"}, Key: "v"}}},
			{Name: "H_ANN", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['h']"}}},
		}})
	pod.Annotations = map[string]string{"h": ps.ann}
	look := Lookups{
		ConfigMap: func(_, _ string) (*corev1.ConfigMap, error) {
			return &corev1.ConfigMap{Data: map[string]string{"v": ps.cm}}, nil
		},
		Secret: func(_, _ string) (*corev1.Secret, error) {
			return &corev1.Secret{Data: map[string][]byte{"v": []byte(ps.secret)}}, nil
		},
	}
	cfg := testCfg
	cfg.SharedRoot = root
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
	cmd.Env = []string{"PATH=" + shims, "HOME=" + work, shimTrace + "=" + trace}
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

// programs are the calls other than the payload, sorted, with the pod
// root written ROOT (it differs from run to run).
func programs(calls []call, root string) []string {
	var out []string
	for _, c := range calls {
		if c.Name != payloadName {
			out = append(out, c.Name+" "+strings.ReplaceAll(strings.Join(c.Args, " "), root, "ROOT"))
		}
	}
	slices.Sort(out)
	return out
}

// checkTraced runs a pod made of hostile strings and checks that the
// payload got exactly those strings and nothing else ran: the programs
// (and their arguments) of a harmless pod, want, and no canary file.
func checkTraced(t *testing.T, shims string, want []string, ps podStrings) {
	root, work := t.TempDir(), t.TempDir()
	wd := filepath.Join(work, ps.workingDir)
	if err := os.Mkdir(wd, 0o755); err != nil {
		t.Skipf("working directory %q: %v", ps.workingDir, err)
	}
	ps.workingDir = wd
	calls, err := runTraced(t, shims, root, work, ps)
	var bad *InvalidPodError
	if errors.As(err, &bad) {
		for _, s := range append([]string{ps.lit, ps.cm, ps.secret, ps.ann, ps.workingDir}, ps.args...) {
			if strings.ContainsRune(s, 0) {
				return // refused with a reason: a NUL reaches no process
			}
		}
		t.Fatalf("refused: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{work, root} {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && p != wd && strings.Contains(d.Name(), "CANARY") {
				t.Errorf("the script ran a command hidden in a pod string: %s exists", p)
			}
			return nil
		})
	}
	if got := programs(calls, root); !slices.Equal(got, want) {
		t.Errorf("programs run differ from a harmless pod's:\ngot  %q\nwant %q", got, want)
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
		t.Errorf("the container's arguments\n got %q\nwant %q", payload.Args, wantArgs)
	}
	wantEnv := map[string]string{"H_LIT": kubeletExpand(ps.lit, nil), "H_CM": ps.cm, "H_SECRET": ps.secret, "H_ANN": ps.ann}
	for k, v := range wantEnv {
		if payload.Env[k] != v {
			t.Errorf("the container's %s = %q, want %q", k, payload.Env[k], v)
		}
	}
	if payload.Dir != wd {
		t.Errorf("the container ran in %q, want %q", payload.Dir, wd)
	}
}

// FuzzHostilePodStrings: whatever a pod's strings hold, the script runs
// only its own programs, with its own arguments, and hands the container
// exactly the strings the pod gave (after the kubelet's own $(VAR)
// expansion). `go test` runs the seeds below; `go test -fuzz
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
	var want []string // a harmless pod's programs, the first time they are needed
	f.Fuzz(func(t *testing.T, arg, lit, cm, secret, ann, dirName string) {
		if want == nil {
			root := t.TempDir()
			calls, err := runTraced(t, shims, root, t.TempDir(), podStrings{args: []string{"a"}, lit: "l", cm: "c", secret: "s", ann: "n", workingDir: t.TempDir()})
			if err != nil || len(calls) < 2 {
				t.Fatalf("a harmless pod: %v, calls %v", err, calls)
			}
			want = programs(calls, root)
		}
		if dirName == "" || dirName == "." || dirName == ".." || strings.ContainsAny(dirName, "/\x00") || len(dirName) > 200 {
			dirName = "d"
		}
		checkTraced(t, shims, want, podStrings{args: []string{arg, "-" + arg, arg + arg}, lit: lit, cm: cm, secret: secret, ann: ann, workingDir: dirName})
	})
}
