// Package notify delivers what Coffer has to tell people: each tenant's
// weekly report and the operator's summary by e-mail, and the engine's
// events (engine.Event) as alerts by e-mail to the operator and as signed
// webhooks. docs/design.md, chapter 16, is its specification.
//
// Every message goes through an on-disk outbox (Outbox): it is written
// durably under an idempotent message ID before the first try, delivered
// by one pass at a time, and removed only after its delivery record is
// durable. A message that cannot be delivered stays and is tried again
// with backoff; one whose record exists is never sent again.
//
// It owns the SMTP client (STARTTLS required unless the server is on
// loopback or the connection is implicit TLS; AUTH PLAIN or LOGIN), the
// webhook client (HMAC-SHA256 signature in X-Coffer-Signature), the
// matchers that route events to targets, and the rendering of alerts.
//
// It must never put tenant data, file names, paths, host names or tags in
// an alert (events carry none), never send a tenant's name to anyone but
// the operator's targets, never send anything to a shredded tenant, and
// never write a password or secret to a file, a log or an error.
package notify
