package main

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// sdNotify sends state (for example "READY=1\nSTATUS=...") to the service
// manager over $NOTIFY_SOCKET, as sd_notify(3) does. Without
// $NOTIFY_SOCKET it does nothing. Any verb that runs as a Type=notify
// service can use it.
func sdNotify(state string) error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return nil
	}
	addr := sock
	if strings.HasPrefix(addr, "@") { // abstract socket
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notifying %s: %w", sock, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notifying %s: %w", sock, err)
	}
	return nil
}
