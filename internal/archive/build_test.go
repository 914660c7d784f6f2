package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"hash/crc32"
	"io/fs"
	"testing"
)

// ent describes one archive entry for the builders below.
type ent struct {
	name string
	typ  byte // tar type flag; zip builders map it to a mode
	body string
	link string // symlink or hard link target
	mode int64  // permission and special bits; 0 means 0644
}

func file(name, body string) ent      { return ent{name: name, typ: tar.TypeReg, body: body} }
func dirEnt(name string) ent          { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, to string) ent     { return ent{name: name, typ: tar.TypeSymlink, link: to} }
func hardlink(name, to string) ent    { return ent{name: name, typ: tar.TypeLink, link: to} }
func special(name string, t byte) ent { return ent{name: name, typ: t} }

func mkTar(t testing.TB, ents []ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: mode, Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.typ == tar.TypeXGlobalHeader {
			h = &tar.Header{Typeflag: e.typ, PAXRecords: map[string]string{"comment": "abc"}, Format: tar.FormatPAX}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mkTgz(t testing.TB, ents []ent) []byte { return gz(t, mkTar(t, ents)) }

func mkZip(t testing.TB, ents []ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range ents {
		perm := fs.FileMode(e.mode & 0o777)
		if perm == 0 {
			perm = 0o644
		}
		if e.mode&0o4000 != 0 {
			perm |= fs.ModeSetuid
		}
		body := e.body
		switch e.typ {
		case tar.TypeDir:
			perm |= fs.ModeDir
		case tar.TypeSymlink:
			perm |= fs.ModeSymlink
			body = e.link
		case tar.TypeChar:
			perm |= fs.ModeDevice | fs.ModeCharDevice
		case tar.TypeBlock:
			perm |= fs.ModeDevice
		case tar.TypeFifo:
			perm |= fs.ModeNamedPipe
		case 's': // socket: tar has no such type
			perm |= fs.ModeSocket
		case tar.TypeLink:
			t.Fatalf("zip has no hard links")
		}
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		h.SetMode(perm)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zipBomb returns a zip whose one entry inflates to n zero bytes while its
// headers claim a size of claim.
func zipBomb(t testing.TB, n int, claim uint64) []byte {
	t.Helper()
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestCompression)
	zeros := make([]byte, 1<<16)
	crc := crc32.NewIEEE()
	for left := n; left > 0; left -= len(zeros) {
		c := min(left, len(zeros))
		fw.Write(zeros[:c])
		crc.Write(zeros[:c])
	}
	fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: "bomb.py", Method: zip.Deflate, CRC32: crc.Sum32(),
		CompressedSize64: uint64(comp.Len()), UncompressedSize64: claim}
	w, err := zw.CreateRaw(h)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(comp.Bytes())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
