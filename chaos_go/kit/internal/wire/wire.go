// Package wire implements the callback protocol (docs/protocol.md, version 2): the clear
// server hello, the binary's ephemeral X25519 key, the session keys both ends derive with
// HKDF-SHA256, the hello's proof of the token, then length-prefixed AES-256-GCM frames
// whose associated data binds each frame to its direction, its connection's challenge and
// its sequence number.
//
// Both ends live here so the kit and its tests (kit/kittest, the fake monitor) share one
// implementation; the Python twin is engine/chaosrun/run/wire.py.
package wire

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"chaosrun/chaos_go/kit/internal/jsonx"
)

// Protocol constants, as in docs/protocol.md.
const (
	Magic        = "CRN2"
	ChallengeLen = 16
	PublicKeyLen = 32 // an X25519 public key
	KeyLen       = 32 // an AES-256-GCM session key
	NonceLen     = 12
	TagLen       = 16
	// KDFLabel starts HKDF's info, followed by the monitor's and the binary's public keys.
	KDFLabel = "chaosrun callback v2"
	// MaxFrame caps a frame's plaintext (flag byte + body) and a decompressed body.
	MaxFrame = 1 << 20
	// MinLen and MaxLen bound the length prefix L (nonce + ciphertext + tag).
	MinLen = NonceLen + TagLen
	MaxLen = MaxFrame + NonceLen + TagLen
	// MaxHelloLen bounds frame 0's length prefix: the hello is a few hundred bytes.
	MaxHelloLen = 16 << 10
)

// Limits the monitor puts on one connection (docs/protocol.md section 6); the kit keeps
// its logs within them.
const (
	MaxReceived    = 8 << 20 // bytes the monitor reads from one connection
	MaxLogBytes    = 1 << 20 // inflated JSON bytes of all log messages together
	MaxLogMessages = 2000
	MaxResultBytes = 1 << 20 // inflated JSON bytes of the result
	// Change messages, streamed as each change is made (the result repeats them).
	MaxChangeBytes    = 1 << 20
	MaxChangeMessages = 1000
)

// Directions, the first part of every frame's associated data.
const (
	ClientToMonitor = "c2m"
	MonitorToClient = "m2c"
)

// Plaintext flag byte values.
const (
	FlagRaw  byte = 0
	FlagZlib byte = 1
)

// ErrTooLarge reports a message whose plaintext would exceed MaxFrame.
var ErrTooLarge = errors.New("frame larger than MAX_FRAME")

// NewAEAD returns AES-256-GCM with the standard 12-byte nonce for a 32-byte key.
func NewAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeyLen {
		return nil, fmt.Errorf("key is %d bytes; want %d", len(key), KeyLen)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("new cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("new gcm: %w", err)
	}
	return aead, nil
}

// AAD is direction || challenge || u32 big-endian seq.
func AAD(direction string, challenge []byte, seq uint32) []byte {
	aad := make([]byte, 0, len(direction)+len(challenge)+4)
	aad = append(aad, direction...)
	aad = append(aad, challenge...)
	return binary.BigEndian.AppendUint32(aad, seq)
}

// Seal encrypts plaintext (flag byte + body) into a whole frame: u32 BE L || nonce || ciphertext+tag.
func Seal(aead cipher.AEAD, direction string, challenge []byte, seq uint32, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxFrame {
		return nil, ErrTooLarge
	}
	frame := make([]byte, 4+NonceLen, 4+NonceLen+len(plaintext)+TagLen)
	nonce := frame[4 : 4+NonceLen]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("read nonce: %w", err)
	}
	frame = aead.Seal(frame, nonce, plaintext, AAD(direction, challenge, seq))
	binary.BigEndian.PutUint32(frame[:4], uint32(len(frame)-4))
	return frame, nil
}

