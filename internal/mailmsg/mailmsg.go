// Package mailmsg renders plain-text RFC 5322 messages, the one format of
// the weekly reports (engine) and of alerts (notify). It holds no state and
// sends nothing.
package mailmsg

import (
	"bytes"
	"fmt"
	"strings"
)

// Render writes the given header fields (name, value), in order, then MIME-Version, a UTF-8
// text/plain Content-Type and a Content-Transfer-Encoding (7bit, or 8bit
// when the body has a byte ≥ 0x80), a blank line and body, every line ending
// in CRLF. Values are written as given: the caller encodes them (for
// example mime.QEncoding for a subject).
func Render(headers [][2]string, body string) []byte {
	var b bytes.Buffer
	hdr := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	for _, h := range headers {
		hdr(h[0], h[1])
	}
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	cte := "7bit"
	for i := 0; i < len(body); i++ {
		if body[i] >= 0x80 {
			cte = "8bit"
			break
		}
	}
	hdr("Content-Transfer-Encoding", cte)
	b.WriteString("\r\n")
	for _, line := range strings.SplitAfter(body, "\n") {
		if line == "" {
			continue
		}
		b.WriteString(strings.TrimSuffix(line, "\n"))
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
