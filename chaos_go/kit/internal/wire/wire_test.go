package wire

import (
	"bytes"
	"compress/zlib"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func testKey(t *testing.T) []byte {
	t.Helper()
	key := make([]byte, KeyLen)
	if _, err := rand.Read(key); err != nil {
		t.Fatalf("read key: %v", err)
	}
	return key
}

func TestFrameRoundTripRawAndCompressed(t *testing.T) {
	key := testKey(t)
	aead, err := NewAEAD(key)
	if err != nil {
		t.Fatal(err)
	}
	challenge := bytes.Repeat([]byte{7}, ChallengeLen)
	for _, compress := range []bool{false, true} {
		msg := map[string]any{"t": "log", "msg": strings.Repeat("héllo ", 100)}
		pt, err := EncodeBody(msg, compress)
		if err != nil {
			t.Fatal(err)
		}
		wantFlag := FlagRaw
		if compress {
			wantFlag = FlagZlib
		}
		if pt[0] != wantFlag {
			t.Errorf("flag byte: got %d; want %d", pt[0], wantFlag)
		}
		frame, err := Seal(aead, ClientToMonitor, challenge, 5, pt)
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.BigEndian.Uint32(frame); int(got) != len(frame)-4 {
			t.Errorf("length prefix: got %d; want %d", got, len(frame)-4)
		}
		got, err := Open(aead, ClientToMonitor, challenge, 5, frame[4:])
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		back, err := DecodeBody(got)
		if err != nil {
			t.Fatal(err)
		}
		if back["msg"] != msg["msg"] {
			t.Errorf("compress=%v: got %q; want %q", compress, back["msg"], msg["msg"])
		}
	}
}

func TestOpenRejectsTamperedReorderedAndCrossConnectionFrames(t *testing.T) {
	aead, err := NewAEAD(testKey(t))
	if err != nil {
		t.Fatal(err)
	}
	challenge := bytes.Repeat([]byte{1}, ChallengeLen)
	pt, _ := EncodeBody(map[string]any{"t": "hello"}, false)
	frame, err := Seal(aead, ClientToMonitor, challenge, 0, pt)
	if err != nil {
		t.Fatal(err)
	}
	body := frame[4:]
	other := bytes.Repeat([]byte{2}, ChallengeLen)
	otherAEAD, _ := NewAEAD(testKey(t))
	cases := []struct {
		name string
		open func() error
	}{
		{"flipped ciphertext byte", func() error {
			b := append([]byte{}, body...)
			b[NonceLen+1] ^= 0x80
			_, err := Open(aead, ClientToMonitor, challenge, 0, b)
			return err
		}},
		{"flipped nonce byte", func() error {
			b := append([]byte{}, body...)
			b[0] ^= 0x01
			_, err := Open(aead, ClientToMonitor, challenge, 0, b)
			return err
		}},
		{"wrong seq", func() error { _, err := Open(aead, ClientToMonitor, challenge, 1, body); return err }},
		{"wrong direction", func() error { _, err := Open(aead, MonitorToClient, challenge, 0, body); return err }},
		{"other challenge", func() error { _, err := Open(aead, ClientToMonitor, other, 0, body); return err }},
		{"other key", func() error { _, err := Open(otherAEAD, ClientToMonitor, challenge, 0, body); return err }},
		{"too short", func() error { _, err := Open(aead, ClientToMonitor, challenge, 0, body[:MinLen-1]); return err }},
	}
	for _, c := range cases {
		if err := c.open(); err == nil {
			t.Errorf("%s: got no error; want an authentication error", c.name)
		}
	}
}

func TestDecodeBodyCapsInflatedSize(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteByte(FlagZlib)
	zw := zlib.NewWriter(&buf)
	zw.Write([]byte(`{"t":"log","msg":"`))
	zw.Write(bytes.Repeat([]byte("a"), MaxFrame))
	zw.Write([]byte(`"}`))
	zw.Close()
	_, err := DecodeBody(buf.Bytes())
	if err == nil || !strings.Contains(err.Error(), "inflated body larger") {
		t.Errorf("got %v; want an inflated-size error", err)
	}
	if _, err := DecodeBody([]byte{9, '{', '}'}); err == nil {
		t.Errorf("unknown flag: got no error; want one")
	}
}

func TestSealRefusesOversizedPlaintext(t *testing.T) {
	aead, _ := NewAEAD(testKey(t))
	_, err := Seal(aead, ClientToMonitor, make([]byte, ChallengeLen), 0, make([]byte, MaxFrame+1))
	if err != ErrTooLarge {
		t.Errorf("got %v; want %v", err, ErrTooLarge)
	}
}

func testMonitorKey(t *testing.T) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return k
}

