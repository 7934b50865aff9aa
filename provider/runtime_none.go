package provider

import (
	"fmt"
	"strings"
)

// launchNone runs the command directly on the compute node, in the shell's
// environment: there is no image, so the pod's env is the process's.
func launchNone(c resolved) (string, error) {
	if len(c.command) == 0 && len(c.args) == 0 {
		return "", invalid("NoCommand", "container %q: runtime none needs a command (there is no image entrypoint)", c.name)
	}
	// Names bash cannot export reach the process through env(1).
	var envArgs []string
	for _, e := range c.env {
		if bashOwn(e.name) {
			return "", invalid("InvalidEnvName", "container %q: environment variable name %q: with runtime none the environment is set by bash, which keeps %s for itself", c.name, e.name, e.name)
		}
		if !shellName.MatchString(e.name) {
			envArgs = append(envArgs, envLine(e))
		}
	}
	if c.readOnlyRoot {
		return "", readOnlyRootRefused(c, RuntimeNone, "the command runs on the node itself, whose file system is the job user's to write")
	}
	argv := append(append([]string{}, c.command...), c.args...)
	if len(envArgs) > 0 {
		if strings.Contains(argv[0], "=") {
			return "", invalid("InvalidContainer", "container %q: with runtime none and variable names that are not shell names, the command may not contain '=' (env(1) would take it for a variable)", c.name)
		}
		argv = append(append([]string{"env", "--"}, envArgs...), argv...)
	}
	if c.noNewPrivs {
		// A setuid program on the node would otherwise gain its owner's
		// rights (util-linux's setpriv, on every Debian-like node).
		argv = append([]string{"setpriv", "--no-new-privs", "--"}, argv...)
	}
	var b strings.Builder
	exportEnv(&b, append(c.volEnv, c.env...), "")
	if c.workingDir != "" {
		fmt.Fprintf(&b, "\t\tcd %s || exit 126\n", shq(c.workingDir))
	}
	fmt.Fprintf(&b, "\t\texec %s\n", shqAll(argv))
	return b.String(), nil
}

// bashOwn are the variables bash sets itself, readonly or special (an
// assignment is ignored, refused or changes their meaning), so an export
// cannot pass them on.
func bashOwn(name string) bool {
	switch name {
	case "BASHOPTS", "BASHPID", "DIRSTACK", "EPOCHREALTIME", "EPOCHSECONDS", "EUID", "FUNCNAME", "GROUPS", "HISTCMD",
		"LINENO", "PIPESTATUS", "PPID", "RANDOM", "SECONDS", "SHELLOPTS", "SRANDOM", "UID":
		return true
	}
	return strings.HasPrefix(name, "BASH_")
}
