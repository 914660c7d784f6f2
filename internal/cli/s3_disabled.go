//go:build no_s3

package cli

import (
	"context"
	"errors"
	"log/slog"

	"github.com/hearth-run/hearth/internal/snapshot"
)

// openRemote fails: this binary was built without the S3 client.
func openRemote(context.Context, S3Config, *slog.Logger) (snapshot.Remote, error) {
	return nil, errors.New("this hearth was built with the no_s3 tag: no S3 store")
}
