//go:build !no_s3

package s3

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/hearth-run/hearth/internal/snapshot"
)

// Config locates a bucket. Zero values of optional fields are usable.
type Config struct {
	// Endpoint is host[:port] of the S3 service; required.
	Endpoint string
	// Bucket holds the snapshots; required.
	Bucket string
	// Prefix is prepended to every object name (default "snapshots").
	Prefix string
	// AccessKey and SecretKey are the credentials (both empty: anonymous).
	AccessKey, SecretKey string
	// Region is the bucket's region (default us-east-1).
	Region string
	// TLS uses https. CAFile adds a PEM CA bundle to the system roots;
	// InsecureSkipVerify disables certificate checks (tests only).
	TLS                bool
	CAFile             string
	InsecureSkipVerify bool
	// Timeout bounds each upload or download of a whole snapshot
	// (default 2 minutes).
	Timeout time.Duration
	// Parallel is how many files move at once (default 4).
	Parallel int
	// Retries is how many times the client retries a failed request
	// (default 1: a store that is down should fail fast, and the caller
	// falls back to a fork or a cold start).
	Retries int
}

// Store is an S3 bucket holding snapshots.
type Store struct {
	c        *minio.Client
	bucket   string
	prefix   string
	timeout  time.Duration
	parallel int
}

var _ snapshot.Remote = (*Store)(nil)

// New returns a store for cfg. It does not contact the service.
func New(cfg Config) (*Store, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, fmt.Errorf("s3: endpoint and bucket are required: %w", snapshot.ErrInvalid)
	}
	if strings.Contains(cfg.Endpoint, "/") {
		return nil, fmt.Errorf("s3: endpoint %q must be host[:port], without a scheme or path: %w", cfg.Endpoint, snapshot.ErrInvalid)
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, fmt.Errorf("s3: access key and secret key go together: %w", snapshot.ErrInvalid)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "snapshots"
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 1
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	tr.ResponseHeaderTimeout = 30 * time.Second
	if cfg.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("s3: CA file: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("s3: CA file %s: no certificates: %w", cfg.CAFile, snapshot.ErrInvalid)
			}
			tc.RootCAs = pool
		}
		tr.TLSClientConfig = tc
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.New(&credentials.Static{})
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds: creds, Secure: cfg.TLS, Region: cfg.Region, Transport: tr,
		BucketLookup: minio.BucketLookupPath, MaxRetries: cfg.Retries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	return &Store{c: c, bucket: cfg.Bucket, prefix: strings.Trim(cfg.Prefix, "/"), timeout: cfg.Timeout, parallel: cfg.Parallel}, nil
}

// EnsureBucket creates the bucket if it does not exist.
func (s *Store) EnsureBucket(ctx context.Context) error {
	ok, err := s.c.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("s3: bucket %s: %w", s.bucket, err)
	}
	if ok {
		return nil
	}
	if err := s.c.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{}); err != nil {
		return fmt.Errorf("s3: creating bucket %s: %w", s.bucket, err)
	}
	return nil
}

func (s *Store) object(key, file string) string { return path.Join(s.prefix, key, file) }