// Open authenticates and decrypts a frame body (nonce || ciphertext+tag, without the length prefix).
func Open(aead cipher.AEAD, direction string, challenge []byte, seq uint32, body []byte) ([]byte, error) {
	if len(body) < MinLen || len(body) > MaxLen {
		return nil, fmt.Errorf("frame length %d out of range [%d, %d]", len(body), MinLen, MaxLen)
	}
	pt, err := aead.Open(nil, body[:NonceLen], body[NonceLen:], AAD(direction, challenge, seq))
	if err != nil {
		return nil, fmt.Errorf("authenticate frame %s #%d: %w", direction, seq, err)
	}
	return pt, nil
}

// EncodeBody returns the plaintext of a frame: the flag byte then v as JSON, zlib-compressed if asked.
func EncodeBody(v any, compress bool) ([]byte, error) {
	body, err := jsonx.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode json: %w", err)
	}
	return PackBody(body, compress)
}

// PackBody returns the plaintext of a frame carrying the JSON body: the flag byte, then
// body, zlib-compressed if asked.
func PackBody(body []byte, compress bool) ([]byte, error) {
	// The monitor never inflates past MaxFrame: a body must fit raw, compressed or not.
	if len(body) >= MaxFrame {
		return nil, ErrTooLarge
	}
	if !compress {
		return append([]byte{FlagRaw}, body...), nil
	}
	var buf bytes.Buffer
	buf.WriteByte(FlagZlib)
	zw := zlib.NewWriter(&buf)
	if _, err := zw.Write(body); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodeBody parses a frame's plaintext, inflating it (capped at MaxFrame) if flagged. The
// body must be a JSON object; its numbers are jsonx.Number.
func DecodeBody(plaintext []byte) (map[string]any, error) {
	if len(plaintext) == 0 {
		return nil, errors.New("empty plaintext")
	}
	body := plaintext[1:]
	switch plaintext[0] {
	case FlagRaw:
	case FlagZlib:
		zr, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("inflate: %w", err)
		}
		body, err = io.ReadAll(io.LimitReader(zr, MaxFrame+1))
		if err != nil {
			return nil, fmt.Errorf("inflate: %w", err)
		}
		if len(body) > MaxFrame {
			return nil, fmt.Errorf("inflated body larger than %d bytes", MaxFrame)
		}
	default:
		return nil, fmt.Errorf("unknown flag byte %d", plaintext[0])
	}
	msg, err := jsonx.DecodeObject(body, true)
	if err != nil {
		return nil, fmt.Errorf("decode json: %w", err)
	}
	return msg, nil
}

// SessionKeys derives a connection's keys from the X25519 shared secret: the first and
// second KeyLen bytes of HKDF-SHA256(shared, salt = challenge, info = KDFLabel ||
// monitorKey || binaryKey), for c2m and m2c frames.
func SessionKeys(shared, challenge, monitorKey, binaryKey []byte) (c2m, m2c []byte, err error) {
	info := append(append([]byte(KDFLabel), monitorKey...), binaryKey...)
	okm := hkdfSHA256(shared, challenge, info, 2*KeyLen)
	return okm[:KeyLen], okm[KeyLen:], nil
}

// hkdfSHA256 is HKDF (RFC 5869) with SHA-256, for n <= 255*32 bytes of output. It is
// written out rather than taken from crypto/hkdf, which needs go 1.24 in go.mod.
func hkdfSHA256(secret, salt, info []byte, n int) []byte {
	extract := hmac.New(sha256.New, salt)
	extract.Write(secret)
	expand := hmac.New(sha256.New, extract.Sum(nil))
	var okm, t []byte
	for i := byte(1); len(okm) < n; i++ {
		expand.Reset()
		expand.Write(t)
		expand.Write(info)
		expand.Write([]byte{i})
		t = expand.Sum(nil)
		okm = append(okm, t...)
	}
	return okm[:n]
}

// TranscriptHash is SHA-256(Magic || challenge || monitorKey || binaryKey || run || step),
// what the hello's proof is an HMAC of.
func TranscriptHash(challenge, monitorKey, binaryKey []byte, run, step string) []byte {
	h := sha256.New()
	h.Write([]byte(Magic))
	h.Write(challenge)
	h.Write(monitorKey)
	h.Write(binaryKey)
	h.Write([]byte(run))
	h.Write([]byte(step))
	return h.Sum(nil)
}

