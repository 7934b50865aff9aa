package slurmclient

import (
	"fmt"
	"strings"
)

// expandPaths fills in the filename patterns Slurm 26.05 leaves in
// stdout/stderr (24.11 expands them itself), for the patterns that depend
// only on the job record.
func expandPaths(j *Job) {
	j.Stdout = expandPattern(j.Stdout, j)
	j.Stderr = expandPattern(j.Stderr, j)
}

func expandPattern(p string, j *Job) string {
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+1 == len(p) {
			b.WriteByte(p[i])
			continue
		}
		i++
		switch p[i] {
		case '%':
			b.WriteByte('%')
		case 'j', 'A':
			fmt.Fprint(&b, uint32(j.ID))
		case 'x':
			b.WriteString(j.Name)
		case 'u':
			b.WriteString(j.UserName)
		default:
			b.WriteByte('%')
			b.WriteByte(p[i])
		}
	}
	return b.String()
}
