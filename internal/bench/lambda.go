package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/hearth-run/hearth/internal/lambda"
)

// LambdaOptions configures LambdaAPI.
type LambdaOptions struct {
	Hearth string // the hearth binary
	Base   string // the base image
	N      int    // samples per method
	Out    io.Writer
}

const (
	benchKeyID  = "AKIDHEARTHBENCH"
	benchSecret = "bench/secret+0123456789"
)

// signLambda signs req as an AWS SDK does, for the bench key.
func signLambda(req *http.Request, body []byte, at time.Time) error {
	sum := sha256.Sum256(body)
	return v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: benchKeyID, SecretAccessKey: benchSecret},
		req, hex.EncodeToString(sum[:]), "lambda", "us-east-1", at)
}

// LambdaAPI measures a warm invocation of one function through the Lambda
// API (a SigV4-signed Invoke, as the SDKs send it; the client's signing
// is not timed) against /v1/functions/{name}/invoke on the same worker,
// the two interleaved so that they share the machine's noise; and the
// worker's signature check alone, in process.
func LambdaAPI(ctx context.Context, o LambdaOptions) ([]Sample, error) {
	if o.N <= 0 {
		o.N = 200
	}
	dir, err := tempDir("lambda")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	creds := filepath.Join(dir, "credentials")
	if err := os.WriteFile(creds, []byte("[bench]\naws_access_key_id = "+benchKeyID+"\naws_secret_access_key = "+benchSecret+"\n"), 0o600); err != nil {
		return nil, err
	}
	w, err := StartWorker(ctx, o.Hearth, o.Base, "--lambda-credentials", creds)
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	if err := w.Deploy(ctx, "hello", HelloFn); err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	body := []byte(`{"values": [1, 2, 3]}`)
	viaLambda := func() (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, "POST", w.URL+"/2015-03-31/functions/hello/invocations", bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		if err := signLambda(req, body, time.Now()); err != nil {
			return 0, err
		}
		t0 := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if resp.StatusCode != 200 || resp.Header.Get("X-Amz-Function-Error") != "" {
			return 0, fmt.Errorf("lambda invoke: %d %s", resp.StatusCode, resp.Header.Get("X-Amzn-Errortype"))
		}
		if p := resp.Header.Get("X-Hearth-Start-Path"); p != "warm" {
			return 0, fmt.Errorf("lambda invoke took path %q, want warm", p)
		}
		return d, nil
	}
	viaV1 := func() (time.Duration, error) {
		inv, err := w.Client.Invoke(ctx, "hello", body)
		if err != nil {
			return 0, err
		}
		if inv.Path != "warm" {
			return 0, fmt.Errorf("/v1 invoke took path %q, want warm", inv.Path)
		}
		return inv.Latency, nil
	}
	// Start the sandbox, then warm both connections.
	if _, err := w.Client.Invoke(ctx, "hello", body); err != nil {
		return nil, err
	}
	for range 5 {
		if _, err := viaV1(); err != nil {
			return nil, err
		}
		if _, err := viaLambda(); err != nil {
			return nil, err
		}
	}
	v1 := Sample{Name: "warm invoke, /v1"}
	lam := Sample{Name: "warm invoke, Lambda API (SigV4)"}
	for i := 0; i < o.N; i++ {
		first, second := viaV1, viaLambda
		a, b := &v1, &lam
		if i%2 == 1 {
			first, second, a, b = viaLambda, viaV1, &lam, &v1
		}
		d, err := first()
		if err != nil {
			return nil, err
		}
		a.D = append(a.D, d)
		if d, err = second(); err != nil {
			return nil, err
		}
		b.D = append(b.D, d)
	}
	sig, err := verifySample(max(o.N*10, 1000))
	if err != nil {
		return nil, err
	}
	samples := []Sample{v1, lam, sig}
	if o.Out != nil {
		Table(o.Out, samples, [][2]string{{lam.Name, v1.Name}})
		fmt.Fprintf(o.Out, "p50 Lambda API - /v1 = %s ms; the SigV4 check alone p50 %s ms, p99 %s ms\n",
			ms(lam.P50()-v1.P50()), ms(sig.P50()), ms(sig.P99()))
	}
	return samples, nil
}

// verifySample times n checks of a signed Invoke request by the worker's
// verifier, in process.
func verifySample(n int) (Sample, error) {
	keys := lambda.Keys{benchKeyID: {Name: "bench", ID: benchKeyID, Secret: benchSecret}}
	v := lambda.NewVerifier(keys, nil)
	body := []byte(`{"values": [1, 2, 3]}`)
	req, err := http.NewRequest("POST", "http://127.0.0.1:7878/2015-03-31/functions/hello/invocations", bytes.NewReader(body))
	if err != nil {
		return Sample{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if err := signLambda(req, body, time.Now()); err != nil {
		return Sample{}, err
	}
	// As a server receives it: the Host header in Host.
	req.Host = req.URL.Host
	s := Sample{Name: "SigV4 check (in process)"}
	for range n {
		t0 := time.Now()
		if _, _, err := v.Verify(req, body); err != nil {
			return s, err
		}
		s.D = append(s.D, time.Since(t0))
	}
	return s, nil
}
