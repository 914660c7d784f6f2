package lambda

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

var testKeys = Keys{
	"AKIDTEST":  {Name: "test", ID: "AKIDTEST", Secret: "secret/with+chars"},
	"AKIDOTHER": {Name: "other", ID: "AKIDOTHER", Secret: "another"},
}

// signedRequest makes a request to base+path signed as an SDK client
// signs it, at time at, with secret for key id.
func signedRequest(t testing.TB, method, url string, body []byte, hdr map[string]string, id, secret string, at time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	sum := sha256.Sum256(body)
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id, SecretAccessKey: secret},
		req, hex.EncodeToString(sum[:]), "lambda", "eu-west-1", at)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// verifyServer answers 200 and the key's name for requests v accepts,
// else the error's status and type.
func verifyServer(v *Verifier) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key, region, err := v.Verify(r, body)
		if err != nil {
			err.(*awsError).write(w, "")
			return
		}
		io.WriteString(w, key.Name+" "+region)
	}))
}

func TestVerify(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	srv := verifyServer(NewVerifier(testKeys, func() time.Time { return now }))
	defer srv.Close()
	invoke := srv.URL + "/2015-03-31/functions/my-fn/invocations"
	body := []byte(`{"x": 1}`)
	hdr := map[string]string{"X-Amz-Invocation-Type": "RequestResponse", "Content-Type": "application/json"}
	type mod func(*http.Request)
	cases := []struct {
		name     string
		method   string
		url      string
		id, sec  string
		at       time.Time
		tamper   mod
		wantCode int
		wantType string
	}{
		{name: "valid", url: invoke, id: "AKIDTEST", sec: "secret/with+chars", at: now, wantCode: 200},
		{name: "second key", url: invoke, id: "AKIDOTHER", sec: "another", at: now, wantCode: 200},
		{name: "ARN in the path", url: srv.URL + "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Amy-fn/invocations",
			id: "AKIDTEST", sec: "secret/with+chars", at: now, wantCode: 200},
		{name: "query", method: "GET", url: srv.URL + "/2015-03-31/functions/?MaxItems=5&Marker=a%20b", id: "AKIDTEST", sec: "secret/with+chars", at: now, wantCode: 200},
		{name: "clock skew within 15 min", url: invoke, id: "AKIDTEST", sec: "secret/with+chars", at: now.Add(-14 * time.Minute), wantCode: 200},
		{name: "wrong secret", url: invoke, id: "AKIDTEST", sec: "wrong", at: now, wantCode: 403, wantType: typeBadSignature},
		{name: "unknown key", url: invoke, id: "AKIDNOBODY", sec: "secret/with+chars", at: now, wantCode: 403, wantType: typeUnrecognized},
		{name: "stale", url: invoke, id: "AKIDTEST", sec: "secret/with+chars", at: now.Add(-16 * time.Minute), wantCode: 403, wantType: typeBadSignature},
		{name: "future", url: invoke, id: "AKIDTEST", sec: "secret/with+chars", at: now.Add(16 * time.Minute), wantCode: 403, wantType: typeBadSignature},
		{name: "tampered body", url: invoke, id: "AKIDTEST", sec: "secret/with+chars", at: now, wantCode: 403, wantType: typeBadSignature,
			tamper: func(r *http.Request) {
				b := []byte(`{"x": 2}`)
				r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			}},
		{name: "tampered signed header", url: invoke, id: "AKIDTEST", sec: "secret/with+chars", at: now, wantCode: 403, wantType: typeBadSignature,
			tamper: func(r *http.Request) { r.Header.Set("X-Amz-Invocation-Type", "Event") }},
		{name: "tampered path", url: invoke, id: "AKIDTEST", sec: "secret/with+chars", at: now, wantCode: 403, wantType: typeBadSignature,
			tamper: func(r *http.Request) { r.URL.Path = "/2015-03-31/functions/other/invocations" }},
		{name: "content hash mismatch", url: invoke, id: "AKIDTEST", sec: "secret/with+chars", at: now, wantCode: 403, wantType: typeBadSignature,
			tamper: func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD") }},
		{name: "no signature", url: invoke, id: "AKIDTEST", sec: "secret/with+chars", at: now, wantCode: 403, wantType: typeMissingAuth,
			tamper: func(r *http.Request) { r.Header.Del("Authorization") }},
		{name: "session token", url: invoke, id: "AKIDTEST", sec: "secret/with+chars", at: now, wantCode: 403, wantType: typeUnrecognized,
			tamper: func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "tok") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.method
			if m == "" {
				m = "POST"
			}
			b := body
			if m == "GET" {
				b = nil
			}
			req := signedRequest(t, m, tc.url, b, hdr, tc.id, tc.sec, tc.at)
			if tc.tamper != nil {
				tc.tamper(req)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantCode, got)
			}
			if tc.wantType != "" && resp.Header.Get("X-Amzn-Errortype") != tc.wantType {
				t.Fatalf("error type %q, want %q: %s", resp.Header.Get("X-Amzn-Errortype"), tc.wantType, got)
			}
			if tc.wantCode == 200 && !strings.HasSuffix(string(got), " eu-west-1") {
				t.Fatalf("answer %q: want the key's name and the signed region", got)
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	keys, err := ParseKeys([]byte("# keys\n[ci]\naws_access_key_id = AKID1\naws_secret_access_key=s1\nregion = x\n\n[profile dev]\naws_access_key_id=AKID2\naws_secret_access_key = s2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys["AKID1"].Name != "ci" || keys["AKID1"].Secret != "s1" || keys["AKID2"].Name != "dev" {
		t.Fatalf("keys: %+v", keys)
	}
	for _, bad := range []string{
		"aws_access_key_id = A\n",
		"[a]\naws_access_key_id = A\n",
		"[a]\naws_access_key_id = A\naws_secret_access_key = s\n[b]\naws_access_key_id = A\naws_secret_access_key = t\n",
		"[a\n",
		"[a]\nnot a pair\n",
	} {
		if _, err := ParseKeys([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// BenchmarkVerify measures the signature check of a warm invocation's
// request (a small JSON payload): what the Lambda API adds to a call.
func BenchmarkVerify(b *testing.B) {
	now := time.Now()
	v := NewVerifier(testKeys, nil)
	body := []byte(`{"values": [1, 2, 3], "name": "bench"}`)
	req := signedRequest(b, "POST", "http://127.0.0.1:7878/2015-03-31/functions/bench/invocations", body,
		map[string]string{"X-Amz-Invocation-Type": "RequestResponse", "Content-Type": "application/json", "User-Agent": "bench"},
		"AKIDTEST", "secret/with+chars", now)
	// As the server sees it: the Host header moved to Host.
	req.Host = req.URL.Host
	req.RequestURI = req.URL.RequestURI()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := v.Verify(req, body); err != nil {
			b.Fatal(err)
		}
	}
}
