package main

import (
	"archive/tar"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/slurmkube/slurm-vk/internal/testbin"
)

var epoch = time.Unix(1_790_000_000, 0).UTC()

// TestReproducible: the same binary and time give the same digest; another
// time gives another.
func TestReproducible(t *testing.T) {
	digest := func(s Spec) string {
		img, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	s := Spec{Binary: []byte("#!binary"), Created: epoch, Revision: "abc"}
	a, b := digest(s), digest(s)
	if a != b {
		t.Errorf("two builds of one spec: %s and %s", a, b)
	}
	s.Created = epoch.Add(time.Second)
	if c := digest(s); c == a {
		t.Errorf("another time, the same digest %s", c)
	}
}

// TestImage builds the real provider binary, puts it in the image, writes
// the OCI layout as make image does, and checks what a kubelet would run:
// user 65532, the entrypoint is the binary (it runs and prints its usage),
// a CA bundle Go can use, files owned by root but the user's home.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	bin := testbin.Path(t, "slurm-vk") // static, as make image builds it
	oci := filepath.Join(dir, "oci")
	if err := run(bin, epoch.Unix(), "abc", oci, "", ""); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(oci)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("OCI layout index %+v, %v: want one image", m, err)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != BinaryPath ||
		!cf.Created.Time.Equal(epoch) || cf.Config.Labels["org.opencontainers.image.revision"] != "abc" {
		t.Errorf("config %+v created %v", cf.Config, cf.Created)
	}

	files := map[string]*tar.Header{}
	contents := map[string][]byte{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h
		if h.Typeflag == tar.TypeReg {
			if contents[h.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
		if owner := h.Uid; owner != 0 && strings.TrimSuffix(h.Name, "/") != "home/nonroot" {
			t.Errorf("%s belongs to %d, want root", h.Name, owner)
		}
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s has time %v, want the commit's", h.Name, h.ModTime)
		}
	}
	if h := files["home/nonroot"]; h == nil || h.Uid != User || h.Typeflag != tar.TypeDir {
		t.Errorf("home/nonroot %+v, want the user's directory", h)
	}

	var roots int
	for rest := contents["etc/ssl/certs/ca-certificates.crt"]; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			t.Fatalf("CA bundle: %v", err)
		}
		roots++
	}
	if roots < 100 {
		t.Errorf("CA bundle has %d certificates", roots)
	}

	// The image's binary is the provider: it runs and knows its flags.
	inImage := filepath.Join(dir, "from-image")
	if err := os.WriteFile(inImage, contents[strings.TrimPrefix(BinaryPath, "/")], 0o755); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(inImage, "-h").CombinedOutput()
	if !strings.Contains(string(out), "-slurmrestd-url") {
		t.Errorf("the image's binary -h: %s", out)
	}
}
