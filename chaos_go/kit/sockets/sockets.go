// Package sockets holds ports the way a daemon would, for the fault processes that squat
// on one, and finds which process holds a port from /proc. Raw syscalls, not package
// net, which would add about 0.4 MB to every binary that links it.
package sockets

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Socket states in /proc/net/{tcp,udp}*: a listening TCP socket, a bound UDP one.
const (
	tcpListen = "0A"
	udpBound  = "07"
)

// Bind opens a socket bound to ip:port: listening, for TCP. An
// unspecified address (0.0.0.0 or ::) is bound as a dual-stack [::] when the
// host has IPv6, so the port is held for both families, as a daemon binding
// "*:port" would.
func Bind(protocol string, ip netip.Addr, port int) (int, error) {
	if ip.IsUnspecified() {
		fd, err := bindFamily(protocol, syscall.AF_INET6, &syscall.SockaddrInet6{Port: port}, true)
		if err == nil || !errors.Is(err, syscall.EAFNOSUPPORT) {
			return fd, err
		}
		return bindFamily(protocol, syscall.AF_INET, &syscall.SockaddrInet4{Port: port}, false)
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return bindFamily(protocol, syscall.AF_INET, &syscall.SockaddrInet4{Port: port, Addr: ip.As4()}, false)
	}
	if ip.Zone() != "" {
		return -1, fmt.Errorf("address %s: zones are not supported", ip)
	}
	return bindFamily(protocol, syscall.AF_INET6, &syscall.SockaddrInet6{Port: port, Addr: ip.As16()}, false)
}

func bindFamily(protocol string, family int, sa syscall.Sockaddr, dualStack bool) (int, error) {
	typ := syscall.SOCK_STREAM
	if protocol == "udp" {
		typ = syscall.SOCK_DGRAM
	}
	fd, err := syscall.Socket(family, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if dualStack {
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0)
	}
	if typ == syscall.SOCK_STREAM {
		// As every daemon does: a port whose old connections linger in
		// TIME_WAIT can still be bound; a live listener still cannot.
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	if typ == syscall.SOCK_STREAM {
		if err := syscall.Listen(fd, 128); err != nil {
			syscall.Close(fd)
			return -1, fmt.Errorf("listen: %w", err)
		}
	}
	return fd, nil
}

// TurnAway serves a bound socket until the process ends: every TCP client is accepted and
// closed at once, every UDP datagram dropped.
func TurnAway(fd int, protocol string) {
	if protocol == "udp" {
		go discardDatagrams(fd)
	} else {
		go refuseClients(fd)
	}
}

// refuseClients accepts and closes connections, blocking in accept(2).
func refuseClients(fd int) {
	for {
		c, _, err := syscall.Accept4(fd, syscall.SOCK_CLOEXEC)
		if err == nil {
			syscall.Close(c)
			continue
		}
		if err != syscall.EINTR && err != syscall.ECONNABORTED {
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: do not spin
		}
	}
}

// discardDatagrams reads and drops datagrams, blocking in recvfrom(2).
func discardDatagrams(fd int) {
	buf := make([]byte, 64<<10)
	for {
		if _, _, err := syscall.Recvfrom(fd, buf, 0); err != nil && err != syscall.EINTR {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// WaitBound waits until process pid owns a socket bound to port (listening,
// for TCP), as /proc/PID/net and /proc/PID/fd show it.
func WaitBound(ctx context.Context, procDir string, pid int, protocol string, port int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		found, err := ownsPort(procDir, pid, protocol, port)
		if err != nil {
			return err
		}
		if found {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d did not bind port %d/%s within %s", pid, port, protocol, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Owns says whether process pid holds a socket bound to port (listening, for TCP) now.
func Owns(procDir string, pid int, protocol string, port int64) bool {
	found, err := ownsPort(procDir, pid, protocol, port)
	return err == nil && found
}

// ownsPort says whether pid has an open socket bound to port. Its being gone
// is an error: it could not bind.
func ownsPort(procDir string, pid int, protocol string, port int64) (bool, error) {
	dir := filepath.Join(procDir, strconv.Itoa(pid))
	state := tcpListen
	if protocol == "udp" {
		state = udpBound
	}
	inodes := map[string]bool{}
	for _, table := range []string{protocol, protocol + "6"} {
		if err := socketInodes(filepath.Join(dir, "net", table), port, state, inodes); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
	}
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return false, fmt.Errorf("process %d exited: it could not bind", pid)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") && inodes[strings.TrimSuffix(link[8:], "]")] {
			return true, nil
		}
	}
	return false, nil
}

// socketInodes adds to inodes the sockets of a /proc/net table whose local
// port is port and whose state is state.
func socketInodes(path string, port int64, state string, inodes map[string]bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != state {
			continue
		}
		_, hexPort, ok := strings.Cut(fields[1], ":")
		if n, err := strconv.ParseInt(hexPort, 16, 64); ok && err == nil && n == port {
			inodes[fields[9]] = true
		}
	}
	return sc.Err()
}
