package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Stub container runtimes: this binary under the name of each runtime's
// programs, in the shims' directory. A stub does what its runtime does with the job
// script's command line, as the runtime documents it: it takes the
// container's environment, working directory and argv from the runtime's
// own channels (podman create's --env, --workdir and --entrypoint, ch-run's
// --set-env0 stream and --cd, apptainer's APPTAINERENV_ variables and
// --pwd, enroot's --env and --rc file) and execs argv with exactly those,
// so the payload records what a container would have been given. Pulls
// and the like succeed and leave what the script checks for.
//
// A stub's own start is recorded like any program's, with its arguments
// where they are the script's own (a pull: the image, the cache under the
// pod root), and only its verb where they carry the pod's strings (the
// payload's record has those).
var stubRuntimes = map[string]func(args []string){
	"podman":    stubPodman,
	"ch-run":    stubChRun,
	"ch-image":  stubChImage,
	"apptainer": stubApptainer,
	"enroot":    stubEnroot,
}

// stubRoot is where stubs keep what they pull (under the pod root, which
// the trace writes as ROOT).
const stubRoot = "SVK_STUB_ROOT"

func stubExit(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "stub: "+format+"\n", args...)
	os.Exit(125)
}

// stubExec starts the container's command as the runtime would.
func stubExec(argv, env []string, dir string) {
	if len(argv) == 0 {
		stubExit("no command")
	}
	if dir != "" {
		if err := os.Chdir(dir); err != nil {
			stubExit("working directory: %v", err)
		}
	}
	// The trace goes on in the container (the payload records itself).
	env = append(env, shimTrace+"="+os.Getenv(shimTrace))
	path := argv[0]
	if !strings.Contains(path, "/") {
		stubExit("%q: the traced pods give an absolute command", path)
	}
	err := syscall.Exec(path, argv, env)
	stubExit("exec %s: %v", path, err)
}

// require exits unless args hold every one of flags: the ones the job
// script must give for the container to be what the pod asked for.
func require(runtime string, args []string, why string, flags ...string) {
	for _, f := range flags {
		found := false
		for _, a := range args {
			found = found || a == f
		}
		if !found {
			stubExit("%s without %s: %s", runtime, f, why)
		}
	}
}

// envFlag is a runtime's --env NAME=VALUE or --env NAME (from its own
// environment); globs (podman's SLURM_*) pass the job's variables, which
// the traced pods do not look at.
func envFlag(env []string, v string) []string {
	if strings.Contains(v, "=") {
		return append(env, v)
	}
	if strings.Contains(v, "*") {
		return env
	}
	if val, ok := os.LookupEnv(v); ok {
		return append(env, v+"="+val)
	}
	return env
}

// podmanContainer is what podman create recorded, for podman start.
type podmanContainer struct {
	Argv, Env []string
	Dir       string
}

func stubPodman(args []string) {
	store := filepath.Join(os.Getenv(stubRoot), "podman")
	switch {
	case len(args) >= 2 && args[0] == "image" && args[1] == "exists":
		os.Exit(0) // present: the traced pods pull with IfNotPresent
	case len(args) >= 1 && (args[0] == "pull" || args[0] == "ps" || args[0] == "rm" || args[0] == "stop"):
		os.Exit(0)
	case len(args) >= 3 && args[0] == "start" && args[1] == "--attach":
		b, err := os.ReadFile(filepath.Join(store, args[len(args)-1]))
		if err != nil {
			stubExit("start: no such container: %v", err)
		}
		var c podmanContainer
		if err := json.Unmarshal(b, &c); err != nil {
			stubExit("%v", err)
		}
		stubExec(c.Argv, c.Env, c.Dir)
	case len(args) < 1 || args[0] != "create":
		stubExit("podman %q: not a call the job script makes", args)
	}
	require("podman create", args, "the container would be left behind, run as another uid, or pull on its own",
		"--rm", "--userns=keep-id", "--pull=never")
	var c podmanContainer
	var entry []string
	name := ""
	i := 1
	for ; i < len(args) && strings.HasPrefix(args[i], "--"); i++ {
		if strings.Contains(args[i], "=") {
			continue // --pull=never, --userns=keep-id, --network=host
		}
		switch args[i] {
		case "--rm", "--interactive", "--tty":
			continue
		case "--env":
			c.Env = envFlag(c.Env, args[i+1]) // as podman does: at create
		case "--workdir":
			c.Dir = args[i+1]
		case "--name":
			name = args[i+1]
		case "--entrypoint":
			if err := json.Unmarshal([]byte(args[i+1]), &entry); err != nil {
				stubExit("--entrypoint %q: %v", args[i+1], err)
			}
		}
		i++ // every other flag the script gives takes a value
	}
	if i >= len(args) || name == "" {
		stubExit("podman create without an image or a name")
	}
	c.Argv = append(entry, args[i+1:]...)
	b, _ := json.Marshal(c)
	if err := os.MkdirAll(store, 0o755); err != nil {
		stubExit("%v", err)
	}
	if err := os.WriteFile(filepath.Join(store, name), b, 0o644); err != nil {
		stubExit("%v", err)
	}
}

