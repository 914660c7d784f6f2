package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
