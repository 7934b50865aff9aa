package main

import (
	"archive/tar"
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// User is the image's user and group: distroless's nonroot.
const User = 65532

// BinaryPath is where the provider binary lives in the image.
const BinaryPath = "/usr/local/bin/slurm-vk"

// Spec is what goes into the image: the binary and the time every file
// and the image itself carry (the commit's, so one commit gives one digest).
type Spec struct {
	Binary   []byte
	Created  time.Time
	Revision string // the commit, as a label
}

// file is one entry of a layer.
type file struct {
	name string
	mode int64 // permission bits; a directory when name ends in /
	uid  int
	data []byte
}

// Build makes the image: a base layer (users, CA certificates, /tmp) and a
// layer with the binary, OCI media types, no history of a build tool.
func Build(s Spec) (v1.Image, error) {
	base, err := layer(s.Created, []file{
		{name: "etc/", mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: caBundle()},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: User},
		{name: "tmp/", mode: 0o1777},
	})
	if err != nil {
		return nil, err
	}
	bin, err := layer(s.Created, []file{
		{name: "usr/", mode: 0o755},
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: BinaryPath[1:], mode: 0o755, data: s.Binary},
	})
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, base, bin); err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: s.Created}
	cf.Config = v1.Config{
		User:       strconv.Itoa(User) + ":" + strconv.Itoa(User),
		Entrypoint: []string{BinaryPath},
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		WorkingDir: "/home/nonroot",
		// 10250: the kubelet API (logs); 9090: /metrics and /healthz.
		ExposedPorts: map[string]struct{}{"10250/tcp": {}, "9090/tcp": {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":    "slurm-vk",
			"org.opencontainers.image.source":   "https://github.com/slurmkube/slurm-vk",
			"org.opencontainers.image.revision": s.Revision,
		},
	}
	cf.History = nil
	return mutate.ConfigFile(img, cf)
}

// caBundle is Mozilla's root store as Go's x509roots module carries it, in
// PEM: the same bundle for the same module version, whatever the machine
// that builds. Roots with constraints PEM cannot carry (distrust after a
// date) are left out.
func caBundle() []byte {
	var b bytes.Buffer
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate})
	}
	return b.Bytes()
}

// layer is a gzip'd tar of files in name order, every header fixed (time,
// owner, format), so the same files give the same digest.
func layer(mtime time.Time, files []file) (v1.Layer, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: mtime, Format: tar.FormatPAX}
		if path.Clean(f.name) != f.name { // a directory: "etc/"
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// readBinary reads the binary to put in the image.
func readBinary(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("the provider binary: %w", err)
	}
	return b, nil
}