// Put uploads the sealed snapshot in dir: every file first, the
// descriptor last.
func (s *Store) Put(ctx context.Context, key, dir string, d *snapshot.Descriptor) error {
	if err := snapshot.ValidKey(key); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.each(ctx, d.Files, func(ctx context.Context, f snapshot.File) error {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		_, err := s.c.FPutObject(ctx, s.bucket, s.object(key, f.Path), p, minio.PutObjectOptions{
			ContentType:      "application/octet-stream",
			DisableMultipart: f.Size < 64<<20,
			UserMetadata:     map[string]string{"sha256": f.SHA256},
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("s3: uploading %s: %w", key, err)
	}
	p := filepath.Join(dir, snapshot.DescriptorName)
	if _, err := s.c.FPutObject(ctx, s.bucket, s.object(key, snapshot.DescriptorName), p,
		minio.PutObjectOptions{ContentType: "application/json", DisableMultipart: true}); err != nil {
		return fmt.Errorf("s3: uploading %s descriptor: %w", key, err)
	}
	return nil
}

// Get downloads snapshot key into the empty directory dir: the
// descriptor, then every file, each checked against its size and SHA-256.
// It does not write the descriptor into dir (the cache does, last). A
// missing descriptor returns an error wrapping snapshot.ErrNotFound; a
// mismatch one wrapping snapshot.ErrCorrupt.
func (s *Store) Get(ctx context.Context, key, dir string) (*snapshot.Descriptor, error) {
	if err := snapshot.ValidKey(key); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	b, err := s.read(ctx, s.object(key, snapshot.DescriptorName), 1<<20)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("s3: %s: %w", key, snapshot.ErrNotFound)
		}
		return nil, fmt.Errorf("s3: %s descriptor: %w", key, err)
	}
	d, err := snapshot.ParseDescriptor(b)
	if err != nil {
		return nil, fmt.Errorf("s3: %s: %w", key, err)
	}
	if d.Key != key {
		return nil, fmt.Errorf("s3: %s: descriptor names %q: %w", key, d.Key, snapshot.ErrCorrupt)
	}
	err = s.each(ctx, d.Files, func(ctx context.Context, f snapshot.File) error {
		return s.fetch(ctx, s.object(key, f.Path), filepath.Join(dir, filepath.FromSlash(f.Path)), f)
	})
	if err != nil {
		return nil, fmt.Errorf("s3: downloading %s: %w", key, err)
	}
	return d, nil
}

func (s *Store) read(ctx context.Context, name string, max int64) ([]byte, error) {
	o, err := s.c.GetObject(ctx, s.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer o.Close()
	b, err := io.ReadAll(io.LimitReader(o, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes: %w", name, max, snapshot.ErrInvalid)
	}
	return b, nil
}

// fetch streams one object into p, hashing as it goes.
func (s *Store) fetch(ctx context.Context, name, p string, f snapshot.File) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	o, err := s.c.GetObject(ctx, s.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return err
	}
	defer o.Close()
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	// One byte more than expected, to notice a longer object.
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(o, f.Size+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%s: missing: %w", f.Path, snapshot.ErrCorrupt)
		}
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	if n != f.Size {
		return fmt.Errorf("%s: %d bytes, want %d: %w", f.Path, n, f.Size, snapshot.ErrCorrupt)
	}
	if hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("%s: checksum mismatch: %w", f.Path, snapshot.ErrCorrupt)
	}
	return nil
}

// each runs fn for every file, s.parallel at a time, and returns the
// first error (cancelling the rest).
func (s *Store) each(ctx context.Context, files []snapshot.File, fn func(context.Context, snapshot.File) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, s.parallel)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, f := range files {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, f); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// Delete removes snapshot key: the descriptor first, so a half-deleted
// snapshot never looks complete.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := snapshot.ValidKey(key); err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.bucket, s.object(key, snapshot.DescriptorName), minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return fmt.Errorf("s3: deleting %s: %w", key, err)
	}
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.object(key, "") + "/", Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("s3: listing %s: %w", key, o.Err)
		}
		if err := s.c.RemoveObject(ctx, s.bucket, o.Key, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
			return fmt.Errorf("s3: deleting %s: %w", o.Key, err)
		}
	}
	return nil
}

// List returns the keys of the complete snapshots in the store.
func (s *Store) List(ctx context.Context) ([]string, error) {
	var out []string
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + "/", Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("s3: listing: %w", o.Err)
		}
		rest := strings.TrimPrefix(o.Key, s.prefix+"/")
		if k, f, ok := strings.Cut(rest, "/"); ok && f == snapshot.DescriptorName {
			out = append(out, k)
		}
	}
	return out, nil
}

func isNotFound(err error) bool {
	var r minio.ErrorResponse
	if errors.As(err, &r) {
		return r.Code == "NoSuchKey" || r.Code == "NoSuchBucket" || r.StatusCode == http.StatusNotFound
	}
	return false
}
