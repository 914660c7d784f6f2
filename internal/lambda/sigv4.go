package lambda

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	// MaxClockSkew is how far a request's X-Amz-Date may be from the
	// worker's clock, as on AWS.
	MaxClockSkew  = 15 * time.Minute
	amzDateFormat = "20060102T150405Z"
	sigAlgorithm  = "AWS4-HMAC-SHA256"
	signingName   = "lambda"
)

// Verifier checks AWS Signature Version 4 on requests: it signs each
// request again, with the secret of the access key it names, through the
// AWS SDK for Go v2's signer, and compares the signatures in constant
// time. The zero value refuses every request; use NewVerifier. It is safe
// for concurrent use.
type Verifier struct {
	keys   Keys
	signer *v4.Signer
	// now is the clock requests' dates are checked against.
	now func() time.Time
}

// NewVerifier returns a Verifier of keys. now, if nil, is time.Now.
func NewVerifier(keys Keys, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	return &Verifier{keys: keys, signer: v4.NewSigner(), now: now}
}

// authHeader is the parsed Authorization header of a signed request.
type authHeader struct {
	keyID, date, region, service, term string
	signedHeaders                      string
	signature                          string
}

func parseAuth(v string) (authHeader, bool) {
	var a authHeader
	rest, ok := strings.CutPrefix(v, sigAlgorithm+" ")
	if !ok {
		return a, false
	}
	for _, part := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, false
		}
		switch k {
		case "Credential":
			f := strings.Split(val, "/")
			if len(f) != 5 {
				return a, false
			}
			a.keyID, a.date, a.region, a.service, a.term = f[0], f[1], f[2], f[3], f[4]
		case "SignedHeaders":
			a.signedHeaders = val
		case "Signature":
			a.signature = val
		}
	}
	return a, a.keyID != "" && a.signedHeaders != "" && a.signature != ""
}

// Verify checks r's signature over body (r's whole body, already read).
// It returns the key that signed r, and the region the client signed
// for; an error is an *awsError to answer with (403).
func (v *Verifier) Verify(r *http.Request, body []byte) (Key, string, error) {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		if r.URL.Query().Has("X-Amz-Signature") {
			return Key{}, "", forbidden(typeBadSignature, "presigned URLs are not accepted; sign the Authorization header")
		}
		return Key{}, "", forbidden(typeMissingAuth, "Missing Authentication Token")
	}
	a, ok := parseAuth(authz)
	if !ok {
		return Key{}, "", forbidden(typeBadSignature, "Authorization header is not an AWS4-HMAC-SHA256 signature with Credential, SignedHeaders and Signature")
	}
	key, ok := v.keys[a.keyID]
	if !ok {
		return Key{}, "", forbidden(typeUnrecognized, "The security token included in the request is invalid.")
	}
	if a.service != signingName || a.term != "aws4_request" || a.region == "" {
		return Key{}, "", forbidden(typeBadSignature, "Credential should be scoped to a valid region and to the service 'lambda', ending in aws4_request")
	}
	if r.Header.Get("X-Amz-Security-Token") != "" {
		// Hearth has no STS: temporary credentials cannot be its own.
		return Key{}, "", forbidden(typeUnrecognized, "The security token included in the request is invalid.")
	}
	dateStr := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, dateStr)
	if err != nil {
		return Key{}, "", forbidden(typeBadSignature, "the request needs an X-Amz-Date header in the form 20060102T150405Z")
	}
	if a.date != t.Format("20060102") {
		return Key{}, "", forbidden(typeBadSignature, "Credential should be scoped to the date of X-Amz-Date ("+t.Format("20060102")+")")
	}
	now := v.now().UTC()
	switch {
	case t.Before(now.Add(-MaxClockSkew)):
		return Key{}, "", forbidden(typeBadSignature, "Signature expired: "+dateStr+" is now earlier than "+
			now.Add(-MaxClockSkew).Format(amzDateFormat)+" ("+now.Format(amzDateFormat)+" - 15 min.)")
	case t.After(now.Add(MaxClockSkew)):
		return Key{}, "", forbidden(typeBadSignature, "Signature not yet current: "+dateStr+" is still later than "+
			now.Add(MaxClockSkew).Format(amzDateFormat)+" ("+now.Format(amzDateFormat)+" + 15 min.)")
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != payloadHash {
		// UNSIGNED-PAYLOAD too: the body must be signed.
		return Key{}, "", forbidden(typeBadSignature, "The request body does not match its X-Amz-Content-Sha256 (unsigned payloads are not accepted)")
	}

	// The request again, with exactly the headers the client signed.
	// The signer adds host and X-Amz-Date itself, and content-length
	// when ContentLength is set.
	re := &http.Request{
		Method: r.Method,
		URL: &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath,
			RawQuery: r.URL.RawQuery},
		Host:   r.Host,
		Header: make(http.Header, 8),
	}
	hasHost := false
	for _, h := range strings.Split(a.signedHeaders, ";") {
		switch h {
		case "host":
			hasHost = true
			continue
		case "content-length":
			re.ContentLength = r.ContentLength
			continue
		case "x-amz-date":
			continue
		}
		vals := r.Header.Values(h)
		if vals == nil {
			return Key{}, "", forbidden(typeBadSignature, "signed header "+h+" is missing from the request")
		}
		re.Header[textproto.CanonicalMIMEHeaderKey(h)] = vals
	}
	if !hasHost {
		return Key{}, "", forbidden(typeBadSignature, "the host header must be signed")
	}
	creds := aws.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret}
	if err := v.signer.SignHTTP(context.Background(), creds, re, payloadHash, signingName, a.region, t); err != nil {
		return Key{}, "", forbidden(typeBadSignature, "the request cannot be signed again: "+err.Error())
	}
	mine, _ := parseAuth(re.Header.Get("Authorization"))
	// The signed header lists are public; the signatures are compared in
	// constant time.
	if mine.signedHeaders != a.signedHeaders ||
		subtle.ConstantTimeCompare([]byte(mine.signature), []byte(a.signature)) != 1 {
		return Key{}, "", forbidden(typeBadSignature, "The request signature we calculated does not match the signature you provided. "+
			"Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	return key, a.region, nil
}