func stubChImage(args []string) {
	storage := filepath.Join(os.Getenv(stubRoot), "ch")
	switch {
	case len(args) == 2 && args[0] == "gestalt" && args[1] == "storage-path":
		fmt.Println(storage)
	case len(args) >= 2 && args[len(args)-2] == "pull":
		p := strings.ReplaceAll(strings.ReplaceAll(args[len(args)-1], "/", "%"), ":", "+")
		if err := os.MkdirAll(filepath.Join(storage, "img", p, "ch"), 0o755); err != nil {
			stubExit("%v", err)
		}
	default:
		stubExit("ch-image %q: not a call the job script makes", args)
	}
}

func stubChRun(args []string) {
	if len(args) == 1 && args[0] == "--version" {
		fmt.Println("0.45")
		return
	}
	require("ch-run", args, "the job's environment would reach the container, or the image be read-only", "--unset-env=*", "--write-fake")
	var env []string
	dir := ""
	i := 0
	for ; i < len(args) && args[i] != "--"; i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "--set-env0="):
			b, err := os.ReadFile(strings.TrimPrefix(a, "--set-env0="))
			if err != nil {
				stubExit("%v", err)
			}
			for _, kv := range bytes.Split(b, []byte{0}) {
				if len(kv) > 0 {
					env = append(env, string(kv))
				}
			}
		case strings.HasPrefix(a, "--cd="):
			dir = strings.TrimPrefix(a, "--cd=")
		}
	}
	if i >= len(args) {
		stubExit("ch-run without --")
	}
	stubExec(args[i+1:], env, dir)
}

func stubApptainer(args []string) {
	if len(args) >= 3 && args[0] == "pull" {
		file := args[len(args)-2]
		if err := os.WriteFile(file, []byte("sif"), 0o644); err != nil {
			stubExit("%v", err)
		}
		return
	}
	if len(args) < 1 || args[0] != "exec" && args[0] != "run" {
		stubExit("apptainer %q: not a call the job script makes", args)
	}
	require("apptainer", args, "the job's environment (or the shell's evaluation of it) would reach the container", "--cleanenv", "--no-eval")
	var env []string
	for _, kv := range os.Environ() {
		if v, ok := strings.CutPrefix(kv, "APPTAINERENV_"); ok {
			env = append(env, v)
		}
	}
	dir := ""
	i := 1
	for ; i < len(args) && strings.HasPrefix(args[i], "--"); i++ {
		switch args[i] {
		case "--cleanenv", "--no-eval":
		case "--pwd":
			dir = args[i+1]
			i++
		default: // --bind
			i++
		}
	}
	if i >= len(args) {
		stubExit("apptainer without an image")
	}
	stubExec(args[i+1:], env, dir) // args[i] is the image file
}

func stubEnroot(args []string) {
	switch {
	case len(args) >= 3 && args[0] == "import":
		if err := os.WriteFile(args[2], []byte("sqsh"), 0o644); err != nil {
			stubExit("%v", err)
		}
		return
	case len(args) >= 1 && args[0] == "create":
		return
	case len(args) < 1 || args[0] != "start":
		stubExit("enroot %q: not a call the job script makes", args)
	}
	require("enroot start", args, "the container's root file system would be read-only", "--rw")
	var env []string
	rc := ""
	i := 1
	for ; i < len(args) && strings.HasPrefix(args[i], "--"); i++ {
		switch args[i] {
		case "--rw":
		case "--env":
			env = envFlag(env, args[i+1])
			i++
		case "--rc":
			rc = args[i+1]
			i++
		default: // --mount
			i++
		}
	}
	if i >= len(args) {
		stubExit("enroot start without a container")
	}
	argv := args[i+1:]
	if rc != "" {
		// enroot sources the rc script in the container's shell, with the
		// command as its arguments.
		argv = append([]string{"/bin/sh", rc}, argv...)
	}
	stubExec(argv, env, "")
}
