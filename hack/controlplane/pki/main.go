// Command pki writes the certificates, keys and kubeconfigs of the
// end-to-end control plane into a directory: one CA; serving certificates
// for kube-apiserver and for the virtual kubelet's API; client certificates
// for admin, the scheduler, the controller-manager, the API server's calls
// to kubelets, and the provider; the service-account key pair. Existing
// files are kept, so a restarted control plane keeps its identity.
//
//	go run ./hack/controlplane/pki -dir .cache/controlplane/pki -server https://127.0.0.1:6443
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

type cert struct {
	name    string
	cn      string
	orgs    []string
	dns     []string
	ips     []string
	server  bool
	kubecfg bool // also write <name>.kubeconfig
}

func main() {
	dir := flag.String("dir", "", "output directory")
	server := flag.String("server", "https://127.0.0.1:6443", "API server URL for the kubeconfigs")
	node := flag.String("node", "slurm-debug", "virtual node name (its kubelet API certificate)")
	flag.Parse()
	if *dir == "" {
		log.Fatal("-dir is required")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		log.Fatal(err)
	}
	caCert, caKey := loadOrMakeCA(*dir)
	certs := []cert{
		{name: "apiserver", cn: "kube-apiserver", server: true, ips: []string{"127.0.0.1", "10.0.0.1"},
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}},
		{name: "admin", cn: "admin", orgs: []string{"system:masters"}, kubecfg: true},
		{name: "kube-scheduler", cn: "system:kube-scheduler", kubecfg: true},
		{name: "kube-controller-manager", cn: "system:kube-controller-manager", kubecfg: true},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{name: "provider", cn: "slurm-vk", orgs: []string{"slurm-vk"}, kubecfg: true},
		{name: "kubelet-serving", cn: *node, server: true, ips: []string{"127.0.0.1"}, dns: []string{*node, "localhost"}},
	}
	for _, c := range certs {
		if _, err := os.Stat(filepath.Join(*dir, c.name+".crt")); err == nil {
			continue
		}
		certPEM, keyPEM := issue(c, caCert, caKey)
		write(*dir, c.name+".crt", certPEM, 0o644)
		write(*dir, c.name+".key", keyPEM, 0o600)
		if c.kubecfg {
			write(*dir, c.name+".kubeconfig", kubeconfig(*dir, *server, c.name), 0o600)
		}
	}
	if _, err := os.Stat(filepath.Join(*dir, "sa.key")); err != nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			log.Fatal(err)
		}
		pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			log.Fatal(err)
		}
		write(*dir, "sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
		write(*dir, "sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
	}
}

func write(dir, name string, data []byte, mode os.FileMode) {
	if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
		log.Fatal(err)
	}
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		log.Fatal(err)
	}
	return n
}

func loadOrMakeCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey) {
	crtPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if crtPEM, err := os.ReadFile(crtPath); err == nil {
		keyPEM, err := os.ReadFile(keyPath)
		if err != nil {
			log.Fatal(err)
		}
		cb, _ := pem.Decode(crtPEM)
		kb, _ := pem.Decode(keyPEM)
		c, err := x509.ParseCertificate(cb.Bytes)
		if err != nil {
			log.Fatal(err)
		}
		k, err := x509.ParseECPrivateKey(kb.Bytes)
		if err != nil {
			log.Fatal(err)
		}
		return c, k
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "slurm-vk-e2e-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		log.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		log.Fatal(err)
	}
	write(dir, "ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	write(dir, "ca.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	c, _ := x509.ParseCertificate(der)
	return c, k
}

func issue(c cert, ca *x509.Certificate, caKey *ecdsa.PrivateKey) ([]byte, []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: c.cn, Organization: c.orgs},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, DNSNames: c.dns}
	for _, ip := range c.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	if c.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		log.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		log.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func kubeconfig(dir, server, name string) []byte {
	read := func(f string) string {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			log.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: %s@e2e
  context:
    cluster: e2e
    user: %s
current-context: %s@e2e
`, server, read("ca.crt"), name, read(name+".crt"), read(name+".key"), name, name, name))
}
