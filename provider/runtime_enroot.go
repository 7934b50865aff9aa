package provider

import (
	"fmt"
	"strings"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// enrootHelpers: svk_enroot_fetch OUT URI [USERFILE PASSFILE] imports a
// squashfs; credentials go to enroot as a netrc-style .credentials file in
// a private ENROOT_CONFIG_PATH for the import only (lines for the registry
// with and without its port, as enroot versions match either).
const enrootHelpers = `svk_enroot_fetch() {
	if [ -z "${3:-}" ]; then
		enroot import -o "$1" "$2"
		return
	fi
	local conf host=${2#docker://}
	host=${host%%#*}
	conf=$(mktemp -d) || return 1
	(umask 077 && printf 'machine %s login %s password %s\n' "$host" "$(cat "$3")" "$(cat "$4")" "${host%:*}" "$(cat "$3")" "$(cat "$4")" >"$conf/.credentials")
	ENROOT_CONFIG_PATH=$conf enroot import -o "$1" "$2"
	local svk_rc=$?
	rm -rf "$conf"
	return $svk_rc
}
`

// launchEnroot imports the image into a node-local squashfs (per the pull
// policy), creates the job's container from it and starts it. enroot runs
// the image's ENTRYPOINT with the arguments it is given (CMD without), so a
// command replaces it through --rc, a script that changes to workingDir
// and execs its arguments. The pod's env goes through --env: literal
// values on the command line, Secret-backed ones by name from enroot's
// environment (never a name that steers enroot or its shell: enroot is a
// bash script). Read-only mounts are rbind,ro.
func (t *translator) launchEnroot(c resolved) (string, error) {
	var b strings.Builder
	name := "slurm-vk-$svk_job-" + c.name
	fmt.Fprintf(&b, "\t\tsvk_sqsh=\"%s\"\n", imageFile("enroot", c.image, "sqsh"))
	fetch := []string{"svk_enroot_fetch", enrootURI(c.image)}
	if user, pass, ok, err := t.registryCredentials(c); err != nil {
		return "", err
	} else if ok {
		fetch = append(fetch, user, pass)
	}
	fmt.Fprintf(&b, "\t\t%s \"$svk_sqsh\" %s || exit $?\n", shqAll([]string{"svk_pull_file", pullPolicyOf(c.pullPolicy), c.image}), shqAll(fetch))
	fmt.Fprintf(&b, "\t\tenroot create -f -n \"%s\" \"$svk_sqsh\" >/dev/null || exit 125\n", name)
	line := []string{"enroot", "start", "--rw"}
	if c.readOnlyRoot {
		line = line[:2] // enroot's root is read-only without --rw
	}
	for _, m := range c.mounts {
		// enroot turns the colons into the blanks of an fstab line, whose
		// fields are split at blanks (and \ begins an escape): a blank in a
		// path would shift the fields (a mountPath "/etc/app none rbind"
		// drops ",ro").
		for _, p := range []string{m.host, m.path} {
			if strings.ContainsAny(p, " \t\n\v\f\r\\#") {
				return "", invalid("InvalidMountPath", "container %q: mount path %q: with runtime enroot a mount path may not contain blanks, '\\' or '#' (enroot makes an fstab line of it)", c.name, p)
			}
		}
		line = append(line, "--mount", m.spec(":none:x-create=auto,rbind,ro"))
	}
	if err := shellNamesOnly(c, RuntimeEnroot, "enroot starts the container through its /bin/sh, which drops other names"); err != nil {
		return "", err
	}
	for _, e := range c.env {
		if e.file == "" && !strings.Contains(e.value, refMark) {
			if strings.Contains(e.value, "\n") {
				return "", invalid("InvalidEnvValue", "container %q env %s: with runtime enroot a value may not contain a newline", c.name, e.name)
			}
			line = append(line, "--env", e.name+"="+e.value)
			continue
		}
		if runtimeReservedName(e.name) || strings.HasPrefix(e.name, "ENROOT_") {
			return "", reservedSecret(c, e, t.runtime)
		}
		exportEnv(&b, []envVar{e}, "")
		line = append(line, "--env", e.name)
	}
	if len(c.command) > 0 || c.workingDir != "" {
		if len(c.command) == 0 {
			return "", invalid("UnsupportedWorkingDir", "container %q: with runtime enroot, workingDir needs a command (enroot starts the image's ENTRYPOINT in its own WORKDIR)", c.name)
		}
		rc := "exec \"$@\"\n"
		if c.workingDir != "" {
			rc = "cd " + shq(c.workingDir) + " || exit 126\n" + rc
		}
		line = append(line, "--rc", t.stage(layout.StagedRuntimeFile(RuntimeEnroot, c.name, "rc"), []byte(rc), 0o644))
	}
	fmt.Fprintf(&b, "\t\texec %s \"%s\" %s\n", shqAll(line), name, shqAll(append(append([]string{}, c.command...), c.args...)))
	return b.String(), nil
}
