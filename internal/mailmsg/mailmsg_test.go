package mailmsg

import "testing"

func TestRender(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"hello\nworld\n", "From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\nhello\r\nworld\r\n"},
		{"grüß", "From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ngrüß\r\n"},
	} {
		if got := string(Render([][2]string{{"From", "a@b"}}, tc.body)); got != tc.want {
			t.Errorf("Render(%q) = %q, want %q", tc.body, got, tc.want)
		}
	}
}
