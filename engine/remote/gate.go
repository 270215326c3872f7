package remote

import (
	"container/list"
	"net"
	"sync"
)

// gate bounds the connections that are not admitted yet (in the TLS
// handshake, or being refused), apart from the admitted sessions: at most
// max at once and perAddr from one source (an IPv4 address or an IPv6 /64).
// A source over its share is closed at once; when the gate is full the
// connection that has waited longest is closed to make room, so idle
// connections cannot keep newcomers out: an attacker would have to open
// connections faster than a customer completes a handshake (milliseconds).
// Safe for concurrent use.
type gate struct {
	max, perAddr int

	mu     sync.Mutex // guards order, byAddr and every pending's elem
	order  *list.List // of *pending, oldest first
	byAddr map[string]int
}

// pending is one connection in the gate.
type pending struct {
	conn    net.Conn
	addr    string
	elem    *list.Element // nil once it left
	evicted chan struct{} // closed when the gate closed the connection
}

func newGate(max, perAddr int) *gate {
	return &gate{max: max, perAddr: perAddr, order: list.New(), byAddr: map[string]int{}}
}

// enter admits c to the gate, or returns nil when its source has perAddr
// connections in the gate already. It may close the oldest connection in
// the gate to make room, and returns that one's source ("" if none) for
// the log.
func (g *gate) enter(c net.Conn) (p *pending, evictedAddr string) {
	addr := sourceKey(c.RemoteAddr())
	var victim *pending
	g.mu.Lock()
	if g.byAddr[addr] >= g.perAddr {
		g.mu.Unlock()
		return nil, ""
	}
	if g.order.Len() >= g.max {
		victim = g.order.Remove(g.order.Front()).(*pending)
		g.dropLocked(victim)
	}
	p = &pending{conn: c, addr: addr, evicted: make(chan struct{})}
	p.elem = g.order.PushBack(p)
	g.byAddr[addr]++
	g.mu.Unlock()
	if victim != nil {
		close(victim.evicted)
		victim.conn.Close()
		return p, victim.addr
	}
	return p, ""
}

// leave takes p out of the gate (it was admitted or refused); it may be
// called more than once, and after p was evicted.
func (g *gate) leave(p *pending) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p.elem == nil {
		return
	}
	g.order.Remove(p.elem)
	g.dropLocked(p)
}

func (g *gate) dropLocked(p *pending) {
	p.elem = nil
	if g.byAddr[p.addr]--; g.byAddr[p.addr] <= 0 {
		delete(g.byAddr, p.addr)
	}
}

// len is the number of connections in the gate.
func (g *gate) len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.order.Len()
}

// sourceKey is the share of the gate a remote address counts against: its
// IPv4 address, or its IPv6 /64 (one customer's network usually holds a
// whole /64), or the address's text for other networks.
func sourceKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	if ip6 := ta.IP.To16(); ip6 != nil {
		return net.IP(append(ip6[:8:8], make([]byte, 8)...)).String() + "/64"
	}
	return ta.IP.String()
}
