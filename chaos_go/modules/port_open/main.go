// Command port_open checks from the target whether a port answers.
package main

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// hostsFile is where names are looked up; DNS is not asked (see the declaration).
const hostsFile = "/etc/hosts"

// resolve turns host into addresses: an IP literal as it is, else the
// addresses /etc/hosts gives the name, in file order. Raw syscalls stand in
// for package net throughout, which would add about 0.4 MB to the binary.
func resolve(host, hostsPath string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{ip}, nil
	}
	var addrs []netip.Addr
	if f, err := os.Open(hostsPath); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			ip, err := netip.ParseAddr(fields[0])
			if err != nil {
				continue
			}
			for _, name := range fields[1:] {
				if strings.EqualFold(strings.TrimSuffix(name, "."), strings.TrimSuffix(host, ".")) {
					addrs = append(addrs, ip)
					break
				}
			}
		}
	}
	if len(addrs) == 0 && strings.EqualFold(host, "localhost") {
		addrs = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%q is neither an IP address nor a name in %s", host, hostsPath)
	}
	return addrs, nil
}

// check is one try: its state, how long it took and why it is not open.
type check struct {
	State   string
	Latency time.Duration
	Reason  string
}

// sockaddr is ap as a socket address, with its address family.
func sockaddr(ap netip.AddrPort) (int, syscall.Sockaddr) {
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return syscall.AF_INET, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ip.As4()}
	}
	return syscall.AF_INET6, &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16()}
}

// poll waits up to d for events on fd with ppoll(2) and returns the events seen.
func poll(fd int, events int16, d time.Duration) (int16, error) {
	type pollFd struct {
		fd      int32
		events  int16
		revents int16
	}
	pfd := pollFd{fd: int32(fd), events: events}
	for {
		ts := syscall.NsecToTimespec(max(d.Nanoseconds(), 0))
		start := time.Now()
		_, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if errno == syscall.EINTR {
			d -= time.Since(start)
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return pfd.revents, nil
	}
}

const (
	pollIn  = 0x1
	pollOut = 0x4
)

// tryTCP runs a non-blocking connect and waits for it until timeout; then, with settle > 0,
// up to settle for the far end to hang up without a byte (see settle_ms).
func tryTCP(ap netip.AddrPort, timeout, settle time.Duration) check {
	family, sa := sockaddr(ap)
	start := time.Now()
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return check{"closed", 0, fmt.Sprintf("socket: %v", err)}
	}
	defer syscall.Close(fd)
	err = syscall.Connect(fd, sa)
	if err == syscall.EINPROGRESS {
		var ready int16
		ready, err = poll(fd, pollOut, timeout)
		if err == nil && ready == 0 {
			return check{"filtered", time.Since(start), fmt.Sprintf("connect %s: no answer within %s", ap, timeout)}
		}
		if err == nil {
			var soErr int
			soErr, err = syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
			if err == nil && soErr != 0 {
				err = syscall.Errno(soErr)
			}
		}
	}
	took := time.Since(start)
	if err != nil {
		return check{"closed", took, fmt.Sprintf("connect %s: %v", ap, err)}
	}
	if settle > 0 && hungUp(fd, settle) {
		return check{"closed", took, fmt.Sprintf("connect %s: accepted, then closed without a byte within %s "+
			"(a forwarder whose service behind it refused?)", ap, settle)}
	}
	return check{"open", took, ""}
}

// hungUp reports whether the far end of the connected socket fd closes or resets it within
// d without sending anything (a byte that comes first means someone is there).
func hungUp(fd int, d time.Duration) bool {
	ready, err := poll(fd, pollIn, d)
	if err != nil || ready == 0 {
		return false
	}
	n, _, err := syscall.Recvfrom(fd, make([]byte, 1), syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return (err == nil && n == 0) || errors.Is(err, syscall.ECONNRESET)
}

// tryUDP sends an empty datagram on a connected socket and waits for a reply;
// the kernel reports an ICMP port-unreachable as ECONNREFUSED on the read.
func tryUDP(ap netip.AddrPort, timeout time.Duration) check {
	family, sa := sockaddr(ap)
	start := time.Now()
	fd, err := syscall.Socket(family, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return check{"closed", 0, fmt.Sprintf("socket: %v", err)}
	}
	defer syscall.Close(fd)
	if err := syscall.Connect(fd, sa); err != nil {
		return check{"closed", time.Since(start), fmt.Sprintf("connect %s: %v", ap, err)}
	}
	if _, err := syscall.Write(fd, nil); err != nil {
		return check{"closed", time.Since(start), fmt.Sprintf("send to %s: %v", ap, err)}
	}
	ready, err := poll(fd, pollIn, timeout)
	if err == nil && ready != 0 {
		_, err = syscall.Read(fd, make([]byte, 1))
	}
	took := time.Since(start)
	switch {
	case err == nil && ready != 0:
		return check{"open", took, ""}
	case errors.Is(err, syscall.ECONNREFUSED):
		return check{"closed", took, fmt.Sprintf("read from %s: %v", ap, err)}
	case err != nil:
		return check{"closed", took, fmt.Sprintf("read from %s: %v", ap, err)}
	}
	return check{"open|filtered", took, ""}
}

// tryHost tries each address of host in turn within timeout and returns the
// first open one's check, or else the first address's.
func tryHost(ctx context.Context, host string, port uint16, protocol string, timeout, settle time.Duration) (check, error) {
	addrs, err := resolve(host, hostsFile)
	if err != nil {
		return check{}, err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var first check
	for i, ip := range addrs {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		ap := netip.AddrPortFrom(ip, port)
		var c check
		if protocol == "udp" {
			c = tryUDP(ap, left)
		} else {
			c = tryTCP(ap, left, settle)
		}
		if c.State == "open" || c.State == "open|filtered" {
			return c, nil
		}
		if i == 0 {
			first = c
		}
	}
	return first, nil
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	ms := func(key string) time.Duration { return time.Duration(p.Int(key)) * time.Millisecond }
	c, err := tryHost(ctx, p.String("host"), uint16(p.Int("port")), p.String("protocol"), ms("timeout_ms"), ms("settle_ms"))
	if err != nil {
		return err
	}
	r.Set("open", c.State == "open" || c.State == "open|filtered")
	r.Set("state", c.State)
	r.Set("latency_ms", float64(c.Latency.Microseconds())/1000)
	r.Set("reason", c.Reason)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
