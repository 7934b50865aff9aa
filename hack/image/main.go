// Command image builds the slurm-vk provider image in Go, without Docker:
// the static binary on a minimal base (users, CA certificates, /tmp), user
// 65532, OCI media types. Every file and the image carry the commit's time,
// so one commit (and Go version) gives one digest. It writes an OCI image
// layout and, with -push, pushes the image to a registry.
//
//	go run ./hack/image -binary bin/slurm-vk -created $(git log -1 --format=%ct) \
//	    -revision $(git rev-parse HEAD) -oci-layout .cache/image/oci [-push host:port/repo:tag -ca-file ca.crt]
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func main() {
	binary := flag.String("binary", "", "the provider binary (a static linux/amd64 build)")
	created := flag.Int64("created", 0, "the image's time, in Unix seconds (the commit's: git log -1 --format=%ct)")
	revision := flag.String("revision", "", "the commit, for the image's revision label")
	out := flag.String("oci-layout", "", "write the image to this OCI image layout directory (replaced)")
	push := flag.String("push", "", "push the image to this reference (host:port/repo:tag)")
	caFile := flag.String("ca-file", "", "the registry's CA certificate, for -push")
	flag.Parse()
	if err := run(*binary, *created, *revision, *out, *push, *caFile); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(binary string, created int64, revision, out, push, caFile string) error {
	if binary == "" || created == 0 {
		return fmt.Errorf("-binary and -created are required")
	}
	bin, err := readBinary(binary)
	if err != nil {
		return err
	}
	img, err := Build(Spec{Binary: bin, Created: time.Unix(created, 0).UTC(), Revision: revision})
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	if out != "" {
		if err := os.RemoveAll(out); err != nil {
			return err
		}
		p, err := layout.Write(out, empty.Index)
		if err != nil {
			return err
		}
		if err := p.AppendImage(img); err != nil {
			return err
		}
	}
	if push != "" {
		ref, err := name.ParseReference(push)
		if err != nil {
			return err
		}
		opts := []remote.Option{remote.WithAuth(authn.Anonymous)}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%s: no certificate", caFile)
			}
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{RootCAs: pool}
			opts = append(opts, remote.WithTransport(tr))
		}
		if err := remote.Write(ref, img, opts...); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
	}
	fmt.Println(digest)
	return nil
}
