package repo

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Drive is a Drive kept in a bucket of an S3-compatible object store (Ceph
// RGW, MinIO, SeaweedFS, versitygw, the clouds), opened from a URL:
//
//	s3://HOST[:PORT]/BUCKET[/PREFIX]       HTTPS, certificate verified against
//	                                       the system roots or S3Options.CAFile
//	s3+http://HOST[:PORT]/BUCKET[/PREFIX]  plain HTTP, loopback hosts only
//
// with optional query parameters profile=NAME (a profile of the shared
// credentials file) and region=R (default us-east-1). Object name N is the key
// PREFIX/N (N without a prefix). Credentials come from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, or from the shared credentials file
// (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials) with the URL's profile;
// they are held in memory only and never written or put in an error.
//
// What each verb does on the wire:
//   - Put is one PutObject of the whole object with its Content-MD5 (never
//     multipart): S3 makes a PUT visible only once it is complete and its
//     checksum matched, so a reader sees the old object or the new one, never
//     half of one. The server acknowledges a PUT only when it is durable.
//   - ReadAt is one ranged GetObject of exactly the bytes asked for.
//   - Size is HeadObject; List is ListObjectsV2 with the prefix, streamed page
//     by page (memory does not grow with the bucket); Delete is DeleteObject;
//     DeletePrefix streams a listing into multi-object DeleteObjects.
//
// Failures: each attempt has a timeout. Transient errors (5xx, 429, a reset
// connection, a body cut short) are retried with exponential backoff;
// permanent ones (403, 404 of an object, a range past the end, a certificate
// that is not trusted) are not. A server that cannot be reached (connection
// refused, no route, a timeout) trips a circuit breaker: for
// S3Options.BreakerWindow every call fails at once with an error wrapping
// ErrS3Unreachable, so reads route around the server without waiting a
// timeout per blob; the first call after the window tries again.
//
// S3Drive also implements PrefixDeleter and TempCleaner (stale multipart
// uploads, which scrub finds and aborts). It does not implement SpaceReporter:
// an object store has no fixed size, so backups never skip it as full. It is
// safe for concurrent use.
type S3Drive struct {
	url    string // canonical URL; never carries credentials; immutable
	bucket string
	prefix string // "" or "a/b/"
	client *minio.Client
	core   minio.Core
	o      S3Options

	mu        sync.Mutex
	downUntil time.Time // the server is treated as unreachable until then; guarded by mu
	downErr   error     // the failure that tripped the breaker; guarded by mu
}

var (
	_ Drive         = (*S3Drive)(nil)
	_ PrefixDeleter = (*S3Drive)(nil)
	_ TempCleaner   = (*S3Drive)(nil)
)

// S3Options configure OpenS3Drive. Zero fields take the defaults.
type S3Options struct {
	// CAFile is a PEM file of the certificate authorities that sign the
	// servers' certificates; "" means the system roots. Only for s3://.
	CAFile string
	// AllowVersioning accepts a bucket with versioning or object lock. In such
	// a bucket a delete only adds a marker, so prune and shred free nothing
	// unless the operator's lifecycle rules expire old versions: set it only
	// when they do.
	AllowVersioning bool
	// Timeout bounds one attempt of a call (a Put gets one more second per
	// MiB); default 60 s.
	Timeout time.Duration
	// DialTimeout bounds connecting to the server; default 5 s.
	DialTimeout time.Duration
	// Attempts is how often a call is tried on transient errors; default 4.
	Attempts int
	// Backoff is the wait before the first retry, doubled for each further
	// one; default 100 ms.
	Backoff time.Duration
	// BreakerWindow is how long an unreachable server is remembered: calls
	// fail at once during it; default 10 s.
	BreakerWindow time.Duration
}

func (o *S3Options) fill() {
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.Backoff <= 0 {
		o.Backoff = 100 * time.Millisecond
	}
	if o.BreakerWindow <= 0 {
		o.BreakerWindow = 10 * time.Second
	}
}

// Errors of S3 drives, tested with errors.Is.
var (
	// ErrS3Unreachable reports a server that cannot be reached (or one the
	// circuit breaker remembers as unreachable).
	ErrS3Unreachable = errors.New("repo: S3 server unreachable")
	// ErrS3Denied reports a 403: a wrong access key or secret, or a key
	// without rights on the bucket.
	ErrS3Denied = errors.New("repo: S3 access denied")
	// ErrS3NoBucket reports a bucket that does not exist.
	ErrS3NoBucket = errors.New("repo: S3 bucket does not exist")
	// ErrS3Versioned reports a bucket with versioning or object lock, refused
	// without S3Options.AllowVersioning.
	ErrS3Versioned = errors.New("repo: S3 bucket keeps old versions")
)

// s3Region is the region assumed when the URL names none; S3-compatible
// servers accept it.
const s3Region = "us-east-1"

// OpenS3Drive opens the S3 drive at rawURL. It checks that the bucket exists
// and that the credentials may use it, and refuses (ErrS3Versioned) a bucket
// with versioning or object lock unless o.AllowVersioning. Each failure is one
// sentence naming the drive URL and wraps ErrBadS3URL, ErrS3NoBucket,
// ErrS3Denied or ErrS3Unreachable. It does not read or write the drive
// identity; callers do that with ReadIdentity and WriteIdentity.
func OpenS3Drive(ctx context.Context, rawURL string, o S3Options) (*S3Drive, error) {
	loc, err := parseS3URL(rawURL)
	if err != nil {
		return nil, err
	}
	o.fill()
	d := &S3Drive{url: loc.canonical(), bucket: loc.bucket, prefix: loc.prefix, o: o}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("repo: S3 drive %s: "+format, append([]any{d.url}, args...)...)
	}
	creds, err := s3Credentials(loc.profile)
	if err != nil {
		return nil, fail("%v", err)
	}
	tr, err := s3Transport(loc.secure, o)
	if err != nil {
		return nil, fail("%v", err)
	}
	region := loc.region
	if region == "" {
		region = s3Region
	}
	d.client, err = minio.New(loc.host, &minio.Options{
		Creds:        creds,
		Secure:       loc.secure,
		Transport:    tr,
		Region:       region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1, // S3Drive retries itself: it tells transient from permanent errors and has a breaker
	})
	if err != nil {
		return nil, fail("%v", err)
	}
	d.core = minio.Core{Client: d.client}

	var exists bool
	err = d.do(ctx, "check bucket", 0, func(ctx context.Context) error {
		var err error
		exists, err = d.client.BucketExists(ctx, d.bucket)
		return err
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, ErrS3Unreachable):
		cause := err
		var ue *unreachableError
		if errors.As(err, &ue) {
			cause = ue.cause
		}
		return nil, fail("server %s is unreachable (%v): %w", loc.host, cause, ErrS3Unreachable)
	case errors.Is(err, ErrS3Denied):
		return nil, fail("access to bucket %q was denied: the access key or secret is wrong, or the key may not use this bucket: %w", d.bucket, ErrS3Denied)
	case err != nil:
		return nil, fail("checking bucket %q: %w", d.bucket, err)
	case !exists:
		return nil, fail("bucket %q does not exist on %s (create it first): %w", d.bucket, loc.host, ErrS3NoBucket)
	}
	if !o.AllowVersioning {
		if err := d.checkUnversioned(ctx); err != nil {
			return nil, fail("%w", err)
		}
	}
	return d, nil
}

