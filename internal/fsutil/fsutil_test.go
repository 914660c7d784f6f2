package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDiskUsageCountsBlocksNotLength(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dense"), make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil { // 64 MiB long, nothing allocated
		t.Fatal(err)
	}
	f.Close()
	n, err := DiskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n < 64<<10 || n >= 1<<20 {
		t.Errorf("DiskUsage = %d, want the dense file's 64 KiB plus a little, not the sparse file's length", n)
	}
}
