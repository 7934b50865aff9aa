package provider

import (
	"fmt"
	"strings"
)

// charliecloudHelpers are the script's functions for runtime charliecloud,
// defined once. ch-image keeps pulled images in per-user storage on the
// node (by default /var/tmp/$USER.ch) and does not record ENTRYPOINT, CMD
// or WORKDIR in its metadata, so they are read from the pulled config it
// keeps in the image (ch/config.pulled.json), with the python3 that
// ch-image itself runs on.
//   - svk_ch_pull applies the pull policy; pulls into one storage are
//     serialized (flock), as ch-image's storage is not for concurrent
//     writers; on failure it leaves the kubelet's reason and ch-image's
//     message for the exit marker;
//   - svk_ch_config prints, NUL-separated, the image's ENTRYPOINT (entry),
//     ENTRYPOINT and CMD (run), or its WORKDIR (workdir).
const charliecloudHelpers = `svk_ch_run=$(command -v ch-run)
svk_ch_storage=
svk_ch_env() {
	[ -n "$svk_ch_run" ] && command -v ch-image >/dev/null || { svk_reason ContainerRuntimeNotFound "Charliecloud (ch-run, ch-image) is not installed on $(hostname)"; return 127; }
	# Slurm gives jobs no login environment; ch-image wants USER.
	[ -n "${USER:-}" ] || export USER="$(id -un)"
	[ -n "${HOME:-}" ] || export HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
	svk_ch_storage=$(ch-image gestalt storage-path 2>&1) || { svk_reason ContainerRuntimeError "ch-image: $svk_ch_storage"; return 125; }
	# ch-run up to 0.38 drops a trailing newline from each --set-env0 entry
	# (0.45 does not): values that end in one get one more to drop.
	case $("$svk_ch_run" --version 2>&1) in 0.[12]* | 0.3[0-8] | 0.3[0-8].*) svk_ch_nl=$'\n' ;; *) svk_ch_nl= ;; esac
}
svk_ch_env0() { # NAME VALUE: one --set-env0 entry, exactly
	if [[ $2 == *$'\n' ]]; then printf '%s=%s%s\0' "$1" "$2" "$svk_ch_nl"; else printf '%s=%s\0' "$1" "$2"; fi
}
svk_ch_dir() { # IMAGE: the image's directory in the storage
	local svk_p=${1//\//%}
	printf '%s/img/%s' "$svk_ch_storage" "${svk_p//:/+}"
}
svk_ch_pull() { # POLICY IMAGE [USERFILE PASSFILE]
	local out
	case $1 in
	Never)
		[ -d "$(svk_ch_dir "$2")" ] && return 0
		svk_reason ErrImageNeverPull "Container image \"$2\" is not present with pull policy of Never"
		return 125 ;;
	IfNotPresent) [ -d "$(svk_ch_dir "$2")" ] && return 0 ;;
	esac
	if [ -n "${3:-}" ]; then
		out=$(CH_IMAGE_USERNAME=$(cat "$3") CH_IMAGE_PASSWORD=$(cat "$4") flock -w 900 "$svk_ch_storage.svk-lock" ch-image --auth pull "$2" 2>&1 >/dev/null)
	else
		out=$(flock -w 900 "$svk_ch_storage.svk-lock" ch-image pull "$2" 2>&1 >/dev/null)
	fi && [ -d "$(svk_ch_dir "$2")" ] && return 0
	svk_reason ErrImagePull "Failed to pull image \"$2\": $(printf '%s\n' "$out" | grep -v -e '^warning: ' -e '^pulling image: ' -e '^requesting arch: ' | tail -n 5 | tr '\n' ' ')"
	return 125
}
svk_ch_config() { # IMAGE entry|run|workdir
	python3 -c 'import json, sys
c = json.load(open(sys.argv[1])).get("config") or {}
if sys.argv[2] == "workdir":
    out = [c.get("WorkingDir") or "/"]
else:
    out = (c.get("Entrypoint") or []) + ((c.get("Cmd") or []) if sys.argv[2] == "run" else [])
sys.stdout.write("".join(a + "\0" for a in out))' "$(svk_ch_dir "$1")/ch/config.pulled.json" "$2"
}
`

