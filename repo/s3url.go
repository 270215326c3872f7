package repo

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// URL schemes of S3 drives. s3:// is HTTPS; s3+http:// is plain HTTP and is
// accepted only for a loopback address, because every byte that leaves the
// machine must travel encrypted.
const (
	s3Scheme     = "s3"
	s3HTTPScheme = "s3+http"
)

// ErrBadS3URL reports a drive URL that is not a usable S3 drive address.
var ErrBadS3URL = errors.New("repo: bad S3 drive URL")

// IsS3URL reports whether a drive path is an S3 drive URL (it starts with
// "s3://" or "s3+http://") rather than a folder. It does not check the rest of
// the URL; OpenS3Drive and CanonicalS3URL do.
func IsS3URL(path string) bool {
	l := strings.ToLower(path)
	return strings.HasPrefix(l, s3Scheme+"://") || strings.HasPrefix(l, s3HTTPScheme+"://")
}

// s3Location is a parsed S3 drive URL.
type s3Location struct {
	secure  bool   // https
	host    string // host[:port] as given (lowercased)
	bucket  string
	prefix  string // "" or "a/b/" (ends with "/"): prepended to every object name
	profile string // shared credentials file profile; "" = environment, then default profile
	region  string // "" = us-east-1
}

// canonical is the URL in the one form kept in the repository configuration:
// lowercase scheme and host, no trailing slash, query keys in a fixed order.
// It never carries credentials.
func (l s3Location) canonical() string {
	scheme := s3HTTPScheme
	if l.secure {
		scheme = s3Scheme
	}
	s := scheme + "://" + l.host + "/" + l.bucket
	if l.prefix != "" {
		s += "/" + strings.TrimSuffix(l.prefix, "/")
	}
	var q []string
	if l.profile != "" {
		q = append(q, "profile="+url.QueryEscape(l.profile))
	}
	if l.region != "" {
		q = append(q, "region="+url.QueryEscape(l.region))
	}
	if len(q) > 0 {
		s += "?" + strings.Join(q, "&")
	}
	return s
}

// CanonicalS3URL checks an S3 drive URL and returns it in canonical form
// (lowercase scheme and host, no trailing slash), so that the same drive
// given twice in different spellings is recognised. Errors wrap ErrBadS3URL.
func CanonicalS3URL(raw string) (string, error) {
	l, err := parseS3URL(raw)
	if err != nil {
		return "", err
	}
	return l.canonical(), nil
}

// parseS3URL parses s3://HOST[:PORT]/BUCKET[/PREFIX][?profile=NAME&region=R]
// and s3+http://... (loopback hosts only). Credentials in the URL are refused:
// the URL is stored in the repository configuration.
func parseS3URL(raw string) (s3Location, error) {
	bad := func(format string, args ...any) (s3Location, error) {
		return s3Location{}, fmt.Errorf("%w %q: %s", ErrBadS3URL, redactURL(raw), fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("%v", errors.Unwrap(err))
	}
	var l s3Location
	switch strings.ToLower(u.Scheme) {
	case s3Scheme:
		l.secure = true
	case s3HTTPScheme:
	default:
		return bad("the scheme must be s3:// (HTTPS) or s3+http:// (plain HTTP, loopback only)")
	}
	if u.User != nil {
		return bad("credentials do not belong in the URL (it is stored in the repository configuration); use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or ?profile=NAME")
	}
	if u.Fragment != "" || u.Opaque != "" {
		return bad("unexpected %q", "#"+u.Fragment+u.Opaque)
	}
	host := u.Hostname()
	if host == "" {
		return bad("no host")
	}
	l.host = strings.ToLower(u.Host)
	if !l.secure && !isLoopbackHost(host) {
		return bad("plain HTTP is allowed only to a loopback address (127.0.0.1, ::1, localhost), since all transfer must be encrypted; use s3:// (HTTPS) for %s", host)
	}
	path := strings.Trim(u.Path, "/")
	bucket, prefix, _ := strings.Cut(path, "/")
	if err := validBucket(bucket); err != nil {
		return bad("%v", err)
	}
	l.bucket = bucket
	if prefix != "" {
		if err := ValidateName(prefix); err != nil {
			return bad("prefix %q: %v", prefix, err)
		}
		l.prefix = prefix + "/"
	}
	for k, v := range u.Query() {
		if len(v) != 1 || v[0] == "" {
			return bad("query parameter %q needs exactly one value", k)
		}
		switch k {
		case "profile":
			l.profile = v[0]
		case "region":
			l.region = v[0]
		default:
			return bad("unknown query parameter %q (known: profile, region)", k)
		}
	}
	return l, nil
}

// validBucket checks the S3 bucket naming rule: 3 to 63 characters of
// [a-z0-9.-], starting and ending with a letter or digit.
func validBucket(b string) error {
	if b == "" {
		return errors.New("no bucket (want s3://HOST[:PORT]/BUCKET[/PREFIX])")
	}
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must have 3 to 63 characters", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return fmt.Errorf("bucket name %q: character %q is not allowed", b, c)
		}
	}
	if b[0] == '.' || b[0] == '-' || b[len(b)-1] == '.' || b[len(b)-1] == '-' {
		return fmt.Errorf("bucket name %q must start and end with a letter or digit", b)
	}
	return nil
}

// isLoopbackHost reports whether host (without port) is a loopback IP address
// or "localhost".
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redactURL drops any user information from a URL before it goes into an
// error message.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		u.User = nil
		return u.String()
	}
	if i := strings.Index(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			return raw[:j+3] + "REDACTED" + raw[i:]
		}
	}
	return raw
}
