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
	var b strings.Builder
	exportEnv(&b, append(c.volEnv, c.env...), "")
	if c.workingDir != "" {
		fmt.Fprintf(&b, "\t\tcd %s || exit 126\n", shq(c.workingDir))
	}
	fmt.Fprintf(&b, "\t\texec %s\n", shqAll(append(c.command, c.args...)))
	return b.String(), nil
}
