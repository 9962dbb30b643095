package wire

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// Dial connects over TCP to addr, an "ip:port" (IPv4, or [IPv6] with an optional numeric
// zone), within timeout. It uses raw syscalls and returns the socket as a pollable
// *os.File (deadlines work) because the net package would add about 0.4 MB to every module
// binary. Names are not resolved: the monitor sends an address, and a testenv's resolver is
// the candidate's to tamper with anyway.
func Dial(addr string, timeout time.Duration) (*os.File, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("parse address %q (want ip:port): %w", addr, err)
	}
	ip := ap.Addr().Unmap()
	var sa syscall.Sockaddr
	family := syscall.AF_INET
	if ip.Is4() {
		sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ip.As4()}
	} else {
		family = syscall.AF_INET6
		sa6 := &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16()}
		if z := ip.Zone(); z != "" {
			id, err := strconv.ParseUint(z, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("parse address %q: only numeric zones are supported", addr)
			}
			sa6.ZoneId = uint32(id)
		}
		sa = sa6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := connect(fd, sa, time.Now().Add(timeout)); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	return os.NewFile(uintptr(fd), "tcp"), nil
}

// connect runs a non-blocking connect and waits for it until deadline.
func connect(fd int, sa syscall.Sockaddr, deadline time.Time) error {
	err := syscall.Connect(fd, sa)
	switch err {
	case nil:
		return nil
	case syscall.EINPROGRESS, syscall.EINTR, syscall.EALREADY:
	default:
		return fmt.Errorf("connect: %w", err)
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("connect: %w", os.ErrDeadlineExceeded)
		}
		ready, err := pollOut(fd, left)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("connect: poll: %w", err)
		}
		if !ready {
			continue
		}
		soErr, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
		if err != nil {
			return fmt.Errorf("connect: getsockopt: %w", err)
		}
		if soErr != 0 {
			return fmt.Errorf("connect: %w", syscall.Errno(soErr))
		}
		return nil
	}
}

// pollOut waits up to d for fd to become writable, with ppoll(2).
func pollOut(fd int, d time.Duration) (bool, error) {
	type pollFd struct {
		fd      int32
		events  int16
		revents int16
	}
	const pollOutFlag = 0x4
	pfd := pollFd{fd: int32(fd), events: pollOutFlag}
	ts := syscall.NsecToTimespec(d.Nanoseconds())
	n, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if errno != 0 {
		return false, errno
	}
	return n > 0, nil
}