// pair runs the handshake over a net.Pipe and returns both ends and what the client sent.
func pair(t *testing.T, monitor *ecdh.PrivateKey, clientKey []byte) (srv, cli *Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	srvc := make(chan *Conn, 1)
	go func() {
		s, err := Server(a, monitor, true, time.Second)
		if err != nil {
			t.Error(err)
		}
		srvc <- s
	}()
	cli, err := Client(b, clientKey, true, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return <-srvc, cli
}

func TestConnPairExchangesFramesAndDropsOversizedLength(t *testing.T) {
	monitor := testMonitorKey(t)
	srv, cli := pair(t, monitor, monitor.PublicKey().Bytes())
	if !bytes.Equal(srv.Transcript("r", "s"), cli.Transcript("r", "s")) {
		t.Errorf("transcripts differ between the two ends")
	}
	go cli.Send(map[string]any{"t": "hello", "proof": Proof("tok", cli.Transcript("r", "s"))})
	got, err := srv.Recv(time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if want := Proof("tok", srv.Transcript("r", "s")); got["proof"] != want {
		t.Errorf("proof: got %q; want %q", got["proof"], want)
	}
	go srv.Send(map[string]any{"t": "ack"})
	if got, err = cli.Recv(time.Now().Add(time.Second)); err != nil || got["t"] != "ack" {
		t.Errorf("got %v, %v; want ack", got, err)
	}
	// A length prefix beyond MAX_FRAME + 28 is refused before the body is read.
	go cli.nc.Write([]byte{0, 0x20, 0, 0})
	_, err = srv.Recv(time.Now().Add(time.Second))
	if err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("got %v; want a length error", err)
	}
}

func TestServerRefusesALargeHelloFrame(t *testing.T) {
	monitor := testMonitorKey(t)
	srv, cli := pair(t, monitor, monitor.PublicKey().Bytes())
	go cli.nc.Write([]byte{0, 0, 0x50, 0})
	_, err := srv.Recv(time.Now().Add(time.Second))
	if err == nil || !strings.Contains(err.Error(), "hello frame length") {
		t.Errorf("got %v; want the hello length error", err)
	}
}

func TestAClientWithAnotherMonitorKeyFailsAuthentication(t *testing.T) {
	monitor := testMonitorKey(t)
	srv, cli := pair(t, monitor, testMonitorKey(t).PublicKey().Bytes())
	go cli.Send(map[string]any{"t": "hello"})
	_, err := srv.Recv(time.Now().Add(time.Second))
	if err == nil || !strings.Contains(err.Error(), "authenticate frame c2m #0") {
		t.Errorf("got %v; want an authentication failure", err)
	}
}

func TestSessionKeysDependOnEveryInputAndDiffer(t *testing.T) {
	base := [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, ChallengeLen), bytes.Repeat([]byte{3}, 32), bytes.Repeat([]byte{4}, 32)}
	c2m, m2c, err := SessionKeys(base[0], base[1], base[2], base[3])
	if err != nil {
		t.Fatal(err)
	}
	if len(c2m) != KeyLen || len(m2c) != KeyLen || bytes.Equal(c2m, m2c) {
		t.Fatalf("got keys %x %x; want two different %d-byte keys", c2m, m2c, KeyLen)
	}
	for i := range base {
		in := append([][]byte{}, base...)
		in[i] = bytes.Repeat([]byte{9}, len(in[i]))
		other, _, _ := SessionKeys(in[0], in[1], in[2], in[3])
		if bytes.Equal(other, c2m) {
			t.Errorf("input %d changed, c2m key did not", i)
		}
	}
}

func TestALowOrderPublicKeyIsRefused(t *testing.T) {
	if _, err := Client(nil, make([]byte, PublicKeyLen), false, time.Second); err == nil {
		t.Errorf("all-zero monitor key: got no error; want one")
	}
	monitor := testMonitorKey(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		io.ReadFull(b, make([]byte, len(Magic)+ChallengeLen))
		b.Write(make([]byte, PublicKeyLen)) // the all-zero point: a public "shared" secret
	}()
	if _, err := Server(a, monitor, false, time.Second); err == nil || !strings.Contains(err.Error(), "key") {
		t.Errorf("all-zero binary key: got %v; want a key error", err)
	}
}

