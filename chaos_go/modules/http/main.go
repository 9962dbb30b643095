// Command http sends one HTTP or HTTPS request from the target and reports the answer and,
// over HTTPS, the server's certificate.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// tlsVersions are the protocol names as OpenSSL (and so the monitor's side) writes them.
var tlsVersions = map[uint16]string{tls.VersionTLS10: "TLSv1", tls.VersionTLS11: "TLSv1.1", tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}

func isoUTC(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05+00:00") }

// describe is the result's tls object for the chain a server sent (valid and
// verify_error filled in by verify).
func describe(chain []*x509.Certificate, name string, version uint16, now time.Time) map[string]any {
	leaf := chain[0]
	names := append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return map[string]any{
		"valid":           false,
		"verify_error":    "",
		"version":         tlsVersions[version],
		"expires_in_days": int64(math.Floor(leaf.NotAfter.Sub(now).Hours() / 24)),
		"not_before":      isoUTC(leaf.NotBefore),
		"not_after":       isoUTC(leaf.NotAfter),
		"subject":         leaf.Subject.String(),
		"issuer":          leaf.Issuer.String(),
		"names":           names,
		"name_matches":    leaf.VerifyHostname(strings.Trim(name, "[]")) == nil, // the SANs only, RFC 6125
	}
}

// verify checks the chain against roots (nil: the system's store) and the dates, not the
// name; "" when it verifies.
func verify(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) string {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now})
	if err == nil {
		return ""
	}
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
		if now.After(chain[0].NotAfter) {
			return "certificate has expired"
		}
		return "certificate is not yet valid"
	}
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		if chain[0].CheckSignatureFrom(chain[0]) == nil {
			return "self-signed certificate"
		}
		return "unable to get local issuer certificate"
	}
	return strings.TrimPrefix(err.Error(), "x509: ")
}

func hostHeader(name string, port int64, scheme string) string {
	shown := name
	if ip := net.ParseIP(name); ip != nil && ip.To4() == nil {
		shown = "[" + name + "]"
	}
	if port == map[string]int64{"http": 80, "https": 443}[scheme] {
		return shown
	}
	return shown + ":" + strconv.FormatInt(port, 10)
}

// noAnswer turns a client error into the result's words.
func noAnswer(err error, addr string, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("no answer within %d ms", timeout.Milliseconds())
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Sprintf("connect %s: %s", addr, op.Err.Error())
	}
	var rec tls.RecordHeaderError
	if errors.As(err, &rec) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return "TLS handshake failed: the server does not speak TLS"
	}
	if strings.Contains(err.Error(), "tls: ") {
		return "TLS handshake failed: " + err.Error()
	}
	return err.Error()
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	scheme, host := p.String("scheme"), p.String("host")
	if host == "" {
		host = "127.0.0.1"
	}
	port := p.Int("port")
	if port == 0 {
		port = map[string]int64{"http": 80, "https": 443}[scheme]
	}
	serverName := p.String("server_name")
	if serverName == "" {
		serverName = host
	}
	var pattern *regexp.Regexp
	if p.Has("body_pattern") {
		var err error
		if pattern, err = regexp.Compile(p.String("body_pattern")); err != nil {
			return fmt.Errorf("body_pattern: %w", err)
		}
	}
	var roots *x509.CertPool
	if ca := p.String("ca_file"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return fmt.Errorf("ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("ca_file: no certificate in %s", ca)
		}
	}
	result := map[string]any{"status": 0, "status_matches": false, "headers": map[string]any{}, "body": "",
		"body_truncated": false, "body_matches": false, "duration_ms": 0.0, "error": "", "tls": nil}
	defer func() {
		for k, v := range result {
			r.Set(k, v)
		}
	}()

	addr := net.JoinHostPort(host, strconv.FormatInt(port, 10))
	timeout := time.Duration(p.Int("timeout_ms")) * time.Millisecond
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	transport := &http.Transport{
		Proxy:              nil, // asked directly, whatever the machine's proxy settings say
		DisableKeepAlives:  true,
		DisableCompression: true,
		TLSClientConfig:    &tls.Config{ServerName: strings.Trim(serverName, "[]"), InsecureSkipVerify: true}, // looked at, then verified apart
		DialContext:        (&net.Dialer{}).DialContext,
	}
	client := &http.Client{Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, p.String("method"), scheme+"://"+addr+p.String("path"), nil)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req.Host = hostHeader(serverName, port, scheme)
	req.Header.Set("User-Agent", "chaosrun-probe")
	req.Header.Set("Accept", "*/*")
	for k, v := range p.StringMap("headers") {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		result["error"] = noAnswer(err, addr, timeout)
		result["duration_ms"] = float64(time.Since(start).Microseconds()) / 1000
		r.Logf("no answer: %s", result["error"])
		return nil
	}
	defer resp.Body.Close()
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		now := time.Now()
		t := describe(resp.TLS.PeerCertificates, serverName, resp.TLS.Version, now)
		t["verify_error"] = verify(resp.TLS.PeerCertificates, roots, now)
		t["valid"] = t["verify_error"] == ""
		result["tls"] = t
	}
	limit := p.Int("max_body")
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if readErr != nil && len(body) == 0 && !errors.Is(readErr, io.EOF) {
		result["error"] = "reading the body: " + readErr.Error()
	}
	truncated := int64(len(body)) > limit
	if truncated {
		body = body[:limit]
	}
	text := strings.ToValidUTF8(string(body), "\uFFFD")
	headers := map[string]any{}
	names := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		headers[strings.ToLower(k)] = strings.Join(resp.Header[k], ", ")
	}
	result["status"] = resp.StatusCode
	result["status_matches"] = int64(resp.StatusCode) == p.Int("expect_status")
	result["headers"] = headers
	result["body"] = text
	result["body_truncated"] = truncated
	result["body_matches"] = pattern != nil && pattern.MatchString(text)
	result["duration_ms"] = float64(time.Since(start).Microseconds()) / 1000
	r.Logf("%s %s: status %d", p.String("method"), addr+p.String("path"), resp.StatusCode)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
