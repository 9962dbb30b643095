// Command expire_cert replaces a TLS certificate with an expired, wrong-name, self-signed or
// key-mismatched one, keeping a note of the old certificate's fingerprint.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"strings"
	"time"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	certPath, keyPath, mode := p.String("cert_path"), p.String("key_path"), p.String("mode")
	oldPEM, old, err := readCert(certPath)
	if err != nil {
		return err
	}
	key, generated, err := loadOrCreateKey(keyPath)
	if err != nil {
		return err
	}
	name := p.String("common_name")
	if name == "" {
		name = defaultName(old)
	}
	tmpl, err := template(mode, name, p.String("wrong_name"), int(p.Int("expired_days_ago")))
	if err != nil {
		return err
	}
	signer := key
	if mode == "key_mismatch" {
		if signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return fmt.Errorf("generate key: %w", err)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return fmt.Errorf("create certificate: %w", err)
	}
	if generated {
		if err := writeKey(keyPath, key); err != nil {
			return err
		}
		r.Changed(kit.Change{Action: "create_file", Path: keyPath})
	}
	newPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := kit.WriteFileAtomic(certPath, newPEM, 0o644); err != nil {
		return err
	}
	oldFP := ""
	if old != nil {
		oldFP = fingerprint(old.Raw)
	}
	c := kit.Change{Action: "replace_file", Path: certPath, Before: string(oldPEM), After: string(newPEM),
		Detail: map[string]any{"old_fingerprint_sha256": oldFP, "new_fingerprint_sha256": fingerprint(der), "mode": mode}}
	if oldPEM == nil {
		c.Action, c.Before = "create_file", nil
	}
	r.Changed(c)
	r.Set("old_fingerprint_sha256", oldFP)
	r.Set("new_fingerprint_sha256", fingerprint(der))
	r.Set("subject_cn", tmpl.Subject.CommonName)
	r.Set("not_before", tmpl.NotBefore.UTC().Format(time.RFC3339))
	r.Set("not_after", tmpl.NotAfter.UTC().Format(time.RFC3339))
	r.Set("key_generated", generated)
	r.Logf("%s: %s certificate for %s, valid %s to %s", certPath, mode, tmpl.Subject.CommonName,
		tmpl.NotBefore.UTC().Format(time.DateOnly), tmpl.NotAfter.UTC().Format(time.DateOnly))
	return nil
}

// readCert returns the file's content and its first certificate; a missing file is (nil, nil).
func readCert(path string) ([]byte, *x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return data, nil, nil // not a PEM certificate: replaced all the same
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return data, nil, nil
			}
			return data, cert, nil
		}
	}
}

// loadOrCreateKey reads a PEM private key (PKCS#8, PKCS#1 or SEC 1), or makes a new one if
// the file does not exist. An existing key that cannot be read is an error: it is never replaced.
func loadOrCreateKey(path string) (crypto.Signer, bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, false, fmt.Errorf("generate key: %w", err)
		}
		return key, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, false, fmt.Errorf("%s: no usable private key (encrypted keys are not supported)", path)
		}
		var key any
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("parse key in %s: %w", path, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, false, fmt.Errorf("%s: key type %T cannot sign", path, key)
		}
		return signer, false, nil
	}
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return kit.WriteFileAtomic(path, data, 0o600)
}

func defaultName(old *x509.Certificate) string {
	switch {
	case old != nil && old.Subject.CommonName != "":
		return old.Subject.CommonName
	case old != nil && len(old.DNSNames) > 0:
		return old.DNSNames[0]
	}
	return "localhost"
}

// template describes the new certificate for mode.
func template(mode, name, wrongName string, expiredDaysAgo int) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	now := time.Now().Truncate(time.Second)
	notBefore, notAfter := now.Add(-time.Hour), now.AddDate(1, 0, 0)
	switch mode {
	case "expired":
		notAfter = now.AddDate(0, 0, -expiredDaysAgo)
		notBefore = notAfter.AddDate(-1, 0, 0)
	case "mismatched":
		if strings.EqualFold(wrongName, name) {
			return nil, fmt.Errorf("wrong_name %q is the expected name", wrongName)
		}
		name = wrongName
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		t.IPAddresses = append(t.IPAddresses, ip.AsSlice())
	} else {
		t.DNSNames = []string{name}
	}
	return t, nil
}

// fingerprint is what openssl x509 -fingerprint -sha256 prints after the "=".
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	parts := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
