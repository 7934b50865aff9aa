// Command openapi-capture saves the OpenAPI document served by a running
// slurmrestd (GET /openapi/v3), cut down to one API version: the paths under
// /slurm/<version>/ and the components they reference, transitively. The
// output is indented JSON with sorted keys, so a re-capture of the same
// server is byte-identical.
//
//	go run ./hack/openapi-capture -url http://127.0.0.1:6820 -user jobuser \
//	    -token-file .cache/lab/trixie/state/token -version v0.0.42 -out openapi/v0.0.42/openapi.json
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sort"
	"strings"
)

func main() {
	url := flag.String("url", "", "slurmrestd base URL")
	user := flag.String("user", "", "X-SLURM-USER-NAME")
	tokenFile := flag.String("token-file", "", "file holding a JWT")
	version := flag.String("version", "", "API version to keep, e.g. v0.0.42")
	out := flag.String("out", "", "output file")
	flag.Parse()
	if *url == "" || *user == "" || *tokenFile == "" || *version == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		log.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, strings.TrimSuffix(*url, "/")+"/openapi/v3", nil)
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("X-SLURM-USER-NAME", *user)
	req.Header.Set("X-SLURM-USER-TOKEN", strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		log.Fatalf("GET /openapi/v3: HTTP %d: %s", resp.StatusCode, body)
	}
	doc, err := cut(body, *version)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, doc, 0o644); err != nil {
		log.Fatal(err)
	}
}

// cut keeps the paths of one version and the components they reach.
func cut(body []byte, version string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // keep numbers exactly as served
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode spec: %w", err)
	}
	paths, _ := doc["paths"].(map[string]any)
	prefix := "/slurm/" + version + "/"
	kept := map[string]any{}
	var served []string
	for p, v := range paths {
		if strings.HasPrefix(p, prefix) {
			kept[p] = v
		}
		if strings.HasPrefix(p, "/slurm/v") {
			served = append(served, strings.SplitN(strings.TrimPrefix(p, "/slurm/"), "/", 2)[0])
		}
	}
	if len(kept) == 0 {
		sort.Strings(served)
		return nil, fmt.Errorf("the server serves no paths under %s (it serves %v)", prefix, uniq(served))
	}
	doc["paths"] = kept

	comps, _ := doc["components"].(map[string]any)
	reached := map[string]bool{} // "schemas/name"
	queue := refs(kept, nil)
	for len(queue) > 0 {
		r := queue[0]
		queue = queue[1:]
		if reached[r] {
			continue
		}
		reached[r] = true
		kind, name, _ := strings.Cut(r, "/")
		if section, ok := comps[kind].(map[string]any); ok {
			queue = refs(section[name], queue)
		}
	}
	for kind, v := range comps {
		section, ok := v.(map[string]any)
		if !ok || kind == "securitySchemes" {
			continue
		}
		for name := range section {
			if !reached[kind+"/"+name] {
				delete(section, name)
			}
		}
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// refs appends every "#/components/<kind>/<name>" reference found in v.
func refs(v any, acc []string) []string {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if s, ok := x.(string); ok && k == "$ref" && strings.HasPrefix(s, "#/components/") {
				acc = append(acc, strings.TrimPrefix(s, "#/components/"))
				continue
			}
			acc = refs(x, acc)
		}
	case []any:
		for _, x := range t {
			acc = refs(x, acc)
		}
	}
	return acc
}

func uniq(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}
