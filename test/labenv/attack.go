package labenv

import (
	"strconv"
	"strings"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// TenancyAttack is a job script that tries, from inside a job of one
// namespace, everything another namespace's pod must be safe from. It
// reads SHARED (the fetch endpoint's root), VICTIM (the victim pod's
// directory), SECRET (a staged Secret's path in it), VICTIM_JOB and
// VICTIM_COMMENT. Each attempt prints "refused <what>" or "DID <what>";
// then it submits a job of its own under the victim's comment and prints
// its ID, and ends with "attack-done".
var TenancyAttack = strings.NewReplacer("{LOG}", layout.AttemptName("0", layout.KindLog), "{EXIT}", layout.AttemptName("0", layout.KindExit)).Replace(`
try() { what=$1; shift; if "$@" >/dev/null 2>&1; then echo "DID $what"; else echo "refused $what"; fi; }
try list-shared-root ls "$SHARED"
try list-victim ls "$VICTIM"
try read-secret cat "$VICTIM/$SECRET"
try read-log cat "$VICTIM/main/{LOG}"
try append-log sh -c 'echo forged >>"$VICTIM/main/{LOG}"'
try write-marker sh -c 'echo 0 >"$VICTIM/main/{EXIT}"'
try rename-victim mv "$VICTIM" "$SHARED/stolen"
try cancel-victim scancel "$VICTIM_JOB"
try signal-victim scancel -s KILL "$VICTIM_JOB"
try hold-victim scontrol hold "$VICTIM_JOB"
echo forging
sbatch --parsable --comment="$VICTIM_COMMENT" -o /dev/null --wrap 'sleep 300'
echo attack-done
`)

// TenancyAttempts is how many "refused"/"DID" lines TenancyAttack prints.
const TenancyAttempts = 10

// AttackResult is what TenancyAttack's output says.
type AttackResult struct {
	Refused int      // attempts that failed
	Did     []string // attempts that worked: each one a hole
	Forged  int      // the ID of the job submitted under the victim's comment; 0: none
	Done    bool     // the script ran to its end
}

// ParseAttack reads TenancyAttack's output.
func ParseAttack(out string) AttackResult {
	var r AttackResult
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		switch {
		case strings.HasPrefix(line, "refused "):
			r.Refused++
		case strings.HasPrefix(line, "DID "):
			r.Did = append(r.Did, strings.TrimPrefix(line, "DID "))
		case line == "attack-done":
			r.Done = true
		default:
			if id, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
				r.Forged = id
			}
		}
	}
	return r
}