// Proof is the hello's proof of token: lowercase hex HMAC-SHA256(key = token, msg = transcript).
func Proof(token string, transcript []byte) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write(transcript)
	return hex.EncodeToString(m.Sum(nil))
}

// Stream is the byte stream a Conn runs on: a net.Conn, or an *os.File holding a socket.
type Stream interface {
	io.ReadWriteCloser
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// Conn is one end of an authenticated callback connection. It is not safe for concurrent
// Send calls (nor concurrent Recv calls); one goroutine writes, one reads.
type Conn struct {
	nc         Stream
	br         *bufio.Reader
	sendAEAD   cipher.AEAD
	recvAEAD   cipher.AEAD
	challenge  []byte
	monitorKey []byte
	binaryKey  []byte
	send       string
	recv       string
	sendSeq    uint32
	recvSeq    uint32
	compress   bool
	// WriteTimeout bounds each frame write (0 = none).
	WriteTimeout time.Duration
}

// newConn derives the session keys and returns the end that sends in direction send.
func newConn(nc Stream, br *bufio.Reader, challenge, monitorKey, binaryKey, shared []byte, send string, compress bool) (*Conn, error) {
	c2mKey, m2cKey, err := SessionKeys(shared, challenge, monitorKey, binaryKey)
	if err != nil {
		return nil, err
	}
	c2m, err := NewAEAD(c2mKey)
	if err != nil {
		return nil, err
	}
	m2c, err := NewAEAD(m2cKey)
	if err != nil {
		return nil, err
	}
	c := &Conn{nc: nc, br: br, challenge: challenge, monitorKey: monitorKey, binaryKey: binaryKey, compress: compress}
	if send == ClientToMonitor {
		c.send, c.recv, c.sendAEAD, c.recvAEAD = ClientToMonitor, MonitorToClient, c2m, m2c
	} else {
		c.send, c.recv, c.sendAEAD, c.recvAEAD = MonitorToClient, ClientToMonitor, m2c, c2m
	}
	return c, nil
}

// Client reads the server hello from nc, sends a fresh ephemeral X25519 public key (both
// within timeout) and returns the binary's end, keyed for the monitor whose public key is
// monitorKey.
func Client(nc Stream, monitorKey []byte, compress bool, timeout time.Duration) (*Conn, error) {
	monitor, err := ecdh.X25519().NewPublicKey(monitorKey)
	if err != nil {
		return nil, fmt.Errorf("monitor key: %w", err)
	}
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	shared, err := priv.ECDH(monitor) // fails for a low-order monitor key
	if err != nil {
		return nil, fmt.Errorf("key exchange: %w", err)
	}
	br := bufio.NewReader(nc)
	hello := make([]byte, len(Magic)+ChallengeLen)
	if timeout > 0 {
		_ = nc.SetReadDeadline(time.Now().Add(timeout))
		_ = nc.SetWriteDeadline(time.Now().Add(timeout))
	}
	defer nc.SetReadDeadline(time.Time{})
	defer nc.SetWriteDeadline(time.Time{})
	if _, err := io.ReadFull(br, hello); err != nil {
		return nil, fmt.Errorf("read server hello: %w", err)
	}
	if string(hello[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("server hello: bad magic %q", hello[:len(Magic)])
	}
	binaryKey := priv.PublicKey().Bytes()
	if _, err := nc.Write(binaryKey); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	return newConn(nc, br, hello[len(Magic):], monitor.Bytes(), binaryKey, shared, ClientToMonitor, compress)
}

// Server writes a server hello with a fresh challenge to nc, reads the binary's public key
// (within timeout) and returns the monitor's end for the monitor key priv.
func Server(nc Stream, priv *ecdh.PrivateKey, compress bool, timeout time.Duration) (*Conn, error) {
	challenge := make([]byte, ChallengeLen)
	if _, err := rand.Read(challenge); err != nil {
		return nil, fmt.Errorf("read challenge: %w", err)
	}
	if _, err := nc.Write(append([]byte(Magic), challenge...)); err != nil {
		return nil, fmt.Errorf("write server hello: %w", err)
	}
	br := bufio.NewReader(nc)
	binaryKey := make([]byte, PublicKeyLen)
	if timeout > 0 {
		_ = nc.SetReadDeadline(time.Now().Add(timeout))
		defer nc.SetReadDeadline(time.Time{})
	}
	if _, err := io.ReadFull(br, binaryKey); err != nil {
		return nil, fmt.Errorf("read binary key: %w", err)
	}
	peer, err := ecdh.X25519().NewPublicKey(binaryKey)
	if err != nil {
		return nil, fmt.Errorf("binary key: %w", err)
	}
	shared, err := priv.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("key exchange: %w", err)
	}
	return newConn(nc, br, challenge, priv.PublicKey().Bytes(), binaryKey, shared, MonitorToClient, compress)
}

// Challenge returns this connection's 16-byte challenge.
func (c *Conn) Challenge() []byte { return c.challenge }

// Transcript returns the hash the hello's proof is made over, for run and step.
func (c *Conn) Transcript(run, step string) []byte {
	return TranscriptHash(c.challenge, c.monitorKey, c.binaryKey, run, step)
}

// Send encodes v as the next frame of this end's direction.
func (c *Conn) Send(v any) error {
	pt, err := EncodeBody(v, c.compress)
	if err != nil {
		return err
	}
	return c.SendPlaintext(pt)
}

// SendJSON sends an already encoded JSON body as the next frame, compressed if this
// connection compresses.
func (c *Conn) SendJSON(body []byte) error {
	pt, err := PackBody(body, c.compress)
	if err != nil {
		return err
	}
	return c.SendPlaintext(pt)
}

// SendPlaintext seals an already encoded plaintext (flag byte + body) as the next frame.
func (c *Conn) SendPlaintext(pt []byte) error {
	frame, err := c.SealNext(pt)
	if err != nil {
		return err
	}
	return c.WriteFrame(frame)
}

// SealNext seals pt as the next frame of this end's direction without sending it. Tests
// use it to tamper with a genuine frame before WriteFrame.
func (c *Conn) SealNext(pt []byte) ([]byte, error) {
	return Seal(c.sendAEAD, c.send, c.challenge, c.sendSeq, pt)
}

// WriteFrame writes raw frame bytes and advances the send sequence number. Tests use it to
// inject tampered frames; everyone else calls Send.
func (c *Conn) WriteFrame(frame []byte) error {
	if c.WriteTimeout > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.WriteTimeout))
		defer c.nc.SetWriteDeadline(time.Time{})
	}
	if _, err := c.nc.Write(frame); err != nil {
		return fmt.Errorf("write frame %s #%d: %w", c.send, c.sendSeq, err)
	}
	c.sendSeq++
	return nil
}

// Recv reads, authenticates and decodes the next frame of the other direction.
// A zero deadline waits forever.
func (c *Conn) Recv(deadline time.Time) (map[string]any, error) {
	_ = c.nc.SetReadDeadline(deadline)
	defer c.nc.SetReadDeadline(time.Time{})
	var hdr [4]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return nil, fmt.Errorf("read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < MinLen || n > MaxLen {
		return nil, fmt.Errorf("frame length %d out of range [%d, %d]", n, MinLen, MaxLen)
	}
	if c.recv == ClientToMonitor && c.recvSeq == 0 && n > MaxHelloLen {
		return nil, fmt.Errorf("hello frame length %d over %d", n, MaxHelloLen)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, fmt.Errorf("read frame body: %w", err)
	}
	pt, err := Open(c.recvAEAD, c.recv, c.challenge, c.recvSeq, body)
	if err != nil {
		return nil, err
	}
	c.recvSeq++
	return DecodeBody(pt)
}

// Close closes the underlying connection.
func (c *Conn) Close() error { return c.nc.Close() }
