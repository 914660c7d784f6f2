package snapshot

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestScratchRoundTripKeepsLinksAsLinks packs a scratch tree holding
// symlinks to host files and unpacks it: the links come back as links,
// and no host file's content is ever read into the tar.
func TestScratchRoundTripKeepsLinksAsLinks(t *testing.T) {
	host := t.TempDir()
	secret := filepath.Join(host, "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "d/e"), 0o755)
	os.WriteFile(filepath.Join(src, "d/e/f.txt"), []byte("tenant data"), 0o640)
	os.Symlink(secret, filepath.Join(src, "link"))
	os.Symlink(host, filepath.Join(src, "d/dirlink"))
	os.Chown(filepath.Join(src, "d/e/f.txt"), 65534, 65534)
	tarPath := filepath.Join(t.TempDir(), "scratch.tar")
	if err := packScratch(src, tarPath); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(tarPath)
	if contains(b, "host secret") {
		t.Error("the tar holds a host file's content")
	}
	dst := t.TempDir()
	if err := unpackScratch(tarPath, dst); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "d/e/f.txt")); string(got) != "tenant data" {
		t.Errorf("f.txt: %q", got)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "d/e/f.txt"), &st); err != nil || st.Uid != 65534 || st.Mode&0o777 != 0o640 {
		t.Errorf("f.txt: uid %d mode %o %v", st.Uid, st.Mode&0o777, err)
	}
	for name, want := range map[string]string{"link": secret, "d/dirlink": host} {
		if got, err := os.Readlink(filepath.Join(dst, name)); err != nil || got != want {
			t.Errorf("%s: %q %v, want a link to %s", name, got, err, want)
		}
	}
}

// TestUnpackScratchRefusesPathsThroughSymlinks unpacks a crafted tar whose
// second entry reaches through the first, a symlink out of the scratch
// dir: it fails, and nothing is written outside.
func TestUnpackScratchRefusesPathsThroughSymlinks(t *testing.T) {
	outside := t.TempDir()
	tarPath := filepath.Join(t.TempDir(), "evil.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside})
	tw.WriteHeader(&tar.Header{Name: "out/planted", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4})
	tw.Write([]byte("evil"))
	tw.Close()
	f.Close()
	var before, after unix.Stat_t
	unix.Stat(outside, &before)
	err = unpackScratch(tarPath, t.TempDir())
	if err == nil || !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.EXDEV) {
		t.Errorf("unpack: %v, want ELOOP or EXDEV", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) > 0 {
		t.Errorf("unpack wrote outside the scratch dir: %v", ents)
	}

	// A directory entry over the link: its mode and owner are not set
	// on the directory outside.
	f, _ = os.Create(tarPath)
	tw = tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside})
	tw.WriteHeader(&tar.Header{Name: "out/", Typeflag: tar.TypeDir, Mode: 0o777, Uid: 65534})
	tw.Close()
	f.Close()
	if err := unpackScratch(tarPath, t.TempDir()); err == nil {
		t.Error("unpack of a directory over a symlink succeeded")
	}
	unix.Stat(outside, &after)
	if after.Mode != before.Mode || after.Uid != before.Uid {
		t.Errorf("unpack changed the dir outside: mode %o uid %d, was %o %d", after.Mode, after.Uid, before.Mode, before.Uid)
	}
}

func contains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }
