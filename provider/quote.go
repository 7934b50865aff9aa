package provider

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// refMark brackets, in an expanded string, a reference to a file-backed
// (Secret) variable: its value is only read when the job starts, so shq
// writes the reference as "${NAME}" instead of quoting it. No pod string
// can forge it: it holds 128 random bits drawn when the process starts,
// between NULs, which every pod string is refused for anyway (a NUL never
// reaches exec in an argument or environment value).
var refMark = func() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return "\x00" + hex.EncodeToString(b[:]) + "\x00"
}()

func envSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
}

// shq quotes s for bash: single quotes, with embedded ones closed, escaped
// and reopened. Nothing inside is expanded but run-time references
// (refMark), which become "${NAME}": one word whatever the value holds.
func shq(s string) string {
	if !strings.Contains(s, refMark) {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	var b strings.Builder
	for i, part := range strings.Split(s, refMark) {
		switch {
		case i%2 == 1:
			b.WriteString(`"${` + part + `}"`)
		case part != "":
			b.WriteString(shq(part))
		}
	}
	return b.String()
}

// prefixRefs renames the run-time references in s: where a runtime takes
// the container's environment under a prefix (apptainer's APPTAINERENV_),
// a Secret-backed variable is set in the job's shell under that name
// only, so "${NAME}" would find nothing (or the job's own NAME).
func prefixRefs(s, prefix string) string {
	if prefix == "" || !strings.Contains(s, refMark) {
		return s
	}
	parts := strings.Split(s, refMark)
	for i := 1; i < len(parts); i += 2 {
		if !strings.HasPrefix(parts[i], ReservedEnvPrefix) { // the script's own are not the container's
			parts[i] = prefix + parts[i]
		}
	}
	return strings.Join(parts, refMark)
}

func shqAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = shq(s)
	}
	return strings.Join(q, " ")
}

// shWord is s as one bash word: bare where it is a plain name, quoted
// otherwise (the scripts stay readable where nothing needs quoting).
func shWord(s string) string {
	if shellName.MatchString(s) {
		return s
	}
	return shq(s)
}
