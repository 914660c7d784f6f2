//go:build !no_s3

package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/hearth-run/hearth/internal/snapshot"
	"github.com/hearth-run/hearth/internal/snapshot/snaptest"
)

var (
	env    *snaptest.Env
	engine *snapshot.Engine
	envErr error
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		e, cleanup, err := snaptest.Setup("s3test")
		defer cleanup()
		if err != nil {
			envErr = err
			return m.Run()
		}
		eng, err := snapshot.NewEngine(context.Background(), snapshot.EngineConfig{CRIU: e.CRIU, Base: e.Base, Dir: e.SbDir})
		if err != nil {
			envErr = err
			return m.Run()
		}
		defer eng.Close()
		env, engine = e, eng
		return m.Run()
	}())
}

func newStore(t *testing.T, endpoint string, srv *snaptest.S3Server, bucket string) *Store {
	t.Helper()
	s, err := New(Config{Endpoint: endpoint, Bucket: bucket, AccessKey: srv.Access, SecretKey: srv.Secret, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.EnsureBucket(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func openCache(t *testing.T, dir string, r snapshot.Remote) *snapshot.Cache {
	t.Helper()
	c, err := snapshot.OpenCache(snapshot.CacheConfig{Dir: dir, Remote: r})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fake writes random files of the given sizes as a snapshot.
func fake(sizes ...int) func(string) (*snapshot.Descriptor, error) {
	return func(dir string) (*snapshot.Descriptor, error) {
		os.Mkdir(filepath.Join(dir, "images"), 0o700)
		for i, n := range sizes {
			b := make([]byte, n)
			rand.Read(b)
			if err := os.WriteFile(filepath.Join(dir, "images", fmt.Sprintf("pages-%d.img", i)), b, 0o600); err != nil {
				return nil, err
			}
		}
		return &snapshot.Descriptor{Function: "f", Revision: "r", Socket: "rt.sock"}, nil
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no endpoint", Config{Bucket: "b"}},
		{"no bucket", Config{Endpoint: "127.0.0.1:1"}},
		{"scheme in endpoint", Config{Endpoint: "http://127.0.0.1:1", Bucket: "b"}},
		{"half credentials", Config{Endpoint: "127.0.0.1:1", Bucket: "b", AccessKey: "a"}},
		{"missing CA file", Config{Endpoint: "127.0.0.1:1", Bucket: "b", TLS: true, CAFile: "/nonexistent/ca.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("no error")
			}
		})
	}
	s, err := New(Config{Endpoint: "127.0.0.1:1", Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), "../x", t.TempDir()); !errors.Is(err, snapshot.ErrInvalid) {
		t.Fatalf("bad key: %v", err)
	}
}

// TestRemoteRoundTrip: worker A checkpoints the slow handler and uploads
// it; worker B, with its own data dir, downloads and restores it without
// ever running the init.
func TestRemoteRoundTrip(t *testing.T) {
	if env == nil {
		snaptest.Skip(t, envErr)
	}
	e := env
	srv := snaptest.StartS3(t)
	ctx := context.Background()

	a := openCache(t, t.TempDir(), newStore(t, srv.Endpoint, srv, "hearth"))
	src := e.StartSource(t, e.CodeDir(t))
	first, _ := src.Invoke(t)
	if first.N != 1 || first.InitS < 1 {
		t.Fatalf("source: %+v", first)
	}
	key := snapshot.Key("slow", "r1")
	d, err := a.Create(ctx, key, func(dir string) (*snapshot.Descriptor, error) {
		return engine.Dump(ctx, snapshot.DumpSpec{Pid: src.SB.InitPid(), Scratch: src.SB.Scratch(),
			Socket: snaptest.Socket, Key: key, Function: "slow", Revision: "r1", BaseImage: "test"}, dir)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The dump killed the source (no LeaveRunning).
	select {
	case <-src.SB.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("source still running after dump")
	}
	t0 := time.Now()
	if err := a.Push(ctx, key); err != nil {
		t.Fatal(err)
	}
	up := time.Since(t0)

	bStore := newStore(t, srv.Endpoint, srv, "hearth")
	keys, err := bStore.List(ctx)
	if err != nil || len(keys) != 1 || keys[0] != key {
		t.Fatalf("list: %v %v", keys, err)
	}
	b := openCache(t, t.TempDir(), bStore)
	t0 = time.Now()
	h, err := b.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	down := time.Since(t0)
	defer h.Release()
	if !h.Remote {
		t.Error("acquire did not come from the remote store")
	}
	t0 = time.Now()
	sb, err := engine.Restore(ctx, h.Dir(), h.Descriptor(), snapshot.RestoreSpec{
		ID: fmt.Sprintf("rst-%d", e.Seq()), Group: e.NewGroup(t, fmt.Sprintf("rst-%d", e.Seq())), Binds: e.Binds(src.Code),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(ctx)
	r, ready := snaptest.Invoke(t, sb.SocketPath(snaptest.Socket))
	total := time.Since(t0)
	t.Logf("%d MB: dump %v, upload %v, download %v, restore %v (criu %v) + first invoke (ready %v) = %v",
		d.Bytes>>20, d.DumpTime, up, down, total, sb.RestoreTime, ready, total)
	// Same memory: INIT_S is the source's value, not a new measurement,
	// and the counter continues.
	if r.InitS != first.InitS || r.N != 2 || r.NFile != 2 {
		t.Fatalf("restored state %+v, source had %+v", r, first)
	}
	if total >= time.Second {
		t.Fatalf("restore + invoke took %v: the 1 s init must not run", total)
	}
	st := b.Stats()
	if st.RemoteHits != 1 || st.DownloadedBytes != d.Bytes {
		t.Fatalf("B stats %+v", st)
	}
	// A second acquire on B is a local hit.
	h2, err := b.Acquire(ctx, key)
	if err != nil || h2.Remote {
		t.Fatalf("second acquire: remote=%v err=%v", h2 != nil && h2.Remote, err)
	}
	h2.Release()
}

// TestDownMidDownload: the store goes away during a download. The acquire
// fails fast with an error (the caller falls back), nothing half-written
// stays in the cache, and a later acquire succeeds once it is back.
func TestDownMidDownload(t *testing.T) {
	srv := snaptest.StartS3(t)
	ctx := context.Background()
	a := openCache(t, t.TempDir(), newStore(t, srv.Endpoint, srv, "down"))
	if _, err := a.Create(ctx, "big", fake(8<<20, 4<<20, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := a.Push(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	proxy := snaptest.NewCutProxy(t, srv.Endpoint, 2<<20)
	bDir := t.TempDir()
	b := openCache(t, bDir, newStore(t, proxy.Addr, srv, "down"))
	t0 := time.Now()
	_, err := b.Acquire(ctx, "big")
	took := time.Since(t0)
	if err == nil {
		t.Fatal("acquire through a store that went down succeeded")
	}
	if errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("outage reported as a miss: %v", err)
	}
	t.Logf("failed after %v (%d bytes through): %v", took, proxy.Sent(), err)
	if took > 10*time.Second {
		t.Fatalf("failure took %v", took)
	}
	if proxy.Sent() < 2<<20 {
		t.Fatalf("proxy cut after %d bytes: the download never started", proxy.Sent())
	}
	if ents, _ := os.ReadDir(bDir); len(ents) != 0 {
		t.Fatalf("partial download left in the cache: %v", ents)
	}
	if st := b.Stats(); st.RemoteErrors != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Back up (direct): the same data dir now gets it.
	b2 := openCache(t, bDir, newStore(t, srv.Endpoint, srv, "down"))
	h, err := b2.Acquire(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
}

func TestRemoteCorruptAndMissing(t *testing.T) {
	srv := snaptest.StartS3(t)
	ctx := context.Background()
	st := newStore(t, srv.Endpoint, srv, "corrupt")
	a := openCache(t, t.TempDir(), st)
	for _, k := range []string{"flipped", "truncated", "gone"} {
		if _, err := a.Create(ctx, k, fake(300000, 1000)); err != nil {
			t.Fatal(err)
		}
		if err := a.Push(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	obj := func(k string) string { return st.object(k, "images/pages-0.img") }
	spoil := func(k string, b []byte) {
		if _, err := st.c.PutObject(ctx, st.bucket, obj(k), bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	flipped := make([]byte, 300000)
	rand.Read(flipped)
	spoil("flipped", flipped)
	spoil("truncated", make([]byte, 1000))
	if err := st.c.RemoveObject(ctx, st.bucket, obj("gone"), minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"flipped", "truncated", "gone"} {
		t.Run(k, func(t *testing.T) {
			_, err := st.Get(ctx, k, t.TempDir())
			if !errors.Is(err, snapshot.ErrCorrupt) && !(k == "gone" && err != nil) {
				t.Fatalf("get: %v, want ErrCorrupt", err)
			}
			b := openCache(t, t.TempDir(), st)
			if _, err := b.Acquire(ctx, k); err == nil {
				t.Fatal("acquire of a corrupt remote snapshot succeeded")
			}
		})
	}
	if _, err := st.Get(ctx, "never-made", t.TempDir()); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("missing snapshot: %v, want ErrNotFound", err)
	}
	if err := st.Delete(ctx, "flipped"); err != nil {
		t.Fatal(err)
	}
	keys, err := st.List(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("after delete: %v %v", keys, err)
	}
}
