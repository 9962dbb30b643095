package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// validPair writes a valid RSA certificate for www.exam.lan and its PKCS#1 key.
func validPair(t *testing.T) (certPath, keyPath string, cert *x509.Certificate) {
	t.Helper()
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "www.exam.lan"},
		DNSNames: []string{"www.exam.lan"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	certPath, keyPath = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	return certPath, keyPath, cert
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, _ := os.ReadFile(path)
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestModes(t *testing.T) {
	for _, mode := range []string{"expired", "mismatched", "self_signed", "key_mismatch"} {
		certPath, keyPath, old := validPair(t)
		keyBefore, _ := os.ReadFile(keyPath)
		r := moduletest.MustRun(t, declaration, run, map[string]any{"cert_path": certPath, "key_path": keyPath, "mode": mode})
		cert := loadCert(t, certPath)
		now := time.Now()
		if got, want := r.Result()["old_fingerprint_sha256"], fingerprint(old.Raw); got != want {
			t.Errorf("%s: old fingerprint got %q; want %q", mode, got, want)
		}
		if got, want := r.Result()["new_fingerprint_sha256"], fingerprint(cert.Raw); got != want {
			t.Errorf("%s: new fingerprint got %q; want %q", mode, got, want)
		}
		if keyAfter, _ := os.ReadFile(keyPath); string(keyAfter) != string(keyBefore) {
			t.Errorf("%s: the key was changed", mode)
		}
		certPEM, _ := os.ReadFile(certPath)
		_, pairErr := tls.X509KeyPair(certPEM, keyBefore)
		hostErr := cert.VerifyHostname("www.exam.lan")
		expired := now.After(cert.NotAfter)
		switch mode {
		case "expired":
			if !expired || hostErr != nil || pairErr != nil {
				t.Errorf("expired: got expired=%v host %v pair %v; want expired, right host, matching key", expired, hostErr, pairErr)
			}
		case "mismatched":
			if expired || hostErr == nil || pairErr != nil || cert.Subject.CommonName != "localhost.localdomain" {
				t.Errorf("mismatched: got expired=%v host %v pair %v cn %q", expired, hostErr, pairErr, cert.Subject.CommonName)
			}
		case "self_signed":
			if expired || hostErr != nil || pairErr != nil || cert.Issuer.String() != cert.Subject.String() {
				t.Errorf("self_signed: got expired=%v host %v pair %v issuer %v", expired, hostErr, pairErr, cert.Issuer)
			}
		case "key_mismatch":
			if expired || hostErr != nil || pairErr == nil {
				t.Errorf("key_mismatch: got expired=%v host %v pair %v; want a key mismatch", expired, hostErr, pairErr)
			}
		}
		ch := r.Changes()
		if len(ch) != 1 || ch[0].Action != "replace_file" || !strings.Contains(ch[0].Before.(string), "BEGIN CERTIFICATE") {
			t.Errorf("%s: changes %+v; want replace_file with the old PEM", mode, ch)
		}
		if out, err := exec.Command("openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", certPath).Output(); err == nil {
			if !strings.Contains(string(out), fingerprint(cert.Raw)) {
				t.Errorf("%s: openssl says %q; want %s", mode, out, fingerprint(cert.Raw))
			}
		}
	}
}

func TestGeneratesAMissingKeyButNeverReplacesAnUnreadableOne(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "new.crt"), filepath.Join(dir, "new.key")
	r := moduletest.MustRun(t, declaration, run, map[string]any{"cert_path": certPath, "key_path": keyPath, "mode": "expired", "common_name": "10.0.0.5"})
	if r.Result()["key_generated"] != true || r.Result()["old_fingerprint_sha256"] != "" {
		t.Errorf("result: got %v; want key_generated and no old fingerprint", r.Result())
	}
	certPEM, _ := os.ReadFile(certPath)
	keyPEM, _ := os.ReadFile(keyPath)
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("generated pair: %v", err)
	}
	if cert := loadCert(t, certPath); len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "10.0.0.5" {
		t.Errorf("IP SAN: got %v; want 10.0.0.5", cert.IPAddresses)
	}
	if fi, _ := os.Stat(keyPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode: got %o; want 600", fi.Mode().Perm())
	}

	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), 0o600)
	p, _ := kit.NewParams(declaration, map[string]any{"cert_path": certPath, "key_path": bad})
	if err := run(context.Background(), p, kit.NewTestReport()); err == nil {
		t.Errorf("encrypted key: got no error; want one")
	}
	if got, _ := os.ReadFile(certPath); string(got) != string(certPEM) {
		t.Errorf("the certificate changed although the key was unusable")
	}
}

func TestReusesAnECKey(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(key)
	keyPath := filepath.Join(dir, "ec.key")
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	certPath := filepath.Join(dir, "ec.crt")
	moduletest.MustRun(t, declaration, run, map[string]any{"cert_path": certPath, "key_path": keyPath, "mode": "self_signed", "common_name": "mail.exam.lan"})
	certPEM, _ := os.ReadFile(certPath)
	keyPEM, _ := os.ReadFile(keyPath)
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("pair: %v", err)
	}
}
