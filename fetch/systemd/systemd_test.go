// Package systemd holds the systemd unit and example options for running
// slurm-fetchd on a login node; this test keeps them true to the binary.
package systemd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/internal/testbin"
	"github.com/slurmkube/slurm-vk/internal/testenv"
)

// directive returns the value of the unit's only `key=` line.
func directive(t *testing.T, unit, key string) string {
	t.Helper()
	var found []string
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s= appears %d times", key, len(found))
	}
	return found[0]
}

// TestExampleRuns starts the unit's command with the example options (paths
// swapped for test files) and checks that it serves HTTPS, so neither file
// can name a flag the binary lacks. systemd-analyze verify, when present,
// checks the unit itself.
func TestExampleRuns(t *testing.T) {
	unitText, err := os.ReadFile("slurm-fetchd.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(unitText)
	exec0, rest, _ := strings.Cut(directive(t, unit, "ExecStart"), " ")
	if filepath.Base(exec0) != "slurm-fetchd" || rest != "$SLURM_FETCHD_ARGS" {
		t.Fatalf("ExecStart=%s %s: want slurm-fetchd $SLURM_FETCHD_ARGS", exec0, rest)
	}
	if env := directive(t, unit, "EnvironmentFile"); env != "/etc/slurm-fetchd/slurm-fetchd.env" {
		t.Fatalf("EnvironmentFile=%s", env)
	}
	envText, err := os.ReadFile("slurm-fetchd.env")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, l := range strings.Split(string(envText), "\n") {
		if v, ok := strings.CutPrefix(l, "SLURM_FETCHD_ARGS="); ok {
			args = strings.Fields(v) // systemd splits an unbraced $VAR on white space
		}
	}
	if len(args) == 0 {
		t.Fatal("slurm-fetchd.env sets no SLURM_FETCHD_ARGS")
	}

	dir := t.TempDir()
	bin := testbin.Path(t, "slurm-fetchd")
	certFile, keyFile := selfSigned(t, dir)
	os.WriteFile(filepath.Join(dir, "token"), []byte("example-token\n"), 0o600)
	os.Mkdir(filepath.Join(dir, "root"), 0o755)
	local := map[string]string{"-listen": "127.0.0.1:0", "-root": filepath.Join(dir, "root"), "-token-file": filepath.Join(dir, "token"),
		"-tls-cert": certFile, "-tls-key": keyFile}
	swapped := 0
	for i := 0; i+1 < len(args); i++ {
		if v, ok := local[args[i]]; ok {
			args[i+1] = v
			swapped++
		}
	}
	if swapped != len(local) {
		t.Fatalf("example sets %d of %v; want all (HTTPS and a token file are the advice)", swapped, local)
	}
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(&stderr, pw)
	listening := fetchtest.Listening(pr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { err := cmd.Wait(); pw.Close(); exited <- err }()
	defer func() { cmd.Process.Kill(); <-exited }()
	addr, ok := <-listening
	if !ok {
		err := <-exited
		exited <- err
		t.Fatalf("slurm-fetchd %s did not listen: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("healthz: HTTP %d", resp.StatusCode)
			}
			break
		}
		select {
		case werr := <-exited:
			exited <- werr // for the deferred cleanup
			t.Fatalf("slurm-fetchd %s exited: %v\n%s", strings.Join(args, " "), werr, stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("slurm-fetchd %s did not serve HTTPS: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
	}

	// Verify the unit as installed, but pointing at files that exist: here,
	// or in the Slurm lab's root file system (Debian with systemd) when
	// this host has no systemd-analyze.
	write := func(unitDir, binPath string) string {
		verified := strings.Replace(unit, "ExecStart="+exec0, "ExecStart="+binPath, 1)
		os.WriteFile(filepath.Join(unitDir, "slurm-fetchd.service"), []byte(verified), 0o644)
		return filepath.Join(unitDir, "slurm-fetchd.service")
	}
	var verify *exec.Cmd
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		verify = exec.Command("systemd-analyze", "verify", write(dir, bin))
	} else if rootfs := labRootfs(t); rootfs != "" {
		in, err := os.MkdirTemp(filepath.Join(rootfs, "tmp"), "unit-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(in)
		b, _ := os.ReadFile(bin)
		os.WriteFile(filepath.Join(in, "slurm-fetchd"), b, 0o755)
		inside := "/tmp/" + filepath.Base(in)
		write(in, inside+"/slurm-fetchd")
		chroot, err := exec.LookPath("chroot")
		if err != nil {
			chroot = "/usr/sbin/chroot"
		}
		verify = exec.Command(chroot, rootfs, "/usr/bin/systemd-analyze", "verify", inside+"/slurm-fetchd.service")
		verify.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	} else {
		testenv.Need(t, os.Getenv("SLURM_LAB_REQUIRED") != "1", "no systemd-analyze here and no Slurm lab root file system to borrow it from: the unit is not verified")
	}
	if out, err := verify.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// labRootfs is the Slurm lab's root file system, from SLURM_LAB_ENV's
// SLURM_LAB_ROOTFS line, or "".
func labRootfs(t *testing.T) string {
	b, err := os.ReadFile(os.Getenv("SLURM_LAB_ENV"))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SLURM_LAB_ROOTFS="); ok {
			return v
		}
	}
	return ""
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "login1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}
