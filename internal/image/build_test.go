package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/mountinfo"

	"golang.org/x/sys/unix"
)

// fakeDebootstrap writes a script that behaves like debootstrap: it
// records its arguments, replays the recorded log and makes a tree with
// usr/bin/python3 and a downloaded .deb. mode "fail" exits 1 after
// printing an error; "hang" never finishes.
func fakeDebootstrap(t *testing.T, mode string) (bin, argsFile string) {
	t.Helper()
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	log, err := filepath.Abs("testdata/debootstrap.log")
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
set -e
echo "$@" >> %[1]q
for a; do :; done
mirror=$a
eval "target=\${$(($#-1))}"
mkdir -p "$target/debootstrap" "$target/usr/bin" "$target/var/cache/apt/archives" "$target/etc"
echo "debootstrap log line" > "$target/debootstrap/debootstrap.log"
case %[3]q in
fail)
	echo "I: Retrieving InRelease"
	echo "E: Couldn't download packages: python3-numpy" >&2
	exit 1 ;;
hang)
	echo "I: Retrieving InRelease"
	exec sleep 60 ;;
esac
cat %[2]q
printf '#!/bin/sh\n' > "$target/usr/bin/python3.11"
chmod 755 "$target/usr/bin/python3.11"
ln -s python3.11 "$target/usr/bin/python3"
touch "$target/var/cache/apt/archives/libc6_2.36_amd64.deb"
rm -rf "$target/debootstrap"
`, argsFile, log, mode)
	bin = filepath.Join(dir, "debootstrap")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argsFile
}

func calls(t *testing.T, argsFile string) []string {
	b, err := os.ReadFile(argsFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// leftovers lists build directories left in dataDir.
func leftovers(t *testing.T, dataDir string) []string {
	m, err := filepath.Glob(filepath.Join(dataDir, ".base-build-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBuildWithFakeDebootstrap(t *testing.T) {
	bin, argsFile := fakeDebootstrap(t, "ok")
	data := filepath.Join(t.TempDir(), "data")
	// A crashed build's directory is cleaned up by the next build.
	if err := os.MkdirAll(filepath.Join(data, ".base-build-123", "usr"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	opts := BuildOptions{DataDir: data, Mirror: "http://mirror.invalid/debian", Debootstrap: bin, Progress: &out}
	dir, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, out.String())
	}
	if dir != filepath.Join(data, "base") {
		t.Errorf("Build returned %s", dir)
	}
	if err := Validate(dir); err != nil {
		t.Fatalf("built tree: %v", err)
	}
	for _, mp := range []string{"code", "hearth", "tmp", "proc", "dev"} {
		if st, err := os.Stat(filepath.Join(dir, mp)); err != nil || !st.IsDir() {
			t.Errorf("mount point %s missing: %v", mp, err)
		}
	}
	if debs, _ := filepath.Glob(filepath.Join(dir, "var/cache/apt/archives/*.deb")); len(debs) > 0 {
		t.Errorf("downloaded packages left in the image: %v", debs)
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o755 {
		t.Errorf("image root mode %v, want 0755", st.Mode().Perm())
	}
	m, err := ReadMarker(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Suite != DefaultSuite || m.Mirror != opts.Mirror || !slices.Equal(m.Packages, DefaultPackages()) {
		t.Errorf("marker %+v", m)
	}
	if _, err := time.Parse(time.RFC3339Nano, m.Built); err != nil {
		t.Errorf("marker build time: %v", err)
	}
	c := calls(t, argsFile)
	if len(c) != 1 {
		t.Fatalf("debootstrap ran %d times", len(c))
	}
	args := strings.Fields(c[0])
	wantArgs := []string{"--variant=minbase", "--include=" + strings.Join(DefaultPackages(), ","), DefaultSuite}
	if len(args) != 5 || !slices.Equal(args[:3], wantArgs) || args[4] != opts.Mirror || !strings.HasPrefix(args[3], filepath.Join(data, ".base-build-")) {
		t.Errorf("debootstrap args %q", args)
	}
	if l := leftovers(t, data); len(l) > 0 {
		t.Errorf("build dirs left: %v", l)
	}
	for _, w := range []string{"image: retrieving 162 packages", "image: done", "image: built " + dir} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("progress lacks %q:\n%s", w, out.String())
		}
	}

	// A rebuild swaps in a new tree with a new id.
	id := ID(dir)
	stale := filepath.Join(dir, "stale")
	os.WriteFile(stale, nil, 0o644)
	if _, err := Build(context.Background(), opts); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Error("rebuild kept the old tree")
	}
	if ID(dir) == id {
		t.Error("rebuild kept the image id")
	}
	if l := leftovers(t, data); len(l) > 0 {
		t.Errorf("build dirs left after rebuild: %v", l)
	}
}

func TestBuildFailureKeepsOldImage(t *testing.T) {
	good, _ := fakeDebootstrap(t, "ok")
	bad, _ := fakeDebootstrap(t, "fail")
	data := t.TempDir()
	opts := BuildOptions{DataDir: data, Mirror: "http://mirror.invalid/debian", Debootstrap: good}
	dir, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	id := ID(dir)
	opts.Debootstrap = bad
	_, err = Build(context.Background(), opts)
	if !errors.Is(err, ErrDebootstrap) || !strings.Contains(err.Error(), "Couldn't download packages: python3-numpy") {
		t.Fatalf("Build = %v, want ErrDebootstrap quoting the error", err)
	}
	if !strings.Contains(err.Error(), "base-build.log") {
		t.Errorf("error does not point at the saved log: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "base-build.log")); err != nil {
		t.Errorf("debootstrap.log not saved: %v", err)
	}
	if ID(dir) != id || Validate(dir) != nil {
		t.Error("failed rebuild damaged the previous image")
	}
	if l := leftovers(t, data); len(l) > 0 {
		t.Errorf("build dirs left: %v", l)
	}
}

func TestBuildCancel(t *testing.T) {
	bin, _ := fakeDebootstrap(t, "hang")
	data := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Build(ctx, BuildOptions{DataDir: data, Mirror: "http://mirror.invalid/debian", Debootstrap: bin})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Build = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	if _, err := os.Stat(Dir(data)); !errors.Is(err, os.ErrNotExist) {
		t.Error("cancelled build left an image")
	}
	if l := leftovers(t, data); len(l) > 0 {
		t.Errorf("build dirs left: %v", l)
	}
}

func TestEnsure(t *testing.T) {
	bin, argsFile := fakeDebootstrap(t, "ok")
	data := t.TempDir()
	opts := BuildOptions{DataDir: data, Mirror: "http://mirror.invalid/debian", Debootstrap: bin}
	// Concurrent callers build once.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { _, errs[i] = Ensure(context.Background(), opts) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("Ensure: %v", err)
		}
	}
	if n := len(calls(t, argsFile)); n != 1 {
		t.Fatalf("debootstrap ran %d times, want 1", n)
	}
	dir, err := Ensure(context.Background(), opts)
	if err != nil || dir != Dir(data) {
		t.Fatalf("Ensure = %s, %v", dir, err)
	}
	if n := len(calls(t, argsFile)); n != 1 {
		t.Fatalf("Ensure rebuilt an existing image")
	}
	// An image Build made from another suite (an older Hearth's) is
	// rebuilt; a tree without a marker is a user's and kept.
	older := opts
	older.Suite = "bookworm"
	if _, err := Build(context.Background(), older); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if m, _ := ReadMarker(dir); m.Suite != DefaultSuite || len(calls(t, argsFile)) != 3 {
		t.Fatalf("Ensure kept an image built from %s (debootstrap ran %d times)", m.Suite, len(calls(t, argsFile)))
	}
	os.Remove(filepath.Join(dir, MarkerFile))
	if _, err := Ensure(context.Background(), opts); err != nil || len(calls(t, argsFile)) != 3 {
		t.Fatalf("Ensure on a tree without a marker: %v, debootstrap ran %d times", err, len(calls(t, argsFile)))
	}
	// An existing but broken tree is reported, not replaced.
	os.Remove(filepath.Join(dir, "usr/bin/python3"))
	if _, err := Ensure(context.Background(), opts); !errors.Is(err, ErrInvalid) {
		t.Errorf("Ensure on a broken tree = %v, want ErrInvalid", err)
	}
}

func TestBuildBadOptions(t *testing.T) {
	bin, argsFile := fakeDebootstrap(t, "ok")
	emptyApt := t.TempDir()
	tests := []struct {
		name string
		opts BuildOptions
		want error
	}{
		{"no-data-dir", BuildOptions{Mirror: "http://m.invalid/debian", Debootstrap: bin}, ErrBadOptions},
		{"mirror-without-scheme", BuildOptions{Mirror: "deb.mirror.example.net/debian", Debootstrap: bin}, ErrBadOptions},
		{"mirror-bad-scheme", BuildOptions{Mirror: "cdrom:/x", Debootstrap: bin}, ErrBadOptions},
		{"no-host-mirror", BuildOptions{AptDir: emptyApt, Debootstrap: bin}, ErrNoMirror},
		{"bad-package", BuildOptions{Mirror: "http://m.invalid/debian", Packages: []string{"a,b"}, Debootstrap: bin}, ErrBadOptions},
		{"no-debootstrap", BuildOptions{Mirror: "http://m.invalid/debian", Debootstrap: filepath.Join(emptyApt, "nope")}, ErrDebootstrap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name != "no-data-dir" {
				tt.opts.DataDir = t.TempDir()
			}
			_, err := Build(context.Background(), tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Build = %v, want %v", err, tt.want)
			}
			if tt.opts.DataDir != "" {
				if l := leftovers(t, tt.opts.DataDir); len(l) > 0 {
					t.Errorf("build dirs left: %v", l)
				}
			}
		})
	}
	if n := len(calls(t, argsFile)); n != 0 {
		t.Errorf("debootstrap ran %d times on bad options", n)
	}
}

func TestRemoveTreeUnmounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	dir := filepath.Join(t.TempDir(), ".base-build-x")
	proc := filepath.Join(dir, "proc")
	if err := os.MkdirAll(proc, 0o755); err != nil {
		t.Fatal(err)
	}
	// What a killed debootstrap leaves: a file system mounted in the target.
	if err := unix.Mount("tmpfs", proc, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(proc, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(proc, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if mps, _ := mountinfo.Under(dir); !slices.Equal(mps, []string{proc}) {
		t.Fatalf("mountsUnder = %v, want [%s]", mps, proc)
	}
	if err := removeTree(dir); err != nil {
		t.Fatalf("removeTree: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Error("tree not removed")
	}
	if mps, _ := mountinfo.Under(dir); len(mps) != 0 {
		t.Errorf("still mounted: %v", mps)
	}
}
