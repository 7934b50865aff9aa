// Command chart-docs writes the values table of a Helm chart's README from
// the `# --` comments in its values.yaml (the helm-docs convention), between
// the markers <!-- values:start --> and <!-- values:end -->. A value
// without a `# --` comment is an error, so every value stays documented.
//
//	go run ./hack/chart-docs -chart charts/slurm-vk
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

const (
	startMarker = "<!-- values:start -->"
	endMarker   = "<!-- values:end -->"
)

func main() {
	chart := flag.String("chart", "charts/slurm-vk", "chart directory")
	flag.Parse()
	if err := run(*chart); err != nil {
		fmt.Fprintln(os.Stderr, "chart-docs:", err)
		os.Exit(1)
	}
}

func run(chart string) error {
	values, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	if err != nil {
		return err
	}
	rows, err := parse(values)
	if err != nil {
		return err
	}
	readme := filepath.Join(chart, "README.md")
	doc, err := os.ReadFile(readme)
	if err != nil {
		return err
	}
	out, err := splice(doc, table(rows))
	if err != nil {
		return fmt.Errorf("%s: %w", readme, err)
	}
	if bytes.Equal(out, doc) {
		return nil
	}
	return os.WriteFile(readme, out, 0o644)
}

// row is one documented value.
type row struct {
	Key, Type, Default, Description string
}

// parse walks values.yaml in file order. A key with a `# --` comment is a
// row; the keys of any mapping are walked in turn, and those with their
// own comment get their own row.
func parse(values []byte) ([]row, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(values, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("values.yaml is not a mapping")
	}
	var rows []row
	var undocumented []string
	// covered: the mapping's own row documents its keys, so they need no
	// comment of their own (resources.requests.cpu, say).
	var walk func(prefix string, m *yaml.Node, covered bool) error
	walk = func(prefix string, m *yaml.Node, covered bool) error {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			key := prefix + k.Value
			desc, ok := description(k.HeadComment)
			if !ok {
				if v.Kind == yaml.MappingNode && len(v.Content) > 0 {
					if err := walk(key+".", v, covered); err != nil {
						return err
					}
				} else if !covered {
					undocumented = append(undocumented, key)
				}
				continue
			}
			var val any
			if err := v.Decode(&val); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			def, err := json.Marshal(val)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			rows = append(rows, row{Key: key, Type: typeOf(v), Default: string(def), Description: desc})
			if v.Kind == yaml.MappingNode {
				if err := walk(key+".", v, true); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("", doc.Content[0], false); err != nil {
		return nil, err
	}
	if len(undocumented) > 0 {
		return nil, fmt.Errorf("values without a `# --` comment: %s", strings.Join(undocumented, ", "))
	}
	return rows, nil
}

// description returns the text from the last `# --` line of a comment on.
func description(comment string) (string, bool) {
	lines := strings.Split(comment, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "# --") {
			start = i
		}
	}
	if start < 0 {
		return "", false
	}
	var words []string
	for i, l := range lines[start:] {
		l = strings.TrimPrefix(strings.TrimSpace(l), "#")
		if i == 0 {
			l = strings.TrimPrefix(strings.TrimSpace(l), "--")
		}
		if l = strings.TrimSpace(l); l != "" {
			words = append(words, l)
		}
	}
	return strings.Join(words, " "), true
}

func typeOf(v *yaml.Node) string {
	switch v.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "object"
	}
	switch v.Tag {
	case "!!int":
		return "int"
	case "!!bool":
		return "bool"
	case "!!float":
		return "float"
	}
	return "string"
}

func table(rows []row) string {
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n")
	cell := strings.NewReplacer("|", `\|`, "\n", " ")
	for _, r := range rows {
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", r.Key, r.Type, cell.Replace(r.Default), cell.Replace(r.Description))
	}
	return b.String()
}

// splice replaces what lies between the markers.
func splice(doc []byte, table string) ([]byte, error) {
	s := string(doc)
	i, j := strings.Index(s, startMarker), strings.Index(s, endMarker)
	if i < 0 || j < i {
		return nil, fmt.Errorf("no %s ... %s markers", startMarker, endMarker)
	}
	return []byte(s[:i+len(startMarker)] + "\n" + table + s[j:]), nil
}
