package main

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	rows, err := parse([]byte(`# Header of the file, not a value.

# -- The list.
items: []
group:
  # -- A number,
  # on two lines.
  port: 10250
  # -- Whole object | with a pipe.
  obj:
    # -- Nested.
    flag: true
    plain: 1
`))
	if err != nil {
		t.Fatal(err)
	}
	got := table(rows)
	for _, want := range []string{
		"| `items` | list | `[]` | The list. |",
		"| `group.port` | int | `10250` | A number, on two lines. |",
		"| `group.obj` | object | `{\"flag\":true,\"plain\":1}` | Whole object \\| with a pipe. |",
		"| `group.obj.flag` | bool | `true` | Nested. |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if _, err := parse([]byte("# -- ok\na: 1\nb:\n  c: x\n")); err == nil || !strings.Contains(err.Error(), "b.c") {
		t.Errorf("undocumented value: %v", err)
	}
	if _, err := splice([]byte("no markers"), "x"); err == nil {
		t.Error("splice without markers")
	}
}
