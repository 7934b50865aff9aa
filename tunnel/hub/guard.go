package hub

import (
	"encoding/binary"
	"errors"
	"net"
	"time"
)

// guard reads an agent's connection as yamux frames (a 12-byte header:
// version, type, flags, stream ID, length; data frames carry length bytes)
// and ends it when the agent does what no honest agent does, before yamux
// acts on it: opening streams (the hub opens them; yamux would queue the
// agent's, 256 KiB each), or pinging faster than keepalives (yamux answers
// each ping from a goroutine of its own, which waits while the agent does
// not read). The job's user can write its pod's token, so its agent is
// not trusted.
type guard struct {
	net.Conn
	hdr   [12]byte
	have  int    // header bytes read so far
	skip  uint32 // data payload bytes still to pass
	pings []time.Time
}

const (
	yamuxData, yamuxWindow, yamuxPing = 0, 1, 2
	yamuxSYN                          = 1
	// maxPings in pingWindow: yamux's keepalive pings every 30s.
	maxPings   = 10
	pingWindow = 10 * time.Second
)

var errHostileAgent = errors.New("hub: the agent broke the protocol")

func (g *guard) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	for b := p[:n]; len(b) > 0; {
		if g.skip > 0 {
			k := min(uint32(len(b)), g.skip)
			g.skip -= k
			b = b[k:]
			continue
		}
		k := copy(g.hdr[g.have:], b)
		g.have += k
		b = b[k:]
		if g.have < len(g.hdr) {
			continue
		}
		g.have = 0
		typ, flags := g.hdr[1], binary.BigEndian.Uint16(g.hdr[2:4])
		length := binary.BigEndian.Uint32(g.hdr[8:12])
		switch {
		case (typ == yamuxData || typ == yamuxWindow) && flags&yamuxSYN != 0:
			g.Conn.Close()
			return 0, errHostileAgent
		case typ == yamuxPing && flags&yamuxSYN != 0:
			now := time.Now()
			for len(g.pings) > 0 && now.Sub(g.pings[0]) > pingWindow {
				g.pings = g.pings[1:]
			}
			if g.pings = append(g.pings, now); len(g.pings) > maxPings {
				g.Conn.Close()
				return 0, errHostileAgent
			}
		case typ == yamuxData:
			g.skip = length
		}
	}
	return n, err
}
