package repo_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"coffer/repo"
	"coffer/repo/drivetest"
)

// newBucket creates a fresh bucket folder on s and returns its name.
func newBucket(t *testing.T, s *drivetest.S3Server) string {
	t.Helper()
	name := fmt.Sprintf("bucket-%03d", bucketSeq.Add(1))
	if err := os.Mkdir(filepath.Join(s.Dir, name), 0o700); err != nil {
		t.Fatal(err)
	}
	return name
}

var bucketSeq atomic.Int64

func openS3(t *testing.T, url string, o repo.S3Options) *repo.S3Drive {
	t.Helper()
	d, err := repo.OpenS3Drive(context.Background(), url, o)
	if err != nil {
		t.Fatalf("OpenS3Drive(%s): %v", url, err)
	}
	return d
}

func TestS3DriveConformance(t *testing.T) {
	s := drivetest.StartS3Server(t, false)
	drivetest.SetS3Credentials(t)
	t.Run("Bucket", func(t *testing.T) {
		drivetest.Run(t, func(t *testing.T) repo.Drive {
			return openS3(t, s.URL(newBucket(t, s)), repo.S3Options{})
		})
	})
	t.Run("Prefix", func(t *testing.T) {
		b := newBucket(t, s)
		n := 0
		drivetest.Run(t, func(t *testing.T) repo.Drive {
			n++
			return openS3(t, fmt.Sprintf("%s/drives/d%d", s.URL(b), n), repo.S3Options{})
		})
	})
	t.Run("Faulty", func(t *testing.T) {
		drivetest.Run(t, func(t *testing.T) repo.Drive {
			return drivetest.NewFaulty(openS3(t, s.URL(newBucket(t, s)), repo.S3Options{}))
		})
	})
}

// TestS3DriveLayout checks object names on the server and that a drive
// identity written in a bucket is found through another spelling of its URL.
func TestS3DriveLayout(t *testing.T) {
	ctx := context.Background()
	s := drivetest.StartS3Server(t, false)
	drivetest.SetS3Credentials(t)
	b := newBucket(t, s)
	d := openS3(t, s.URL(b)+"/pre/fix", repo.S3Options{})
	if want := s.URL(b) + "/pre/fix"; d.URL() != want {
		t.Errorf("URL() = %s, want %s", d.URL(), want)
	}
	if err := d.Put(ctx, "t/abc/p/12/x.0", []byte("data")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(s.Dir, b, "pre", "fix", "t", "abc", "p", "12", "x.0")); err != nil || string(got) != "data" {
		t.Fatalf("object on the server's disk: %q, %v", got, err)
	}
	id := repo.Identity{Rack: "r1"}
	id.Repository[0], id.Drive[0] = 1, 2
	if err := repo.WriteIdentity(ctx, d, id); err != nil {
		t.Fatal(err)
	}
	other := openS3(t, strings.Replace(s.URL(b), "s3+http", "S3+HTTP", 1)+"/pre/fix/", repo.S3Options{})
	if other.URL() != d.URL() {
		t.Errorf("URL spellings give %s and %s", other.URL(), d.URL())
	}
	if got, err := repo.ReadIdentity(ctx, other); err != nil || got != id {
		t.Errorf("identity through another spelling: %+v, %v", got, err)
	}
	// Another prefix of the same bucket is another (empty) drive.
	if _, err := repo.ReadIdentity(ctx, openS3(t, s.URL(b)+"/pre", repo.S3Options{})); !errors.Is(err, repo.ErrNoIdentity) {
		t.Errorf("identity one level up: %v, want ErrNoIdentity", err)
	}
}