// checkUnversioned refuses a bucket with versioning (enabled or suspended:
// either way objects may have old versions that a delete does not remove) or
// an object lock configuration. A server that does not implement these calls
// has neither.
func (d *S3Drive) checkUnversioned(ctx context.Context) error {
	var vc minio.BucketVersioningConfiguration
	err := d.do(ctx, "check versioning", 0, func(ctx context.Context) error {
		var err error
		vc, err = d.client.GetBucketVersioning(ctx, d.bucket)
		return err
	})
	if err != nil && !notImplemented(err) {
		return fmt.Errorf("checking versioning of bucket %q: %w", d.bucket, err)
	}
	if err == nil && (vc.Status == "Enabled" || vc.Status == "Suspended") {
		return fmt.Errorf("bucket %q has versioning %s: a delete there only adds a marker, so prune and shred would free nothing; disable versioning, or expire old versions with a lifecycle rule and pass --s3-allow-versioning: %w",
			d.bucket, strings.ToLower(vc.Status), ErrS3Versioned)
	}
	var lock string
	err = d.do(ctx, "check object lock", 0, func(ctx context.Context) error {
		var err error
		lock, _, _, _, err = d.client.GetObjectLockConfig(ctx, d.bucket)
		return err
	})
	if err != nil && !notImplemented(err) && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("checking object lock of bucket %q: %w", d.bucket, err)
	}
	if err == nil && lock == "Enabled" {
		return fmt.Errorf("bucket %q has object lock: locked objects cannot be deleted, so prune and shred would free nothing; use a bucket without it, or pass --s3-allow-versioning if its retention is what you want: %w",
			d.bucket, ErrS3Versioned)
	}
	return nil
}

