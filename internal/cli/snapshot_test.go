package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/snapshot"
)

func TestSnapshotLsRm(t *testing.T) {
	data := t.TempDir()
	c, err := snapshot.OpenCache(snapshot.CacheConfig{Dir: snapshotDir(data)})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"fn-one", "fn-two"} {
		_, err := c.Create(context.Background(), k, func(dir string) (*snapshot.Descriptor, error) {
			return &snapshot.Descriptor{Function: k, Revision: "r1", Socket: "rt.sock"},
				os.WriteFile(filepath.Join(dir, "pages.img"), make([]byte, 3<<20), 0o600)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := snapshotLs(&out, snapshotDir(data)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"KEY", "fn-one", "fn-two", "3.0 MiB"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("ls output lacks %q:\n%s", want, &out)
		}
	}
	if err := snapshotRm(snapshotDir(data), []string{"fn-one"}); err != nil {
		t.Fatal(err)
	}
	if err := snapshotRm(snapshotDir(data), []string{"fn-one"}); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("rm twice: %v, want ErrNotFound", err)
	}
	if err := snapshotRm(snapshotDir(data), []string{"../etc"}); !errors.Is(err, snapshot.ErrInvalid) {
		t.Errorf("rm bad key: %v, want ErrInvalid", err)
	}
	out.Reset()
	snapshotLs(&out, snapshotDir(data))
	if strings.Contains(out.String(), "fn-one") || !strings.Contains(out.String(), "fn-two") {
		t.Errorf("after rm:\n%s", &out)
	}
	// No cache yet: an empty list, not an error.
	out.Reset()
	if err := snapshotLs(&out, filepath.Join(data, "none")); err != nil || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("empty ls: %v\n%s", err, &out)
	}
}

func TestSnapshotConfig(t *testing.T) {
	cases := []struct {
		name string
		in   SnapshotConfig
		bad  bool
	}{
		{"defaults", SnapshotConfig{}, false},
		{"threshold", SnapshotConfig{Threshold: 250 * time.Millisecond, MaxMB: 100}, false},
		{"negative threshold", SnapshotConfig{Threshold: -time.Second}, true},
		{"negative max", SnapshotConfig{MaxMB: -1}, true},
		{"s3 without endpoint", SnapshotConfig{S3: S3Config{Bucket: "b"}}, true},
		{"s3 without bucket", SnapshotConfig{S3: S3Config{Endpoint: "127.0.0.1:1"}}, true},
		// A store that is down at start is logged, not fatal.
		{"s3 unreachable", SnapshotConfig{S3: S3Config{Endpoint: "127.0.0.1:1", Bucket: "b"}}, false},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := snapshotConfig(context.Background(), c.in, log)
			if (err != nil) != c.bad {
				t.Fatalf("err %v, want error %v", err, c.bad)
			}
			if err == nil && (c.in.S3.Endpoint != "") != (got.Remote != nil) {
				t.Errorf("remote %v for endpoint %q", got.Remote, c.in.S3.Endpoint)
			}
			if err == nil && c.in.Threshold == 250*time.Millisecond && (got.Threshold != 250*time.Millisecond || got.MaxBytes != 100<<20) {
				t.Errorf("got %+v", got)
			}
		})
	}
}