func TestS3DriveOpenErrors(t *testing.T) {
	ctx := context.Background()
	s := drivetest.StartS3Server(t, false, "present")
	drivetest.SetS3Credentials(t)

	missing := s.URL("absent")
	_, err := repo.OpenS3Drive(ctx, missing, repo.S3Options{})
	if !errors.Is(err, repo.ErrS3NoBucket) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing bucket: %v, want ErrS3NoBucket naming %s", err, missing)
	}

	t.Run("WrongSecret", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
		_, err := repo.OpenS3Drive(ctx, s.URL("present"), repo.S3Options{})
		if !errors.Is(err, repo.ErrS3Denied) || !strings.Contains(err.Error(), s.URL("present")) {
			t.Errorf("wrong secret: %v, want ErrS3Denied naming the drive", err)
		}
		if err != nil && strings.Contains(err.Error(), "wrong-secret") {
			t.Errorf("the error shows the secret: %v", err)
		}
	})

	t.Run("NoCredentials", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		_, err := repo.OpenS3Drive(ctx, s.URL("present"), repo.S3Options{})
		if err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
			t.Errorf("no credentials: %v", err)
		}
	})

	t.Run("Profile", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "credentials")
		body := "[store1]\naws_access_key_id = " + drivetest.S3AccessKey + "\naws_secret_access_key = " + drivetest.S3SecretKey +
			"\n[bad]\naws_access_key_id = " + drivetest.S3AccessKey + "\naws_secret_access_key = nope\n"
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		if _, err := repo.OpenS3Drive(ctx, s.URL("present")+"?profile=store1", repo.S3Options{}); err != nil {
			t.Errorf("profile store1: %v", err)
		}
		if _, err := repo.OpenS3Drive(ctx, s.URL("present")+"?profile=bad", repo.S3Options{}); !errors.Is(err, repo.ErrS3Denied) {
			t.Errorf("profile with a wrong secret: %v, want ErrS3Denied", err)
		}
		if _, err := repo.OpenS3Drive(ctx, s.URL("present")+"?profile=none", repo.S3Options{}); err == nil || !strings.Contains(err.Error(), `"none"`) {
			t.Errorf("unknown profile: %v", err)
		}
	})

	t.Run("Unreachable", func(t *testing.T) {
		down := drivetest.StartS3Server(t, false, "bk1")
		down.Stop()
		start := time.Now()
		_, err := repo.OpenS3Drive(ctx, down.URL("bk1"), repo.S3Options{})
		if !errors.Is(err, repo.ErrS3Unreachable) || !strings.Contains(err.Error(), down.URL("bk1")) {
			t.Errorf("unreachable server: %v, want ErrS3Unreachable naming the drive", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("failing on an unreachable server took %s", d)
		}
	})
}

func TestS3URL(t *testing.T) {
	tests := []struct {
		in, want string // want "" means refused
		why      string
	}{
		{"s3://store.example:9000/bucket/a/b", "s3://store.example:9000/bucket/a/b", ""},
		{"S3://Store.Example/bucket/", "s3://store.example/bucket", ""},
		{"s3+http://127.0.0.1:9000/bkt", "s3+http://127.0.0.1:9000/bkt", ""},
		{"s3+http://[::1]:9000/bkt?profile=p1", "s3+http://[::1]:9000/bkt?profile=p1", ""},
		{"s3+http://localhost/bkt?region=eu-1&profile=x", "s3+http://localhost/bkt?profile=x&region=eu-1", ""},
		{"s3+http://10.0.0.5:9000/bkt", "", "loopback"},
		{"s3+http://store.example/bkt", "", "loopback"},
		{"s3://key:secret@store.example/bkt", "", "credentials"},
		{"s3://store.example/", "", "no bucket"},
		{"s3://store.example/Bad_Bucket", "", "not allowed"},
		{"s3://store.example/bkt/../x", "", "prefix"},
		{"s3://store.example/bkt/tmp", "", "prefix"},
		{"s3://store.example/bkt?foo=1", "", "unknown query"},
		{"http://store.example/bkt", "", "scheme"},
		{"s3:///bkt", "", "no host"},
	}
	for _, tc := range tests {
		got, err := repo.CanonicalS3URL(tc.in)
		if tc.want != "" {
			if err != nil || got != tc.want {
				t.Errorf("CanonicalS3URL(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
			}
			continue
		}
		if !errors.Is(err, repo.ErrBadS3URL) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("CanonicalS3URL(%s) = %s, %v; want an ErrBadS3URL saying %q", tc.in, got, err, tc.why)
		}
		if err != nil && strings.Contains(err.Error(), "secret") && strings.Contains(err.Error(), "key:secret") {
			t.Errorf("error shows the credentials: %v", err)
		}
	}
	for _, p := range []string{"s3://x/y", "S3+HTTP://x/y"} {
		if !repo.IsS3URL(p) {
			t.Errorf("IsS3URL(%s) = false", p)
		}
	}
	for _, p := range []string{"/srv/d1", "s3", "rack:/x", "./s3://x"} {
		if repo.IsS3URL(p) {
			t.Errorf("IsS3URL(%s) = true", p)
		}
	}
	// Plain HTTP to another machine is refused before any connection.
	_, err := repo.OpenS3Drive(context.Background(), "s3+http://192.0.2.1:9000/bkt", repo.S3Options{})
	if !errors.Is(err, repo.ErrBadS3URL) {
		t.Errorf("OpenS3Drive over plain HTTP to 192.0.2.1: %v, want ErrBadS3URL", err)
	}
}

