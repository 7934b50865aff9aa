package main

import (
	"archive/tar"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// E2E image repositories, as KUBE_TEST_REPO_LIST maps the suite's
// registries onto the lab's (hack/conformance/run.sh writes that list):
// promoterE2eRegistry → HOST/e2e-test-images, gcRegistry → HOST/k8s.
// The names and tags are those of the pinned k8s.io/kubernetes
// (test/utils/image/manifest.go); a spec that pulls another one fails
// with ErrImagePull and names it.
var e2eImages = map[string]string{
	"busybox": "e2e-test-images/busybox:1.37.0-2",
	"agnhost": "e2e-test-images/agnhost:2.66.1",
	"prev":    "e2e-test-images/agnhost:2.55",
	"nginx":   "e2e-test-images/nginx:1.27.0-2",
	"pause":   "k8s/pause:3.10.2",
	"nnp":     "e2e-test-images/nonewprivs:1.4",
}

// pushE2EImages builds the e2e suite's images from a static busybox (all
// its applets, as the suite's busybox image has) and agnhost, and pushes
// them to registry.
//   - busybox: the applets, CMD ["sh"];
//   - agnhost (and its previous version, the same binary): busybox and
//     /agnhost, ENTRYPOINT ["/agnhost"], CMD ["pause"], as upstream's;
//   - nginx: busybox's httpd serving /usr/share/nginx/html on port 80;
//   - pause: /pause, which waits for a signal (agnhost pause);
//   - nonewprivs: busybox and /usr/local/bin/nnp, setuid root, CMD ["nnp"].
func pushE2EImages(registry, tlsDir, busybox, agnhost, nnp string) error {
	if busybox == "" || agnhost == "" || nnp == "" || tlsDir == "" {
		return fmt.Errorf("-push-e2e needs -busybox, -agnhost, -nnp and -tls-dir")
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	list, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", busybox, err)
	}
	all := strings.Fields(string(list))
	base, err := rootLayer(bb, all)
	if err != nil {
		return err
	}
	ag, err := os.ReadFile(agnhost)
	if err != nil {
		return err
	}
	agLayer, err := filesLayer(map[string]file{
		"agnhost":               {0o755, ag},
		"agnhost-2":             {0o777, []byte("agnhost")},  // upstream's link, for the entrypoint specs
		"usr/local/bin/agnhost": {0o777, []byte("/agnhost")}, // a link
		"pause":                 {0o755, []byte("#!/bin/sh\nexec /agnhost pause\n")},
	})
	if err != nil {
		return err
	}
	nb, err := os.ReadFile(nnp)
	if err != nil {
		return err
	}
	nnpLayer, err := filesLayer(map[string]file{"usr/local/bin/nnp": {0o4755, nb}})
	if err != nil {
		return err
	}
	htmlLayer, err := filesLayer(map[string]file{
		"usr/share/nginx/html/index.html": {0o644, []byte("<title>Welcome to nginx!</title>\n")},
	})
	if err != nil {
		return err
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	img := func(cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
		im := empty.Image
		for _, l := range layers {
			var err error
			if im, err = mutate.Append(im, mutate.Addendum{Layer: l,
				History: v1.History{Created: v1.Time{Time: time.Unix(0, 0).UTC()}, CreatedBy: "hack/registry: e2e image"}}); err != nil {
				return nil, err
			}
		}
		cfg.Env = env
		return withConfig(im, cfg)
	}
	images := map[string]v1.Image{}
	add := func(key string, cfg v1.Config, layers ...v1.Layer) {
		if err != nil {
			return
		}
		images[e2eImages[key]], err = img(cfg, layers...)
	}
	add("busybox", v1.Config{Cmd: []string{"sh"}}, base)
	add("agnhost", v1.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}}, base, agLayer)
	add("prev", v1.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}}, base, agLayer)
	add("nginx", v1.Config{Cmd: []string{"httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"}}, base, htmlLayer)
	add("pause", v1.Config{Entrypoint: []string{"/pause"}}, base, agLayer)
	add("nnp", v1.Config{Cmd: []string{"nnp"}}, base, nnpLayer)
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(tlsDir, "ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	for ref, im := range images {
		if err := push(registry+"/"+ref, im, authn.Anonymous, tr); err != nil {
			return err
		}
	}
	log.Printf("registry: pushed %d e2e images to %s", len(images), registry)
	return nil
}

// file is a layer's file: its mode and content (a symbolic link to the
// content when the mode is 0777).
type file struct {
	mode int64
	data []byte
}

// filesLayer is a layer of files, with their parent directories.
func filesLayer(files map[string]file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	for _, name := range sortedNames(files) {
		f := files[name]
		for d := filepath.Dir(name); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
		}
		h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: f.mode, Size: int64(len(f.data)), ModTime: epoch, Format: tar.FormatPAX}
		if f.mode == 0o777 {
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, string(f.data), 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

func sortedNames(m map[string]file) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out) // a parent before what is in it
	return out
}