// URL returns the drive's canonical URL (without credentials).
func (d *S3Drive) URL() string { return d.url }

// String returns the drive's canonical URL.
func (d *S3Drive) String() string { return d.url }

// key returns the object key of a drive object name.
func (d *S3Drive) key(name string) string { return d.prefix + name }

// s3Credentials resolves the credentials once, at open: the URL's profile of
// the shared credentials file if it names one, else the environment, else the
// default profile (AWS_PROFILE, or "default").
func s3Credentials(profile string) (*credentials.Credentials, error) {
	static := func(v credentials.Value) *credentials.Credentials {
		return credentials.NewStaticV4(v.AccessKeyID, v.SecretAccessKey, v.SessionToken)
	}
	if profile != "" {
		v, err := credentials.NewFileAWSCredentials("", profile).Get()
		if err != nil || v.AccessKeyID == "" || v.SecretAccessKey == "" {
			return nil, fmt.Errorf("no credentials for profile %q in the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)", profile)
		}
		return static(v), nil
	}
	if v, err := credentials.NewEnvAWS().Get(); err == nil && v.AccessKeyID != "" && v.SecretAccessKey != "" {
		return static(v), nil
	}
	if v, err := credentials.NewFileAWSCredentials("", "").Get(); err == nil && v.AccessKeyID != "" && v.SecretAccessKey != "" {
		return static(v), nil
	}
	return nil, errors.New("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add ?profile=NAME to the URL for a profile of the shared credentials file")
}

// s3Transport is the HTTP transport of one drive: bounded connection set-up,
// TLS 1.2 or later verified against the system roots or o.CAFile.
func s3Transport(secure bool, o S3Options) (*http.Transport, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if secure && o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   o.DialTimeout + 5*time.Second,
		ResponseHeaderTimeout: o.Timeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          256,
		// Shard puts and reads of one drive run in parallel (one per pack being
		// written or read); keep that many connections warm.
		MaxIdleConnsPerHost: 32,
		DisableCompression:  true, // shards are sealed and compressed already
	}, nil
}

// errClass says what to do about a failed attempt.
type errClass int

const (
	permanent   errClass = iota // give up: the answer will not change
	transient                   // retry after a backoff
	unreachable                 // trip the breaker and give up
)

// unreachableError is the error of a call to a server that could not be
// reached; it wraps ErrS3Unreachable.
type unreachableError struct {
	what, url string
	cause     error
}

func (u *unreachableError) Error() string {
	return fmt.Sprintf("%s on %s: server unreachable: %v", u.what, u.url, u.cause)
}

func (u *unreachableError) Unwrap() error { return ErrS3Unreachable }

// permanentError marks an error a call's attempt has already mapped (not
// found, short object): it is returned as is, without retry.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// classify sorts an error of one attempt; timedOut says the attempt's own
// deadline passed (the caller's context is still live).
func classify(err error, timedOut bool) errClass {
	var pe permanentError
	if errors.As(err, &pe) {
		return permanent
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) && er.StatusCode != 0 {
		switch {
		case er.StatusCode >= 500, er.StatusCode == http.StatusTooManyRequests, er.StatusCode == http.StatusRequestTimeout:
			return transient
		case er.Code == "SlowDown" || er.Code == "RequestTimeout" || er.Code == "InternalError":
			return transient
		}
		return permanent
	}
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var ce x509.CertificateInvalidError
	var tv *tls.CertificateVerificationError
	if errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ce) || errors.As(err, &tv) {
		return permanent
	}
	if timedOut || errors.Is(err, context.DeadlineExceeded) {
		return unreachable
	}
	var dns *net.DNSError
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.As(err, &dns) {
		return unreachable
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return unreachable
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return unreachable
	}
	return transient // reset connections, bodies cut short, other 5xx-like trouble
}

// notImplemented reports an error that means the server lacks the feature.
func notImplemented(err error) bool {
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		return false
	}
	return er.StatusCode == http.StatusNotImplemented || er.Code == "NotImplemented" ||
		strings.Contains(er.Code, "NotFound") || strings.Contains(er.Code, "NotConfigured")
}

// s3Code returns the S3 error code of err, or "".
func s3Code(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code
	}
	return ""
}

