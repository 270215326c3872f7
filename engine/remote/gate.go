package remote

import (
	"container/list"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// gate bounds the connections that are not admitted yet (in the TLS
// handshake, or being refused), apart from the admitted sessions: at most
// max at once. A connection is never turned away while there is room;
// when there is none:
//
//  1. the oldest idle connection is closed to make room: one that has sent
//     nothing for idleAfter (nothing read from it and nothing waiting in
//     the kernel's receive buffer), while a client sends its TLS hello as
//     soon as it connects;
//  2. otherwise, the oldest connection of a source (an IPv4 address, an
//     IPv6 /64) holding more than its share perAddr is closed;
//  3. otherwise the newcomer is closed.
//
// So idle connections cannot keep customers out (a burst of them fills the
// gate for idleAfter at most; holding it takes a steady max connections per
// idleAfter, a flood for the firewall), and a source busy with many
// handshakes loses its own places before anyone else does, while many
// customers behind one address are never turned away for it while there
// is room. Safe for concurrent use.
type gate struct {
	max, perAddr int

	mu     sync.Mutex // guards order, byAddr and every pending's elem
	order  *list.List // of *pending, oldest first
	byAddr map[string]int
}

// pending is one connection in the gate.
type pending struct {
	conn    net.Conn // the connection as the TLS server reads it
	raw     net.Conn
	addr    string
	since   time.Time     // when it entered
	heard   atomic.Bool   // bytes were read from it
	elem    *list.Element // nil once it left
	evicted chan struct{} // closed when the gate closed the connection
}

// gateConn is a connection in the gate as the TLS server sees it: it
// notes that the client sent something.
type gateConn struct {
	net.Conn
	p *pending
}

func (c *gateConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.p.heard.Store(true)
	}
	return n, err
}

// idle reports whether the client has sent nothing in the idleAfter since
// it connected.
func (p *pending) idle(now time.Time) bool {
	return now.Sub(p.since) >= idleAfter && !p.heard.Load() && !bytesWaiting(p.raw)
}

// idleAfter is how long a connection may send nothing before the gate
// counts it as idle.
const idleAfter = 100 * time.Millisecond

// bytesWaiting reports whether c's receive buffer holds bytes not read yet
// (false when that cannot be told).
func bytesWaiting(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }) != nil {
		return false
	}
	return n > 0
}

func newGate(max, perAddr int) *gate {
	return &gate{max: max, perAddr: perAddr, order: list.New(), byAddr: map[string]int{}}
}

// enter admits c to the gate, closing another connection to make room if
// need be (see gate); it returns c's place (c wrapped for the TLS server
// is p.conn), or nil when c was closed, and the evicted connection's
// source and the reason ("" if none), for the log.
func (g *gate) enter(c net.Conn) (p *pending, evictedAddr, why string) {
	now := time.Now()
	addr := sourceKey(c.RemoteAddr())
	p = &pending{raw: c, addr: addr, since: now, evicted: make(chan struct{})}
	p.conn = &gateConn{Conn: c, p: p}
	g.mu.Lock()
	var victim *pending
	if g.order.Len() >= g.max {
		victim, why = g.oldestLocked(func(o *pending) bool { return o.idle(now) }), "idle"
		if victim == nil {
			victim, why = g.oldestLocked(func(o *pending) bool { return g.byAddr[o.addr] > g.perAddr }), "address-share"
		}
		if victim == nil {
			g.mu.Unlock()
			c.Close()
			return nil, "", ""
		}
		g.order.Remove(victim.elem)
		g.dropLocked(victim)
	}
	p.elem = g.order.PushBack(p)
	g.byAddr[addr]++
	g.mu.Unlock()
	if victim != nil {
		close(victim.evicted)
		victim.raw.Close()
		return p, victim.addr, why
	}
	return p, "", ""
}

// oldestLocked returns the oldest connection in the gate for which ok
// holds, or nil.
func (g *gate) oldestLocked(ok func(*pending) bool) *pending {
	for e := g.order.Front(); e != nil; e = e.Next() {
		if o := e.Value.(*pending); ok(o) {
			return o
		}
	}
	return nil
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