func TestPackBodyRefusesWhatTheMonitorWouldNotInflate(t *testing.T) {
	for _, compress := range []bool{false, true} {
		if _, err := PackBody(bytes.Repeat([]byte("a"), MaxFrame), compress); err != ErrTooLarge {
			t.Errorf("compress=%v: got %v; want %v", compress, err, ErrTooLarge)
		}
	}
}

func TestDialConnectsRefusesAndRejectsNames(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Logf("%s: %v (skipped)", network, err)
			continue
		}
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("hi"))
				c.Close()
			}
		}()
		f, err := Dial(ln.Addr().String(), time.Second)
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		if err := f.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Errorf("%s: SetReadDeadline: got %v; want a pollable socket", network, err)
		}
		buf := make([]byte, 2)
		if _, err := f.Read(buf); err != nil || string(buf) != "hi" {
			t.Errorf("%s: got %q, %v; want %q", network, buf, err, "hi")
		}
		f.Close()
		ln.Close()
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	if _, err := Dial(closed, time.Second); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: got %v; want connection refused", err)
	}
	if _, err := Dial("localhost:80", time.Second); err == nil || !strings.Contains(err.Error(), "want ip:port") {
		t.Errorf("host name: got %v; want a parse error", err)
	}
}

func TestRecvTimesOutOnASilentPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	monitor := testMonitorKey(t)
	go func() {
		if c, err := ln.Accept(); err == nil {
			Server(c, monitor, false, time.Second)
			time.Sleep(2 * time.Second)
			c.Close()
		}
	}()
	f, err := Dial(ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := Client(f, monitor.PublicKey().Bytes(), false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Recv(time.Now().Add(200 * time.Millisecond))
	if err == nil || time.Since(start) > time.Second {
		t.Errorf("got %v after %v; want a timeout after 200ms", err, time.Since(start))
	}
}

func TestHKDFMatchesRFC5869(t *testing.T) {
	// RFC 5869, test case 1 (SHA-256).
	ikm := bytes.Repeat([]byte{0x0b}, 22)
	salt, _ := hex.DecodeString("000102030405060708090a0b0c")
	info, _ := hex.DecodeString("f0f1f2f3f4f5f6f7f8f9")
	want := "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
	if got := hex.EncodeToString(hkdfSHA256(ikm, salt, info, 42)); got != want {
		t.Errorf("got %s; want %s", got, want)
	}
}

// TestTheProtocolDocsVectorHolds checks the worked example of docs/protocol.md section 8;
// tests/runtime/test_wire.py checks the same numbers on the monitor's side.
func TestTheProtocolDocsVectorHolds(t *testing.T) {
	seq := func(from byte) []byte {
		b := make([]byte, 32)
		for i := range b {
			b[i] = from + byte(i)
		}
		return b
	}
	monitor, err := ecdh.X25519().NewPrivateKey(seq(1))
	if err != nil {
		t.Fatal(err)
	}
	binary, err := ecdh.X25519().NewPrivateKey(seq(33))
	if err != nil {
		t.Fatal(err)
	}
	challenge := seq(0xa0)[:ChallengeLen]
	shared, err := binary.ECDH(monitor.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	m, b := monitor.PublicKey().Bytes(), binary.PublicKey().Bytes()
	c2m, m2c, _ := SessionKeys(shared, challenge, m, b)
	transcript := TranscriptHash(challenge, m, b, "run-1", "step-a")
	for _, c := range []struct{ name, got, want string }{
		{"monitor public", hex.EncodeToString(m), "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c"},
		{"binary public", hex.EncodeToString(b), "5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b"},
		{"shared", hex.EncodeToString(shared), "a84dc7c3c8f058b1b2dc4cd1e9b5dc0a7987f88b6a9564cde3391fc421159e77"},
		{"c2m", hex.EncodeToString(c2m), "56a54179d924d5682a203ee759e74ac57f1edd42904ffd4c4f9891f39fd96bbf"},
		{"m2c", hex.EncodeToString(m2c), "d876c07cbb8afa6772eb3342c0c1886031adb4111cbb675f3831822de5a67176"},
		{"transcript", hex.EncodeToString(transcript), "a0c3370c19a8e8ff4f8117a281716958b2244b25c06c79ecf683cb67e507c987"},
		{"proof", Proof("tok-123", transcript), "8c43437c2a482a486984949bda8ec80a790d31af0874602a8fac85e1ca6dd6a2"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %s; want %s", c.name, c.got, c.want)
		}
	}
}