// s3Status returns the HTTP status of an S3 error response, or 0.
func s3Status(err error) int {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.StatusCode
	}
	return 0
}

// breaker returns an error wrapping ErrS3Unreachable while the breaker is open.
func (d *S3Drive) breaker() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Now().Before(d.downUntil) {
		return fmt.Errorf("%w: %s failed within the last %s: %v", ErrS3Unreachable, d.url, d.o.BreakerWindow, d.downErr)
	}
	return nil
}

func (d *S3Drive) trip(err error) {
	d.mu.Lock()
	d.downUntil = time.Now().Add(d.o.BreakerWindow)
	d.downErr = err
	d.mu.Unlock()
}

func (d *S3Drive) healthy() {
	d.mu.Lock()
	d.downUntil = time.Time{}
	d.downErr = nil
	d.mu.Unlock()
}

// do runs attempt with retries. timeout bounds each attempt (0: only the
// transport's own timeouts, for listings of unbounded length). The error is
// ctx's once ctx is done; it wraps ErrS3Unreachable for an unreachable
// server and ErrS3Denied for a 403.
func (d *S3Drive) do(ctx context.Context, what string, timeout time.Duration, attempt func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.breaker(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	wait := d.o.Backoff
	for i := 1; ; i++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			actx, cancel = context.WithTimeout(ctx, timeout)
		}
		err := attempt(actx)
		timedOut := err != nil && actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			d.healthy()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch classify(err, timedOut) {
		case permanent:
			d.healthy() // the server answered
			var pe permanentError
			if errors.As(err, &pe) {
				return fmt.Errorf("%s: %w", what, pe.err)
			}
			if s3Status(err) == http.StatusForbidden {
				return fmt.Errorf("%s on %s: %w (%v)", what, d.url, ErrS3Denied, err)
			}
			return fmt.Errorf("%s on %s: %w", what, d.url, err)
		case unreachable:
			if timedOut {
				err = fmt.Errorf("no answer within %s", timeout)
			}
			d.trip(err)
			return &unreachableError{what: what, url: d.url, cause: err}
		}
		if i >= d.o.Attempts {
			return fmt.Errorf("%s on %s: gave up after %d attempts: %w", what, d.url, i, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		wait *= 2
	}
}

// putTimeout is the attempt timeout of a put or read of n bytes: the base
// timeout plus a second per MiB, so that a large shard on a slow link is not
// cut off while it is still moving.
func (d *S3Drive) putTimeout(n int) time.Duration {
	return d.o.Timeout + time.Duration(n>>20)*time.Second
}

// Put implements Drive: one PutObject with Content-MD5, never multipart.
func (d *S3Drive) Put(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	key := d.key(name)
	return d.do(ctx, "put "+name, d.putTimeout(len(data)), func(ctx context.Context) error {
		_, err := d.client.PutObject(ctx, d.bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
			ContentType:      "application/octet-stream",
			SendContentMd5:   true,
			DisableMultipart: true,
		})
		return err
	})
}

// ReadAt implements Drive: one ranged GetObject of exactly len(p) bytes.
func (d *S3Drive) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := checkRead(ctx, name, off); err != nil {
		return err
	}
	if len(p) == 0 {
		_, err := d.Size(ctx, name) // nothing to read, but a missing object is still ErrNotFound
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		return nil
	}
	key := d.key(name)
	end := off + int64(len(p))
	short := func(size int64) error {
		if size < 0 {
			return permanentError{fmt.Errorf("%d bytes at %d: past the end: %w", len(p), off, io.ErrUnexpectedEOF)}
		}
		return permanentError{fmt.Errorf("%d bytes at %d of %d: %w", len(p), off, size, io.ErrUnexpectedEOF)}
	}
	return d.do(ctx, "read "+name, d.putTimeout(len(p)), func(ctx context.Context) error {
		var opts minio.GetObjectOptions
		if err := opts.SetRange(off, end-1); err != nil {
			return permanentError{err}
		}
		rc, _, hdr, err := d.core.GetObject(ctx, d.bucket, key, opts)
		if err != nil {
			switch code := s3Code(err); {
			case code == minio.NoSuchKey || code == "NotFound" || s3Status(err) == http.StatusNotFound:
				return permanentError{ErrNotFound}
			case code == "InvalidRange" || s3Status(err) == http.StatusRequestedRangeNotSatisfiable:
				return short(-1)
			}
			return err
		}
		defer rc.Close()
		start, total := off, int64(-1)
		if cr := hdr.Get("Content-Range"); cr != "" {
			start, total = parseContentRange(cr)
		} else {
			// The server ignored the range and sends the whole object.
			start = 0
			total, _ = strconv.ParseInt(hdr.Get("Content-Length"), 10, 64)
		}
		if total >= 0 && total < end {
			return short(total)
		}
		if start > off {
			return fmt.Errorf("server sent bytes from %d, asked from %d", start, off)
		}
		if start < off {
			if _, err := io.CopyN(io.Discard, rc, off-start); err != nil {
				return err
			}
		}
		_, err = io.ReadFull(rc, p)
		return err // a body cut short is transient: the object is long enough
	})
}

