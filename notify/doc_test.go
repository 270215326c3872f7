package notify

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"coffer/engine"
)

// docExample returns the fenced block "```text example=NAME" of
// docs/design.md, without its last line break.
func docExample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```text example=" + regexp.QuoteMeta(name) + "\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatalf("docs/design.md has no example %q", name)
	}
	return strings.TrimSuffix(string(m[1]), "\n")
}

const docRepo = "0123456789abcdef0123456789abcdef"

func TestDocMessageIDs(t *testing.T) {
	hook := WebhookTarget("https://hooks.provider.example/coffer")
	got := "report " + MessageID(docRepo, TargetEmail, "ops@acme.example", "report|00112233445566778899aabbccddeeff|2026-W11") + "\n" +
		hook + " " + MessageID(docRepo, hook, "", "event|00112233445566778899aabbccddeeff")
	if want := docExample(t, "message-ids"); got != want {
		t.Errorf("message IDs:\n%s\nthe document says:\n%s", got, want)
	}
}

func TestDocWebhook(t *testing.T) {
	hook := WebhookTarget("https://hooks.provider.example/coffer")
	ev := engine.Event{Kind: engine.EventScrubDamage, Severity: engine.SevError, Time: time.Date(2026, 3, 15, 2, 0, 0, 0, time.UTC), Seconds: 812.5,
		Counts: map[string]int64{"packs": 5120, "shards": 30720, "bytes": 85899345920, "missing": 3410, "corrupt": 0, "misplaced": 0, "orphaned": 0,
			"stale_temp": 0, "errors": 0, "repaired": 0, "unrepaired": 3410, "packs_below_full": 3410, "packs_unreadable": 0}}
	body, err := alertJSON(MessageID(docRepo, hook, "", "event|00112233445566778899aabbccddeeff"), docRepo, ev)
	if err != nil {
		t.Fatal(err)
	}
	if want := docExample(t, "alert-webhook"); string(body) != want {
		t.Errorf("webhook body:\n%s\nthe document says:\n%s", body, want)
	}
	sig := docExample(t, "alert-signature")
	if got := Sign([]byte("example-secret"), body); got != sig || !VerifySignature([]byte("example-secret"), []byte(docExample(t, "alert-webhook")), sig) {
		t.Errorf("signature %s, the document says %s", got, sig)
	}
}
