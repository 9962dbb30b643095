package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func probe(t *testing.T, raw string) map[string]any {
	t.Helper()
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, raw), r); err != nil {
		t.Fatalf("run(%s): %v", raw, err)
	}
	return r.Result()
}

func hostPort(t *testing.T, u string) (string, string) {
	h, p, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://"))
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

func TestAnAnswerIsReadAsItCame(t *testing.T) {
	var seen *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/new", http.StatusMovedPermanently)
			return
		}
		w.Header().Add("X-Exam", "a")
		w.Header().Add("X-Exam", "b")
		fmt.Fprint(w, "<h1>Welcome to nginx!</h1>"+strings.Repeat("x", 100))
	}))
	defer srv.Close()
	host, port := hostPort(t, srv.URL)
	res := probe(t, `{"host": "`+host+`", "port": `+port+`, "body_pattern": "Welcome to (nginx|apache)", "max_body": 30, "headers": {"X-Token": "t1"}}`)
	if res["status"] != 200 || res["status_matches"] != true || res["body_matches"] != true || res["body_truncated"] != true || res["error"] != "" {
		t.Errorf("result = %v", res)
	}
	if body := res["body"].(string); len(body) != 30 {
		t.Errorf("body %q; want the first 30 bytes", body)
	}
	if h := res["headers"].(map[string]any); h["x-exam"] != "a, b" {
		t.Errorf("headers = %v", h)
	}
	if seen.Host != host+":"+port || seen.Header.Get("X-Token") != "t1" || seen.Header.Get("User-Agent") != "chaosrun-probe" {
		t.Errorf("request: host %q, headers %v", seen.Host, seen.Header)
	}
	res = probe(t, `{"host": "`+host+`", "port": `+port+`, "path": "/old", "expect_status": 301}`)
	if res["status"] != 301 || res["status_matches"] != true || res["headers"].(map[string]any)["location"] != "/new" {
		t.Errorf("redirect: %v; want it reported, not followed", res)
	}
}

func TestTheCertificateIsDescribedAndVerifiedApart(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "tls\n") }))
	defer srv.Close()
	host, port := hostPort(t, srv.URL)
	res := probe(t, `{"scheme": "https", "host": "`+host+`", "port": `+port+`}`)
	tlsInfo, _ := res["tls"].(map[string]any)
	if res["status"] != 200 || tlsInfo == nil {
		t.Fatalf("result = %v", res)
	}
	if tlsInfo["valid"] != false || tlsInfo["verify_error"] == "" || tlsInfo["name_matches"] != true || tlsInfo["version"] != "TLSv1.3" {
		t.Errorf("tls = %v; want not valid (unknown issuer), name matching 127.0.0.1", tlsInfo)
	}
	if days := tlsInfo["expires_in_days"].(int64); days < 1000 {
		t.Errorf("expires_in_days = %d", days)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	res = probe(t, `{"scheme": "https", "host": "`+host+`", "port": `+port+`, "ca_file": "`+ca+`", "server_name": "example.com"}`)
	if tlsInfo = res["tls"].(map[string]any); tlsInfo["valid"] != true || tlsInfo["verify_error"] != "" || tlsInfo["name_matches"] != true {
		t.Errorf("with its CA: tls = %v; want valid", tlsInfo)
	}
	res = probe(t, `{"scheme": "https", "host": "`+host+`", "port": `+port+`, "server_name": "www.exam.test"}`)
	if res["tls"].(map[string]any)["name_matches"] != false {
		t.Errorf("another name: %v", res["tls"])
	}
}

func TestNoAnswerIsSaidInWords(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := ln.Addr().(*net.TCPAddr).Port
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	res := probe(t, fmt.Sprintf(`{"port": %d, "timeout_ms": 300}`, silent))
	if res["error"] != "no answer within 300 ms" || res["status"] != 0 || time.Since(start) > 3*time.Second {
		t.Errorf("silent server: %v", res)
	}
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln2.Addr().(*net.TCPAddr).Port
	ln2.Close()
	res = probe(t, fmt.Sprintf(`{"port": %d}`, closed))
	if res["error"] != fmt.Sprintf("connect 127.0.0.1:%d: connect: connection refused", closed) {
		t.Errorf("closed port: %v", res["error"])
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	_, port := hostPort(t, srv.URL)
	res = probe(t, `{"scheme": "https", "port": `+port+`}`)
	if res["error"] != "TLS handshake failed: the server does not speak TLS" {
		t.Errorf("https to plain http: %v", res["error"])
	}
}
