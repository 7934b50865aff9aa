// Command registry serves the lab's container images on loopback: an OCI
// registry (go-containerregistry's in-memory one) with the test images built
// here, in Go, from a static busybox binary. No image comes from outside
// this machine.
//
//	-listen 127.0.0.1:6850          anonymous pulls
//	-private-listen 127.0.0.1:6851  every request needs -user/-password (basic auth)
//
// Both speak HTTPS with a certificate of the lab's own CA (made once in
// -tls-dir, ca.crt there), which the lab installs in its rootfs's trust
// store: runtimes pull as from any registry, without insecure settings.
//
// Images (the same on both listeners, tag 1):
//
//	lab/busybox    busybox applets, CMD ["sh"]
//	lab/app        ENTRYPOINT ["/bin/echo","from-entrypoint"], CMD ["from-cmd"],
//	               WORKDIR /srv/app, ENV GREETING=from-image, USER 1000
//
// With -push-e2e it pushes the images the upstream e2e suite runs to a
// registry that is already serving, and exits (e2e.go).
//
// Layers and configs carry fixed times, so every start serves the same
// digests and a runtime's image cache stays valid across lab restarts.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// applets are the busybox commands the images link to.
var applets = []string{"sh", "echo", "cat", "sleep", "env", "pwd", "id", "ls", "printf", "true", "false",
	"mkdir", "touch", "test", "[", "kill", "wc", "head", "tail", "seq", "date", "httpd", "stat", "grep", "sed",
	"uname", "hostname", "whoami", "cut"}

func main() {
	listen := flag.String("listen", "127.0.0.1:6850", "anonymous registry address (loopback)")
	privListen := flag.String("private-listen", "127.0.0.1:6851", "registry address that requires basic auth")
	user := flag.String("user", "puller", "basic-auth user of the private registry")
	passFile := flag.String("password-file", "", "file holding the private registry's password (required)")
	busybox := flag.String("busybox", "", "a static busybox binary to build the images from (required)")
	tlsDir := flag.String("tls-dir", "", "where the lab CA and the serving certificate are kept (made when missing; required)")
	pushE2E := flag.String("push-e2e", "", "instead of serving: push the upstream e2e suite's images (e2e.go) to the registry at this host:port, trusting -tls-dir's CA, and exit")
	agnhost := flag.String("agnhost", "", "with -push-e2e: the agnhost binary (static)")
	nnp := flag.String("nnp", "", "with -push-e2e: the nonewprivs image's program (static; test/conformance/nnp)")
	flag.Parse()
	if *pushE2E != "" {
		if err := pushE2EImages(*pushE2E, *tlsDir, *busybox, *agnhost, *nnp); err != nil {
			log.Fatalf("registry: %v", err)
		}
		return
	}
	if *busybox == "" || *passFile == "" || *tlsDir == "" {
		log.Fatal("registry: -busybox, -password-file and -tls-dir are required")
	}
	cert, pool, err := labTLS(*tlsDir)
	if err != nil {
		log.Fatalf("registry: TLS: %v", err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	pass, err := os.ReadFile(*passFile)
	if err != nil {
		log.Fatal(err)
	}
	images, err := buildImages(*busybox)
	if err != nil {
		log.Fatalf("registry: build images: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	pub, err := serve(ctx, *listen, tlsCfg, registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	if err != nil {
		log.Fatal(err)
	}
	priv, err := serve(ctx, *privListen, tlsCfg, basicAuth(*user, string(bytes.TrimSpace(pass)),
		registry.New(registry.Logger(log.New(io.Discard, "", 0)))))
	if err != nil {
		log.Fatal(err)
	}
	auth := &authn.Basic{Username: *user, Password: string(bytes.TrimSpace(pass))}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	for repo, img := range images {
		if err := push(pub+"/"+repo, img, authn.Anonymous, tr); err != nil {
			log.Fatal(err)
		}
		if err := push(priv+"/"+repo, img, auth, tr); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("registry: serving %d images on %s (anonymous) and %s (basic auth)", len(images), pub, priv)
	<-ctx.Done()
}

func serve(ctx context.Context, addr string, cfg *tls.Config, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	ln = tls.NewListener(ln, cfg)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()
	return ln.Addr().String(), nil
}

// basicAuth guards every request, the /v2/ ping included, so clients learn
// the challenge before they ask for a manifest.
func basicAuth(user, pass string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(pass)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="slurm-vk lab"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func push(ref string, img v1.Image, auth authn.Authenticator, tr http.RoundTripper) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	if err := remote.Write(r, img, remote.WithAuth(auth), remote.WithTransport(tr)); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

func buildImages(busybox string) (map[string]v1.Image, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	layer, err := rootLayer(bin, applets)
	if err != nil {
		return nil, err
	}
	// A history entry per layer: some builders (Charliecloud's ch-image)
	// refuse a config without one.
	base, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer,
		History: v1.History{Created: v1.Time{Time: time.Unix(0, 0).UTC()}, CreatedBy: "hack/registry: busybox-static and its applets"}})
	if err != nil {
		return nil, err
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	bb, err := withConfig(base, v1.Config{Env: env, Cmd: []string{"sh"}})
	if err != nil {
		return nil, err
	}
	app, err := withConfig(base, v1.Config{
		Env:        append(env, "GREETING=from-image", "IMAGE_ONLY=kept"),
		Entrypoint: []string{"/bin/echo", "from-entrypoint"},
		Cmd:        []string{"from-cmd"},
		WorkingDir: "/srv/app",
		User:       "1000",
	})
	if err != nil {
		return nil, err
	}
	return map[string]v1.Image{"lab/busybox:1": bb, "lab/app:1": app}, nil
}

func withConfig(img v1.Image, c v1.Config) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Config = "amd64", "linux", c
	return mutate.ConfigFile(img, cf)
}

// rootLayer is a minimal root file system: busybox and its applets, the
// directories runtimes mount onto, and users root and app (1000).
func rootLayer(busybox []byte, applets []string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	add := func(h *tar.Header, data []byte) error {
		h.ModTime, h.Format = epoch, tar.FormatPAX
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	dirs := []struct {
		name string
		mode int64
	}{{"bin", 0o755}, {"dev", 0o755}, {"etc", 0o755}, {"home", 0o755}, {"mnt", 0o755}, {"proc", 0o755},
		{"run", 0o755}, {"srv", 0o755}, {"srv/app", 0o777}, {"sys", 0o755}, {"tmp", 0o1777}, {"usr", 0o755},
		{"usr/bin", 0o755}, {"var", 0o755}}
	for _, d := range dirs {
		if err := add(&tar.Header{Name: d.name + "/", Typeflag: tar.TypeDir, Mode: d.mode}, nil); err != nil {
			return nil, err
		}
	}
	files := []struct {
		name string
		mode int64
		data string
	}{
		{"etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"},
		{"etc/group", 0o644, "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"},
		{"etc/hosts", 0o644, "127.0.0.1 localhost\n"},
		{"etc/resolv.conf", 0o644, ""},
	}
	for _, f := range files {
		if err := add(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: f.mode}, []byte(f.data)); err != nil {
			return nil, err
		}
	}
	if err := add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, busybox); err != nil {
		return nil, err
	}
	for _, a := range applets {
		if a == "busybox" { // Debian's lists itself: a link would replace the binary
			continue
		}
		if err := add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}
