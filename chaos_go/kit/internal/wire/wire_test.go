package wire

import (
	"bytes"
	"compress/zlib"
	"crypto/rand"
	"encoding/binary"
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

func TestConnPairExchangesFramesAndDropsOversizedLength(t *testing.T) {
	key := testKey(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srvc := make(chan *Conn, 1)
	go func() {
		s, err := Server(a, key, true)
		if err != nil {
			t.Error(err)
		}
		srvc <- s
	}()
	cli, err := Client(b, key, true, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv := <-srvc
	go cli.Send(map[string]any{"t": "hello", "token": "x"})
	got, err := srv.Recv(time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got["token"] != "x" {
		t.Errorf("got %q; want %q", got["token"], "x")
	}
	go srv.Send(map[string]any{"t": "ack"})
	if got, err = cli.Recv(time.Now().Add(time.Second)); err != nil || got["t"] != "ack" {
		t.Errorf("got %v, %v; want ack", got, err)
	}
	// A length prefix beyond MAX_FRAME + 28 is refused before the body is read.
	go b.Write([]byte{0, 0x20, 0, 0})
	_, err = srv.Recv(time.Now().Add(time.Second))
	if err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("got %v; want a length error", err)
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
	go func() {
		if c, err := ln.Accept(); err == nil {
			Server(c, make([]byte, KeyLen), false)
			time.Sleep(2 * time.Second)
			c.Close()
		}
	}()
	f, err := Dial(ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := Client(f, make([]byte, KeyLen), false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Recv(time.Now().Add(200 * time.Millisecond))
	if err == nil || time.Since(start) > time.Second {
		t.Errorf("got %v after %v; want a timeout after 200ms", err, time.Since(start))
	}
}