func TestS3DriveVersionedBucket(t *testing.T) {
	ctx := context.Background()
	s := drivetest.StartS3Server(t, true, "plain", "versioned")
	drivetest.SetS3Credentials(t)
	mc, err := minio.New(s.Addr, &minio.Options{Creds: credentials.NewStaticV4(drivetest.S3AccessKey, drivetest.S3SecretKey, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.EnableVersioning(ctx, "versioned"); err != nil {
		t.Skipf("versitygw does not enable versioning here: %v", err)
	}
	if _, err := repo.OpenS3Drive(ctx, s.URL("plain"), repo.S3Options{}); err != nil {
		t.Errorf("unversioned bucket on a server with versioning support: %v", err)
	}
	_, err = repo.OpenS3Drive(ctx, s.URL("versioned"), repo.S3Options{})
	if !errors.Is(err, repo.ErrS3Versioned) || !strings.Contains(err.Error(), s.URL("versioned")) {
		t.Errorf("versioned bucket: %v, want ErrS3Versioned naming the drive", err)
	}
	if _, err := repo.OpenS3Drive(ctx, s.URL("versioned"), repo.S3Options{AllowVersioning: true}); err != nil {
		t.Errorf("versioned bucket with AllowVersioning: %v", err)
	}
}

// TestS3DriveBreaker stops the server under an open drive: the first call
// fails as unreachable, later ones fail at once without dialling, and the
// drive works again once the server is back and the window has passed.
func TestS3DriveBreaker(t *testing.T) {
	ctx := context.Background()
	s := drivetest.StartS3Server(t, false, "bk1")
	drivetest.SetS3Credentials(t)
	d := openS3(t, s.URL("bk1"), repo.S3Options{BreakerWindow: 500 * time.Millisecond})
	if err := d.Put(ctx, "x", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := d.ReadAt(ctx, "x", make([]byte, 5), 0); !errors.Is(err, repo.ErrS3Unreachable) {
		t.Fatalf("read from a stopped server: %v, want ErrS3Unreachable", err)
	}
	err := d.Put(ctx, "y", []byte("y"))
	if !errors.Is(err, repo.ErrS3Unreachable) || !strings.Contains(err.Error(), "within the last") {
		t.Errorf("second call: %v, want the breaker's error", err)
	}
	s.Start()
	time.Sleep(600 * time.Millisecond)
	p := make([]byte, 5)
	if err := d.ReadAt(ctx, "x", p, 0); err != nil || string(p) != "hello" {
		t.Errorf("after the server came back: %q, %v", p, err)
	}
}

// TestS3DriveStaleUploads leaves a multipart upload unfinished; the drive
// lists it as a stale temporary and aborts it.
func TestS3DriveStaleUploads(t *testing.T) {
	ctx := context.Background()
	s := drivetest.StartS3Server(t, false, "bk1")
	drivetest.SetS3Credentials(t)
	d := openS3(t, s.URL("bk1")+"/drv", repo.S3Options{})
	mc, err := minio.NewCore(s.Addr, &minio.Options{Creds: credentials.NewStaticV4(drivetest.S3AccessKey, drivetest.S3SecretKey, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mc.NewMultipartUpload(ctx, "bk1", "drv/t/abc/p/00/half.1", minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	count := func(before time.Time) (names []string) {
		t.Helper()
		err := d.ListStaleTemp(ctx, before, func(name string, _ int64) error {
			names = append(names, name)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	if n := count(time.Now().Add(-time.Hour)); len(n) != 0 {
		t.Errorf("a fresh upload is listed as stale: %v", n)
	}
	if n := count(time.Now().Add(time.Minute)); len(n) != 1 || n[0] != "t/abc/p/00/half.1" {
		t.Errorf("stale uploads = %v, want t/abc/p/00/half.1", n)
	}
	if err := d.CleanStale(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(time.Now().Add(time.Minute)); len(n) != 1 {
		t.Errorf("CleanStale aborted a fresh upload: %v", n)
	}
	if err := d.RemoveStaleTemp(ctx, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := count(time.Now().Add(time.Minute)); len(n) != 0 {
		t.Errorf("after RemoveStaleTemp: %v", n)
	}
}

// TestS3DriveListLarge lists more objects than one page holds.
func TestS3DriveListLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	ctx := context.Background()
	s := drivetest.StartS3Server(t, false, "bk1")
	drivetest.SetS3Credentials(t)
	d := openS3(t, s.URL("bk1"), repo.S3Options{})
	const n = 2100
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errs <- d.Put(ctx, fmt.Sprintf("t/c/p/%02x/%04d.0", i%256, i), []byte{byte(i)})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	err := d.List(ctx, "t/", func(name string, size int64) error {
		if seen[name] || size != 1 {
			return fmt.Errorf("%s listed twice or with size %d", name, size)
		}
		seen[name] = true
		return nil
	})
	if err != nil || len(seen) != n {
		t.Fatalf("List: %d objects, %v; want %d", len(seen), err, n)
	}
	if err := d.DeletePrefix(ctx, "t/c/"); err != nil {
		t.Fatal(err)
	}
	left := 0
	if err := d.List(ctx, "", func(string, int64) error { left++; return nil }); err != nil || left != 0 {
		t.Errorf("after DeletePrefix: %d objects, %v", left, err)
	}
}