// parseContentRange parses "bytes START-END/TOTAL"; an unknown total is -1.
func parseContentRange(s string) (start, total int64) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "bytes ")
	rng, tot, _ := strings.Cut(s, "/")
	a, _, _ := strings.Cut(rng, "-")
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		start = -1
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	if err != nil {
		total = -1
	}
	return start, total
}

// Size implements Drive with HeadObject.
func (d *S3Drive) Size(ctx context.Context, name string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := ValidateName(name); err != nil {
		return 0, err
	}
	var size int64
	err := d.do(ctx, "size of "+name, d.o.Timeout, func(ctx context.Context) error {
		info, err := d.client.StatObject(ctx, d.bucket, d.key(name), minio.StatObjectOptions{})
		if err != nil {
			if code := s3Code(err); code == minio.NoSuchKey || code == "NotFound" || s3Status(err) == http.StatusNotFound {
				return permanentError{ErrNotFound}
			}
			return err
		}
		if strings.HasSuffix(info.Key, "/") {
			return permanentError{ErrNotFound} // a folder marker is not an object
		}
		size = info.Size
		return nil
	})
	return size, err
}

// fnError carries an error of List's callback through the retry loop.
type fnError struct{ err error }

func (f fnError) Error() string { return f.err.Error() }

// List implements Drive: ListObjectsV2 with the prefix, recursive, streamed a
// page at a time. Keys under the drive's prefix whose rest is not a valid
// object name (folder markers, foreign objects) are skipped. A listing cut by
// a transient error resumes after the last key it delivered, so fn sees every
// object once. fn is called from the caller's goroutine.
func (d *S3Drive) List(ctx context.Context, prefix string, fn func(name string, size int64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidatePrefix(prefix); err != nil {
		return err
	}
	last := ""
	err := d.do(ctx, "list "+prefix, 0, func(ctx context.Context) error {
		return d.walk(ctx, d.prefix+prefix, last, func(o minio.ObjectInfo) error {
			name := strings.TrimPrefix(o.Key, d.prefix)
			last = o.Key
			if ValidateName(name) != nil {
				return nil
			}
			if err := fn(name, o.Size); err != nil {
				return fnError{err}
			}
			return nil
		})
	})
	var fe fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	return err
}

// walk streams the keys under keyPrefix after startAfter to fn; an error of
// fn stops the walk and is returned as a permanentError.
func (d *S3Drive) walk(ctx context.Context, keyPrefix, startAfter string, fn func(minio.ObjectInfo) error) error {
	lctx, cancel := context.WithCancel(ctx)
	ch := d.client.ListObjects(lctx, d.bucket, minio.ListObjectsOptions{Prefix: keyPrefix, Recursive: true, StartAfter: startAfter})
	defer func() {
		cancel()
		for range ch { // let the lister's goroutine finish
		}
	}()
	for o := range ch {
		if o.Err != nil {
			return o.Err
		}
		if err := fn(o); err != nil {
			return permanentError{err}
		}
	}
	return nil
}

// Delete implements Drive with DeleteObject; a missing object is not an error.
func (d *S3Drive) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	return d.do(ctx, "delete "+name, d.o.Timeout, func(ctx context.Context) error {
		err := d.client.RemoveObject(ctx, d.bucket, d.key(name), minio.RemoveObjectOptions{})
		if err != nil && (s3Code(err) == minio.NoSuchKey || s3Status(err) == http.StatusNotFound) {
			return nil
		}
		return err
	})
}

// maxDeleteErrors bounds the per-object errors DeletePrefix reports.
const maxDeleteErrors = 10