// launchCharliecloud runs the image with Charliecloud's ch-run as the job's
// user: the image read-only under a tmpfs overlay (-W, so mount points and
// writes work as in a container's own layer), the environment built from
// nothing (--unset-env='*'), then the image's ENV, then the pod's, passed
// NUL-separated through a pipe (--set-env0), so no value is on a command
// line and Secrets with newlines survive. Charliecloud 0.38 binds volumes
// read-write (readOnly cannot be enforced) and cannot bind a file where the
// image has none (a subPath naming a file needs its target in the image).
func (t *translator) launchCharliecloud(c resolved) (string, error) {
	var b strings.Builder
	b.WriteString("\t\tsvk_ch_env || exit $?\n")
	pull := []string{"svk_ch_pull", pullPolicyOf(c.pullPolicy), c.image}
	if user, pass, ok, err := t.registryCredentials(c); err != nil {
		return "", err
	} else if ok {
		pull = append(pull, user, pass)
	}
	fmt.Fprintf(&b, "\t\t%s || exit $?\n", shqAll(pull))

	// Secrets are read into this shell (not exported: ch-run starts from
	// an empty environment) where $(VAR) references in values and args
	// find them. The environment stream: HOME=/ unless the image or the
	// pod says otherwise, then the pod's variables.
	var stream strings.Builder
	stream.WriteString("\t\tsvk_env() {\n\t\t\tsvk_ch_env0 HOME /\n")
	for _, e := range c.env {
		if e.file != "" {
			if runtimeReservedName(e.name) {
				return "", reservedSecret(c, e, t.runtime)
			}
			fmt.Fprintf(&b, "\t\tIFS= read -r -d '' %s <%s || true\n", shellVar(e.name), shq(e.file))
			fmt.Fprintf(&stream, "\t\t\tsvk_ch_env0 %s \"$%s\"\n", shWord(e.name), shellVar(e.name))
			continue
		}
		fmt.Fprintf(&stream, "\t\t\tsvk_ch_env0 %s %s\n", shWord(e.name), shq(e.value))
	}
	stream.WriteString("\t\t}\n")
	b.WriteString(stream.String())

	argv := "svk_argv=(" + shqAll(append(append([]string{}, c.command...), c.args...)) + ")"
	if len(c.command) == 0 {
		what := "run"
		if len(c.args) > 0 {
			what = "entry"
		}
		fmt.Fprintf(&b, "\t\tmapfile -d '' svk_argv < <(svk_ch_config %s %s) || exit 125\n", shq(c.image), what)
		argv = "svk_argv+=(" + shqAll(c.args) + ")"
	}
	b.WriteString("\t\t" + argv + "\n")
	b.WriteString("\t\t[ ${#svk_argv[@]} -gt 0 ] || { svk_reason InvalidImageConfig \"the image has no ENTRYPOINT or CMD and the container no command\"; exit 125; }\n")
	if c.workingDir != "" {
		fmt.Fprintf(&b, "\t\tsvk_wd=%s\n", shq(c.workingDir))
	} else {
		fmt.Fprintf(&b, "\t\tsvk_wd=$(svk_ch_config %s workdir | tr -d '\\0')\n", shq(c.image))
	}
	if c.readOnlyRoot {
		return "", readOnlyRootRefused(c, t.runtime, "the image is written through a tmpfs overlay (ch-run -W), which the pod's mount points need")
	}
	line := []string{"--unset-env=*", "--set-env", "--set-env0=/dev/fd/3", "--write-fake"}
	for _, m := range c.mounts {
		line = append(line, "--bind="+m.spec("")) // read-only cannot be asked for
	}
	fmt.Fprintf(&b, "\t\texec \"$svk_ch_run\" %s --cd=\"$svk_wd\" %s -- \"${svk_argv[@]}\" 3< <(svk_env)\n", shqAll(line), shq(c.image))
	return b.String(), nil
}
