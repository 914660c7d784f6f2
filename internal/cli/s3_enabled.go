//go:build !no_s3

package cli

import (
	"github.com/hearth-run/hearth/internal/snapshot"
	"github.com/hearth-run/hearth/internal/snapshot/s3"
)

// openRemote makes the S3 snapshot store c describes.
func openRemote(c S3Config) (snapshot.Remote, error) {
	return s3.New(s3.Config{
		Endpoint:  c.Endpoint,
		Bucket:    c.Bucket,
		Prefix:    c.Prefix,
		AccessKey: c.AccessKey,
		SecretKey: c.SecretKey,
		Region:    c.Region,
		TLS:       c.TLS,
		CAFile:    c.CAFile,
	})
}
