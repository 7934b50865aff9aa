package provider

import (
	"crypto/sha256"
	"fmt"
	"strings"
)

// imageFileHelpers keep, for runtimes that run an image file (apptainer's
// SIF, enroot's squashfs), one file per image in node-local storage
// ($SLURM_VK_IMAGE_CACHE, default /var/tmp/$USER.slurm-vk), so that the
// pull policy means what it means on a kubelet. svk_pull_file POLICY IMAGE
// FILE FETCH ARGS... runs "FETCH TMPFILE ARGS..." when the policy says so
// and renames the result into place (two jobs may pull at once); a failure
// leaves ErrImagePull and the runtime's message for the exit marker.
const imageFileHelpers = `svk_cache=${SLURM_VK_IMAGE_CACHE:-/var/tmp/$(id -un).slurm-vk}
svk_pull_file() { # POLICY IMAGE FILE FETCH [ARGS...]
	local policy=$1 image=$2 file=$3 fetch=$4 out tmp
	shift 4
	case $policy in
	Never)
		[ -s "$file" ] && return 0
		svk_reason ErrImageNeverPull "Container image \"$image\" is not present with pull policy of Never"
		return 125 ;;
	IfNotPresent) [ -s "$file" ] && return 0 ;;
	esac
	mkdir -p "${file%/*}" || return 125
	tmp="$file.$$.part"
	if out=$("$fetch" "$tmp" "$@" 2>&1 >/dev/null) && mv -f "$tmp" "$file"; then return 0; fi
	rm -f "$tmp"
	svk_reason ErrImagePull "Failed to pull image \"$image\": $(printf '%s\n' "$out" | tail -n 5 | tr '\n' ' ')"
	return 125
}
`

// apptainerHelpers: svk_apptainer_fetch OUT IMAGE [USERFILE PASSFILE]
// pulls a SIF, with credentials for the pull only.
const apptainerHelpers = `svk_apptainer_fetch() {
	if [ -n "${3:-}" ]; then
		APPTAINER_DOCKER_USERNAME=$(cat "$3") APPTAINER_DOCKER_PASSWORD=$(cat "$4") apptainer pull --force "$1" "docker://$2"
	else
		apptainer pull --force "$1" "docker://$2"
	fi
}
`

// imageFile names an image's file in the node-local cache: readable, and
// a digest of the reference so that no two references share one.
// apptainerEnvPrefix: apptainer sets the container's NAME from the
// environment's APPTAINERENV_NAME (with --cleanenv, nothing else).
const apptainerEnvPrefix = "APPTAINERENV_"

func imageFile(runtime, image, ext string) string {
	sum := sha256.Sum256([]byte(image))
	name := strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(image)
	return fmt.Sprintf("$svk_cache/%s/%s-%x.%s", runtime, name, sum[:6], ext)
}

// launchApptainer runs the image's SIF with apptainer: `run` (ENTRYPOINT
// with args replacing CMD, as Docker) without a command, else `exec`.
// The pod's env reaches the container through APPTAINERENV_<NAME>
// (apptainer's own channel, never the launching shell's names), with
// --cleanenv (nothing of the job's) and --no-eval (values are not shell
// code). apptainer does not apply the image's WORKDIR: without workingDir
// the container starts in the job's directory.
func (t *translator) launchApptainer(c resolved) (string, error) {
	var b strings.Builder
	sif := imageFile("apptainer", c.image, "sif")
	fmt.Fprintf(&b, "\t\tsvk_sif=\"%s\"\n", sif)
	pull := []string{"svk_pull_file", pullPolicyOf(c.pullPolicy), c.image}
	fetch := []string{"svk_apptainer_fetch", c.image}
	if user, pass, ok, err := t.registryCredentials(c); err != nil {
		return "", err
	} else if ok {
		fetch = append(fetch, user, pass)
	}
	fmt.Fprintf(&b, "\t\t%s \"$svk_sif\" %s || exit $?\n", shqAll(pull), shqAll(fetch))
	if err := shellNamesOnly(c, RuntimeApptainer, "apptainer takes the environment as "+apptainerEnvPrefix+"NAME"); err != nil {
		return "", err
	}
	exportEnv(&b, c.env, apptainerEnvPrefix)
	line := []string{"apptainer", "run"}
	if len(c.command) > 0 {
		line[1] = "exec"
	}
	line = append(line, "--cleanenv", "--no-eval")
	if c.workingDir != "" {
		line = append(line, "--pwd", c.workingDir)
	}
	for _, m := range c.mounts {
		line = append(line, "--bind", m.spec(":ro"))
	}
	var argv []string
	for _, a := range append(append([]string{}, c.command...), c.args...) {
		argv = append(argv, prefixRefs(a, apptainerEnvPrefix)) // where the job's shell has a Secret
	}
	fmt.Fprintf(&b, "\t\texec %s \"$svk_sif\" %s\n", shqAll(line), shqAll(argv))
	return b.String(), nil
}