// DeletePrefix implements PrefixDeleter: it streams a listing of the prefix
// into multi-object deletes (1000 keys per request). Memory stays flat
// whatever the number of objects.
func (d *S3Drive) DeletePrefix(ctx context.Context, prefix string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if prefix == "" {
		return fmt.Errorf("%w: DeletePrefix needs a non-empty prefix", ErrInvalidName)
	}
	if err := ValidatePrefix(prefix); err != nil {
		return err
	}
	return d.do(ctx, "delete prefix "+prefix, 0, func(ctx context.Context) error {
		dctx, cancel := context.WithCancel(ctx)
		defer cancel()
		objs := make(chan minio.ObjectInfo, 1000)
		var listErr error // written by the lister before it closes objs
		go func() {
			defer close(objs)
			listErr = d.walk(dctx, d.key(prefix), "", func(o minio.ObjectInfo) error {
				select {
				case objs <- minio.ObjectInfo{Key: o.Key}:
					return nil
				case <-dctx.Done():
					return dctx.Err()
				}
			})
		}()
		var errs []error
		for e := range d.client.RemoveObjects(dctx, d.bucket, objs, minio.RemoveObjectsOptions{}) {
			if e.Err == nil || s3Code(e.Err) == minio.NoSuchKey {
				continue
			}
			if len(errs) < maxDeleteErrors {
				errs = append(errs, fmt.Errorf("%s: %w", e.ObjectName, e.Err))
			}
			cancel()
		}
		for range objs { // RemoveObjects stopped early: let the lister finish
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		var pe permanentError
		if errors.As(listErr, &pe) {
			return pe.err
		}
		return listErr
	})
}

// StaleUploadAge is how old an unfinished multipart upload must be before
// CleanStale aborts it. S3Drive itself never starts one (every put is a single
// PutObject); they come from other tools or from a client that died.
const StaleUploadAge = time.Hour

// CleanStale aborts the multipart uploads under the drive's prefix started
// more than StaleUploadAge ago. Scrub reaches it through TempCleaner
// (ListStaleTemp reports, RemoveStaleTemp aborts).
func (d *S3Drive) CleanStale(ctx context.Context) error {
	return d.RemoveStaleTemp(ctx, time.Now().Add(-StaleUploadAge))
}

// ListStaleTemp implements TempCleaner: it calls fn for every multipart upload
// under the drive's prefix started before the given time, with the object
// name it would have (a name outside the naming rule is given as the key) and
// the size the server reports.
func (d *S3Drive) ListStaleTemp(ctx context.Context, before time.Time, fn func(name string, size int64) error) error {
	return d.uploads(ctx, before, func(u minio.ObjectMultipartInfo) error {
		return fn(strings.TrimPrefix(u.Key, d.prefix), u.Size)
	})
}

// RemoveStaleTemp implements TempCleaner: it aborts every multipart upload
// under the drive's prefix started before the given time.
func (d *S3Drive) RemoveStaleTemp(ctx context.Context, before time.Time) error {
	return d.uploads(ctx, before, func(u minio.ObjectMultipartInfo) error {
		err := d.do(ctx, "abort upload of "+u.Key, d.o.Timeout, func(ctx context.Context) error {
			err := d.core.AbortMultipartUpload(ctx, d.bucket, u.Key, u.UploadID)
			if err != nil && (s3Code(err) == "NoSuchUpload" || s3Status(err) == http.StatusNotFound) {
				return nil
			}
			return err
		})
		if err != nil {
			return permanentError{err}
		}
		return nil
	})
}

// uploads streams the multipart uploads under the prefix started before the
// given time to fn, from the caller's goroutine.
func (d *S3Drive) uploads(ctx context.Context, before time.Time, fn func(minio.ObjectMultipartInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := d.do(ctx, "list multipart uploads", 0, func(ctx context.Context) error {
		lctx, cancel := context.WithCancel(ctx)
		ch := d.client.ListIncompleteUploads(lctx, d.bucket, d.prefix, true)
		defer func() {
			cancel()
			for range ch {
			}
		}()
		for u := range ch {
			if u.Err != nil {
				if notImplemented(u.Err) {
					return nil // a server without multipart listing has no stale uploads to show
				}
				return u.Err
			}
			if !u.Initiated.Before(before) {
				continue
			}
			if err := fn(u); err != nil {
				return permanentError{fnError{err}}
			}
		}
		return nil
	})
	var fe fnError
	if errors.As(err, &fe) {
		var pe permanentError
		if errors.As(fe.err, &pe) {
			return pe.err
		}
		return fe.err
	}
	return err
}
