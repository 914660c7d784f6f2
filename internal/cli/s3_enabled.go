//go:build !no_s3

package cli

import (
	"context"
	"log/slog"
	"time"

	"github.com/hearth-run/hearth/internal/snapshot"
	"github.com/hearth-run/hearth/internal/snapshot/s3"
)

// openRemote makes the S3 snapshot store c describes and creates its
// bucket if needed. A store that is down is not fatal: the worker falls
// back to forks and cold starts, and the bucket check is only logged.
func openRemote(ctx context.Context, c S3Config, log *slog.Logger) (snapshot.Remote, error) {
	st, err := s3.New(s3.Config{
		Endpoint:  c.Endpoint,
		Bucket:    c.Bucket,
		Prefix:    c.Prefix,
		AccessKey: c.AccessKey,
		SecretKey: c.SecretKey,
		Region:    c.Region,
		TLS:       c.TLS,
		CAFile:    c.CAFile,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := st.EnsureBucket(ctx); err != nil {
		log.Warn("snapshot store unreachable at start; snapshots stay local until it answers", "endpoint", c.Endpoint, "bucket", c.Bucket, "err", err)
	}
	return st, nil
}
