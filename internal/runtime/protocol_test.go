package runtime

import (
	"context"
	"errors"
	"math"
	"net"
	"testing"
	"time"
)

// TestReadyFrames reads the ready frame as the runtime sends it (load and
// load CPU time, in microseconds) and as an older one did (load alone),
// and caps a load CPU time over the load time, which only a handler that
// tampered with its runtime could send.
func TestReadyFrames(t *testing.T) {
	le := func(us uint64) []byte {
		b := make([]byte, 8)
		for i := range b {
			b[i] = byte(us >> (8 * i))
		}
		return b
	}
	tests := []struct {
		name      string
		frame     []byte
		load, cpu time.Duration
	}{
		{"load and CPU", append(append([]byte{16, 0, 0, 0, 'R'}, le(5000)...), le(1200)...), 5 * time.Millisecond, 1200 * time.Microsecond},
		{"load alone", append([]byte{8, 0, 0, 0, 'R'}, le(5000)...), 5 * time.Millisecond, 0},
		{"CPU over the load", append(append([]byte{16, 0, 0, 0, 'R'}, le(5000)...), le(1<<40)...), 5 * time.Millisecond, 5 * time.Millisecond},
		{"huge figures", append(append([]byte{16, 0, 0, 0, 'R'}, le(1<<64-1)...), le(1<<64-1)...), math.MaxInt64 / 1000 * time.Microsecond, math.MaxInt64 / 1000 * time.Microsecond},
		{"a later runtime's third figure", append(append(append([]byte{24, 0, 0, 0, 'R'}, le(5000)...), le(1200)...), le(7)...), 5 * time.Millisecond, 1200 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go b.Write(tt.frame)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			r, err := NewConn(a).WaitReady(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if r.Load != tt.load || r.LoadCPU != tt.cpu {
				t.Errorf("ready = %+v, want load %v, CPU %v", r, tt.load, tt.cpu)
			}
		})
	}
}

// TestProtocolErrors feeds the client malformed frames from a fake peer;
// the real runtime never sends these, so they cannot come from it.
func TestProtocolErrors(t *testing.T) {
	ready := []byte{8, 0, 0, 0, 'R', 1, 0, 0, 0, 0, 0, 0, 0}
	tests := []struct {
		name   string
		frames [][]byte // sent after reading each request
		invoke bool
	}{
		{"bad ready type", [][]byte{{0, 0, 0, 0, 'Z'}}, false},
		{"short ready", [][]byte{{4, 0, 0, 0, 'R', 0, 0, 0, 0}}, false},
		{"long ready", [][]byte{append([]byte{65, 0, 0, 0, 'R'}, make([]byte, 65)...)}, false},
		{"bad load error json", [][]byte{{2, 0, 0, 0, 'L', '{', '['}}, false},
		{"bad result type", [][]byte{ready, {8, 0, 0, 0, 'R', 0, 0, 0, 0, 0, 0, 0, 0}}, true},
		{"short result", [][]byte{ready, {2, 0, 0, 0, 'O', 0, 0}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go func() {
				buf := make([]byte, 4096)
				for i, f := range tt.frames {
					if i > 0 {
						b.Read(buf)
					}
					b.Write(f)
				}
			}()
			c := NewConn(a)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var err error
			if tt.invoke {
				if _, err := c.WaitReady(ctx); err != nil {
					t.Fatal(err)
				}
				_, err = c.Invoke(ctx, Request{ID: "x"})
			} else {
				_, err = c.WaitReady(ctx)
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
			// Broken from now on.
			if _, err := c.Invoke(ctx, Request{ID: "y"}); !errors.Is(err, ErrProtocol) {
				t.Errorf("next call: %v", err)
			}
		})
	}
}
