// Package wire implements the framing of the callback protocol (docs/protocol.md, version 1):
// the clear server hello, then length-prefixed AES-256-GCM frames whose associated data binds
// each frame to its direction, its connection's challenge and its sequence number.
//
// Both ends live here so the kit and its tests (kit/kittest, the fake monitor) share one
// implementation; the Python twin is engine/chaosrun/wire.py.
package wire

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"chaosrun/chaos_go/kit/internal/jsonx"
)

// Protocol constants, as in docs/protocol.md.
const (
	Magic        = "CRN1"
	ChallengeLen = 16
	KeyLen       = 32
	NonceLen     = 12
	TagLen       = 16
	// MaxFrame caps a frame's plaintext (flag byte + body) and a decompressed body.
	MaxFrame = 1 << 20
	// MinLen and MaxLen bound the length prefix L (nonce + ciphertext + tag).
	MinLen = NonceLen + TagLen
	MaxLen = MaxFrame + NonceLen + TagLen
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

// Stream is the byte stream a Conn runs on: a net.Conn, or an *os.File holding a socket.
type Stream interface {
	io.ReadWriteCloser
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// Conn is one end of an authenticated callback connection. It is not safe for concurrent
// Send calls (nor concurrent Recv calls); one goroutine writes, one reads.
type Conn struct {
	nc        Stream
	br        *bufio.Reader
	aead      cipher.AEAD
	challenge []byte
	send      string
	recv      string
	sendSeq   uint32
	recvSeq   uint32
	compress  bool
	// WriteTimeout bounds each frame write (0 = none).
	WriteTimeout time.Duration
}

// Client reads the server hello from nc (within timeout) and returns the binary's end.
func Client(nc Stream, key []byte, compress bool, timeout time.Duration) (*Conn, error) {
	aead, err := NewAEAD(key)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(nc)
	hello := make([]byte, len(Magic)+ChallengeLen)
	if timeout > 0 {
		_ = nc.SetReadDeadline(time.Now().Add(timeout))
	}
	if _, err := io.ReadFull(br, hello); err != nil {
		return nil, fmt.Errorf("read server hello: %w", err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	if string(hello[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("server hello: bad magic %q", hello[:len(Magic)])
	}
	return &Conn{nc: nc, br: br, aead: aead, challenge: hello[len(Magic):],
		send: ClientToMonitor, recv: MonitorToClient, compress: compress}, nil
}

// Server writes a server hello with a fresh challenge to nc and returns the monitor's end.
func Server(nc Stream, key []byte, compress bool) (*Conn, error) {
	aead, err := NewAEAD(key)
	if err != nil {
		return nil, err
	}
	challenge := make([]byte, ChallengeLen)
	if _, err := rand.Read(challenge); err != nil {
		return nil, fmt.Errorf("read challenge: %w", err)
	}
	if _, err := nc.Write(append([]byte(Magic), challenge...)); err != nil {
		return nil, fmt.Errorf("write server hello: %w", err)
	}
	return &Conn{nc: nc, br: bufio.NewReader(nc), aead: aead, challenge: challenge,
		send: MonitorToClient, recv: ClientToMonitor, compress: compress}, nil
}

// Challenge returns this connection's 16-byte challenge.
func (c *Conn) Challenge() []byte { return c.challenge }

// Send encodes v as the next frame of this end's direction.
func (c *Conn) Send(v any) error {
	pt, err := EncodeBody(v, c.compress)
	if err != nil {
		return err
	}
	return c.SendPlaintext(pt)
}

// SendPlaintext seals an already encoded plaintext (flag byte + body) as the next frame.
func (c *Conn) SendPlaintext(pt []byte) error {
	frame, err := Seal(c.aead, c.send, c.challenge, c.sendSeq, pt)
	if err != nil {
		return err
	}
	return c.WriteFrame(frame)
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
	body := make([]byte, n)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, fmt.Errorf("read frame body: %w", err)
	}
	pt, err := Open(c.aead, c.recv, c.challenge, c.recvSeq, body)
	if err != nil {
		return nil, err
	}
	c.recvSeq++
	return DecodeBody(pt)
}

// Close closes the underlying connection.
func (c *Conn) Close() error { return c.nc.Close() }
