package sockets

import (
	"os"
	"testing"
)

func TestSocketInodesReadsListeningPortsFromProcNet(t *testing.T) {
	dir := t.TempDir()
	table := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n" +
		"   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0\n"
	path := dir + "/tcp"
	os.WriteFile(path, []byte(table), 0o644)
	inodes := map[string]bool{}
	if err := socketInodes(path, 8080, tcpListen, inodes); err != nil {
		t.Fatal(err)
	}
	if len(inodes) != 1 || !inodes["4242"] {
		t.Errorf("inodes = %v; want only the listener 4242", inodes)
	}
}
