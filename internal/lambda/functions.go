package lambda

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/hearth-run/hearth/internal/archive"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/worker"
)

// lambdaDefaultTimeoutS is Lambda's default timeout, which CreateFunction
// applies when neither the request nor the zip's function.yaml sets one.
const lambdaDefaultTimeoutS = 3

// runtimeRE matches the runtimes Hearth accepts: its functions are
// Python 3, whatever minor version the base image has.
var runtimeRE = regexp.MustCompile(`^python3\.[0-9]{1,2}$`)

// classify maps an error of the registry or the worker to Lambda's types.
func (s *Server) classify(err error) *awsError {
	msg := err.Error()
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, worker.ErrNotFound):
		return notFound(msg)
	case errors.Is(err, archive.ErrTooLarge):
		return newError(http.StatusRequestEntityTooLarge, typeTooLarge, msg)
	case errors.Is(err, archive.ErrUnsafe), errors.Is(err, archive.ErrFormat),
		errors.Is(err, function.ErrInvalid), errors.Is(err, function.ErrUnsupported),
		errors.Is(err, function.ErrUnsatisfied), errors.Is(err, registry.ErrInvalid),
		errors.Is(err, worker.ErrMemoryTooLarge):
		return invalidParam(msg)
	case errors.Is(err, worker.ErrTooMany):
		e := newError(http.StatusTooManyRequests, typeTooMany, "Rate Exceeded.")
		e.Reason = "ReservedFunctionConcurrentInvocationLimitExceeded"
		return e
	case errors.Is(err, worker.ErrDrop):
		e := newError(http.StatusTooManyRequests, typeTooMany, "Rate Exceeded: "+msg)
		e.Reason = "ConcurrentInvocationLimitExceeded"
		return e
	case errors.Is(err, ErrQueueFull):
		e := newError(http.StatusTooManyRequests, typeTooMany, msg)
		e.Reason = "ConcurrentInvocationLimitExceeded"
		return e
	case errors.Is(err, packages.ErrIndexUnreachable):
		return newError(http.StatusBadGateway, typeService, msg)
	}
	return newError(http.StatusInternalServerError, typeService, msg)
}

// Configuration shapes (FunctionConfiguration in the service model).
type (
	environmentResponse struct {
		Variables map[string]string `json:"Variables"`
	}
	tracingConfig struct {
		Mode string `json:"Mode"`
	}
	ephemeralStorage struct {
		Size int `json:"Size"`
	}
	functionConfiguration struct {
		FunctionName     string               `json:"FunctionName"`
		FunctionArn      string               `json:"FunctionArn"`
		Runtime          string               `json:"Runtime"`
		Role             string               `json:"Role,omitempty"`
		Handler          string               `json:"Handler"`
		CodeSize         int64                `json:"CodeSize"`
		Description      string               `json:"Description"`
		Timeout          int                  `json:"Timeout"`
		MemorySize       int                  `json:"MemorySize"`
		LastModified     string               `json:"LastModified"`
		CodeSha256       string               `json:"CodeSha256"`
		Version          string               `json:"Version"`
		Environment      *environmentResponse `json:"Environment,omitempty"`
		TracingConfig    tracingConfig        `json:"TracingConfig"`
		RevisionID       string               `json:"RevisionId"`
		State            string               `json:"State"`
		LastUpdateStatus string               `json:"LastUpdateStatus"`
		PackageType      string               `json:"PackageType"`
		Architectures    []string             `json:"Architectures"`
		EphemeralStorage ephemeralStorage     `json:"EphemeralStorage"`
	}
)

// revisionID is a function revision as Lambda's RevisionId, a UUID.
func revisionID(rev string) string {
	if len(rev) < 32 {
		return rev
	}
	return rev[:8] + "-" + rev[8:12] + "-" + rev[12:16] + "-" + rev[16:20] + "-" + rev[20:32]
}

func architecture() string {
	if goruntime.GOARCH == "arm64" {
		return "arm64"
	}
	return "x86_64"
}

// configuration describes fn as Lambda's FunctionConfiguration.
func (s *Server) configuration(c *call, fn registry.Function) (functionConfiguration, error) {
	m, found, err := getMeta(s.db, fn.Name)
	if err != nil {
		return functionConfiguration{}, err
	}
	cfg := functionConfiguration{
		FunctionName: fn.Name, FunctionArn: s.arn(c, fn.Name), Runtime: s.cfg.Runtime,
		Handler: fn.Spec.Handler, CodeSize: fn.Size, Timeout: fn.Spec.TimeoutS, MemorySize: fn.Spec.MemoryMB,
		LastModified: fn.DeployedAt.UTC().Format("2006-01-02T15:04:05.000-0700"),
		Version:      "$LATEST", TracingConfig: tracingConfig{Mode: "PassThrough"},
		RevisionID: revisionID(fn.Revision), State: "Active", LastUpdateStatus: "Successful",
		PackageType: "Zip", Architectures: []string{architecture()},
		EphemeralStorage: ephemeralStorage{Size: fn.Spec.TmpMB},
	}
	if cfg.EphemeralStorage.Size == 0 {
		cfg.EphemeralStorage.Size = function.DefaultTmpMB
	}
	// The code's hash: the zip's when it made this revision, else the
	// code tree's (a deploy through /v1 has no zip).
	sum, _ := hexDecode(fn.Revision)
	cfg.CodeSha256 = base64.StdEncoding.EncodeToString(sum)
	if found {
		if m.Runtime != "" {
			cfg.Runtime = m.Runtime
		}
		cfg.Role, cfg.Description = m.Role, m.Description
		if m.Revision == fn.Revision {
			cfg.CodeSha256, cfg.CodeSize = m.CodeSha256, m.CodeSize
			if m.Handler != "" {
				cfg.Handler = m.Handler
			}
		}
	}
	if len(fn.Spec.Env) > 0 {
		cfg.Environment = &environmentResponse{Variables: fn.Spec.Env}
	}
	return cfg, nil
}

func hexDecode(s string) ([]byte, error) {
	b := make([]byte, len(s)/2)
	for i := range b {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, err
		}
		b[i] = byte(v)
	}
	return b, nil
}

// settings are the Lambda settings written into function.yaml; nil
// fields leave what is there.
type settings struct {
	Handler  *string
	MemoryMB *int
	TimeoutS *int
	Env      *map[string]string
	TmpMB    *int
	// defaultTimeoutS is the timeout when neither TimeoutS nor the
	// function.yaml sets one.
	defaultTimeoutS *int
}

// specHandler turns a Lambda handler into Hearth's "module.func": a path
// form ("src/app.handler") names the module by dots.
func specHandler(h string) (string, *awsError) {
	if h == "" || strings.ContainsAny(h, " \t\n") || len(h) > 128 {
		return "", invalidParam("Handler: want module.function (for example lambda_function.lambda_handler)")
	}
	h = strings.TrimPrefix(h, "./")
	return strings.ReplaceAll(h, "/", "."), nil
}

// applyTo merges st into the YAML content of a function.yaml (empty for
// none). Other keys (network, cpus...) stay.
func (st settings) applyTo(data []byte) ([]byte, error) {
	doc := map[string]any{}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, invalidParam(function.ConfigFile + " in the code: " + err.Error())
		}
		if doc == nil {
			doc = map[string]any{}
		}
	}
	if st.Handler != nil {
		doc["handler"] = *st.Handler
	}
	if st.MemoryMB != nil {
		doc["memory_mb"] = *st.MemoryMB
	}
	if st.TimeoutS != nil {
		doc["timeout_s"] = *st.TimeoutS
	} else if _, ok := doc["timeout_s"]; !ok && st.defaultTimeoutS != nil {
		doc["timeout_s"] = *st.defaultTimeoutS
	}
	if st.Env != nil {
		if len(*st.Env) == 0 {
			delete(doc, "env")
		} else {
			doc["env"] = *st.Env
		}
	}
	if st.TmpMB != nil {
		doc["tmp_mb"] = *st.TmpMB
	}
	return yaml.Marshal(doc)
}

// isConfigFile reports whether a zip entry is the root function.yaml.
func isConfigFile(name string) bool {
	return path.Clean("/"+strings.TrimPrefix(name, "./")) == "/"+function.ConfigFile
}

// rewriteZip returns the zip data with its root function.yaml replaced
// by one carrying st (create: with Lambda's default timeout when none is
// set anywhere). Entries are copied without recompression.
func rewriteZip(data []byte, st settings, create bool) ([]byte, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, invalidParam("Could not unzip uploaded file. Please check your file, then try to upload again.")
	}
	var conf []byte
	for _, f := range zr.File {
		if !isConfigFile(f.Name) || f.FileInfo().IsDir() {
			continue
		}
		if f.UncompressedSize64 > function.MaxConfigBytes {
			return nil, invalidParam(fmt.Sprintf("%s in the code is larger than %d bytes", function.ConfigFile, function.MaxConfigBytes))
		}
		rc, err := f.Open()
		if err != nil {
			return nil, invalidParam("Could not unzip uploaded file: " + err.Error())
		}
		conf, err = io.ReadAll(io.LimitReader(rc, function.MaxConfigBytes+1))
		rc.Close()
		if err != nil {
			return nil, invalidParam("Could not unzip uploaded file: " + err.Error())
		}
	}
	if create {
		t := lambdaDefaultTimeoutS
		st.defaultTimeoutS = &t
	}
	conf, err = st.applyTo(conf)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, f := range zr.File {
		if isConfigFile(f.Name) {
			continue
		}
		if err := zw.Copy(f); err != nil {
			return nil, invalidParam("Could not unzip uploaded file: " + err.Error())
		}
	}
	hdr := &zip.FileHeader{Name: function.ConfigFile, Method: zip.Deflate}
	hdr.SetMode(0o644)
	fw, err := zw.CreateHeader(hdr)
	if err != nil {
		return nil, err
	}
	fw.Write(conf)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// deployZip deploys zip data as function name and retires what ran the
// previous revision, as a deploy through /v1 does.
func (s *Server) deployZip(ctx context.Context, name string, data []byte) (registry.Function, error) {
	fn, err := s.reg.Deploy(ctx, name, registry.Source{Archive: bytes.NewReader(data), Size: int64(len(data))})
	if err != nil {
		s.cfg.Logger.Warn("lambda API: deploy failed", "function", name, "err", err)
		return fn, err
	}
	s.wk.Retire(fn.Name, fn.Revision)
	s.cfg.Logger.Info("deployed through the Lambda API", "function", fn.Name, "revision", fn.Revision)
	return fn, nil
}

type functionCode struct {
	ZipFile         []byte `json:"ZipFile"`
	S3Bucket        string `json:"S3Bucket"`
	S3Key           string `json:"S3Key"`
	S3ObjectVersion string `json:"S3ObjectVersion"`
	ImageURI        string `json:"ImageUri"`
}

func (fc functionCode) check() *awsError {
	switch {
	case fc.S3Bucket != "" || fc.S3Key != "" || fc.ImageURI != "":
		return invalidParam("Hearth takes a function's code as a zip in the request (ZipFile, --zip-file fileb://...); S3 locations and images are not supported")
	case len(fc.ZipFile) == 0:
		return invalidParam("ZipFile: the function's code, a zip, is required")
	}
	return nil
}

type createRequest struct {
	FunctionName string       `json:"FunctionName"`
	Runtime      string       `json:"Runtime"`
	Role         string       `json:"Role"`
	Handler      string       `json:"Handler"`
	Code         functionCode `json:"Code"`
	Description  string       `json:"Description"`
	Timeout      *int         `json:"Timeout"`
	MemorySize   *int         `json:"MemorySize"`
	Environment  *struct {
		Variables map[string]string `json:"Variables"`
	} `json:"Environment"`
	PackageType      string            `json:"PackageType"`
	Layers           []string          `json:"Layers"`
	EphemeralStorage *ephemeralStorage `json:"EphemeralStorage"`
}

func decode(c *call, v any) *awsError {
	if err := json.Unmarshal(c.body, v); err != nil {
		return invalidParam("the request body is not the operation's JSON: " + err.Error())
	}
	return nil
}

func checkRuntime(rt string) *awsError {
	if !runtimeRE.MatchString(rt) {
		return invalidParam(fmt.Sprintf("Value %s at 'runtime' failed to satisfy constraint: Hearth runs Python 3 functions; "+
			"use a python3.x runtime (the worker runs its base image's Python 3)", rt))
	}
	return nil
}

func (s *Server) createFunction(w http.ResponseWriter, r *http.Request, c *call) {
	var req createRequest
	if e := decode(c, &req); e != nil {
		s.fail(w, c, e)
		return
	}
	m := nameRE.FindStringSubmatch(req.FunctionName)
	if m == nil || m[2] != "" {
		s.fail(w, c, invalidParam(fmt.Sprintf("FunctionName %q: want 1 to 64 letters, digits, - and _ (or the function's ARN, without a qualifier)", req.FunctionName)))
		return
	}
	name := m[1]
	if e := checkRuntime(req.Runtime); e != nil {
		s.fail(w, c, e)
		return
	}
	if req.PackageType != "" && req.PackageType != "Zip" {
		s.fail(w, c, invalidParam("PackageType "+req.PackageType+": Hearth functions are zip packages"))
		return
	}
	if len(req.Layers) > 0 {
		s.fail(w, c, invalidParam("Layers are not supported: put the code in the zip, and its requirements in requirements.txt"))
		return
	}
	if e := req.Code.check(); e != nil {
		s.fail(w, c, e)
		return
	}
	h, e := specHandler(req.Handler)
	if e != nil {
		s.fail(w, c, e)
		return
	}
	st := settings{Handler: &h, MemoryMB: req.MemorySize, TimeoutS: req.Timeout}
	if req.Environment != nil {
		st.Env = &req.Environment.Variables
	}
	if req.EphemeralStorage != nil {
		st.TmpMB = &req.EphemeralStorage.Size
	}
	data, err := rewriteZip(req.Code.ZipFile, st, true)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	unlock := s.lock(name)
	defer unlock()
	if _, err := s.reg.Get(name); err == nil {
		s.fail(w, c, newError(http.StatusConflict, typeConflict, "Function already exist: "+name))
		return
	} else if !errors.Is(err, registry.ErrNotFound) {
		s.fail(w, c, err)
		return
	}
	fn, err := s.deployZip(r.Context(), name, data)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	sum := sha256.Sum256(req.Code.ZipFile)
	err = putMeta(s.db, name, meta{Runtime: req.Runtime, Role: req.Role, Description: req.Description, Handler: req.Handler,
		Revision: fn.Revision, CodeSha256: base64.StdEncoding.EncodeToString(sum[:]), CodeSize: int64(len(req.Code.ZipFile))})
	if err != nil {
		s.fail(w, c, err)
		return
	}
	s.writeConfiguration(w, c, http.StatusCreated, fn)
}

func (s *Server) writeConfiguration(w http.ResponseWriter, c *call, code int, fn registry.Function) {
	cfg, err := s.configuration(c, fn)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	writeJSON(w, code, cfg)
}

// lookup returns the function r names.
func (s *Server) lookup(r *http.Request, c *call) (registry.Function, error) {
	name, e := s.functionName(r, c)
	if e != nil {
		return registry.Function{}, e
	}
	fn, err := s.reg.Get(name)
	if errors.Is(err, registry.ErrNotFound) {
		return fn, notFound("Function not found: " + s.arn(c, name))
	}
	return fn, err
}

func (s *Server) getConfiguration(w http.ResponseWriter, r *http.Request, c *call) {
	fn, err := s.lookup(r, c)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	s.writeConfiguration(w, c, http.StatusOK, fn)
}

func (s *Server) getFunction(w http.ResponseWriter, r *http.Request, c *call) {
	fn, err := s.lookup(r, c)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	cfg, err := s.configuration(c, fn)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	// Hearth keeps the code on the worker and hands out no download
	// location.
	writeJSON(w, http.StatusOK, map[string]any{
		"Configuration": cfg,
		"Code":          map[string]string{"RepositoryType": "S3"},
	})
}

// listFunctions pages through the functions by name: Marker is the last
// name of the previous page.
func (s *Server) listFunctions(w http.ResponseWriter, r *http.Request, c *call) {
	q := r.URL.Query()
	maxItems := 50
	if v := q.Get("MaxItems"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			s.fail(w, c, invalidParam("MaxItems must be an integer from 1 to 10000"))
			return
		}
		maxItems = n
	}
	marker := q.Get("Marker")
	fns, err := s.reg.List()
	if err != nil {
		s.fail(w, c, err)
		return
	}
	out := []functionConfiguration{}
	next := ""
	for _, fn := range fns {
		if marker != "" && fn.Name <= marker {
			continue
		}
		if len(out) == maxItems {
			next = out[len(out)-1].FunctionName
			break
		}
		cfg, err := s.configuration(c, fn)
		if err != nil {
			s.fail(w, c, err)
			return
		}
		out = append(out, cfg)
	}
	resp := map[string]any{"Functions": out}
	if next != "" {
		resp["NextMarker"] = next
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) deleteFunction(w http.ResponseWriter, r *http.Request, c *call) {
	name, e := s.functionName(r, c)
	if e != nil {
		s.fail(w, c, e)
		return
	}
	unlock := s.lock(name)
	defer unlock()
	if err := s.reg.Delete(name); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			err = notFound("Function not found: " + s.arn(c, name))
		}
		s.fail(w, c, err)
		return
	}
	s.wk.Retire(name, "")
	if err := deleteMeta(s.db, name); err != nil {
		s.cfg.Logger.Warn("lambda API", "err", err)
	}
	s.cfg.Logger.Info("deleted through the Lambda API", "function", name)
	w.WriteHeader(http.StatusNoContent)
}

// checkRevision answers PreconditionFailedException when the client
// asked for another revision than the current one.
func checkRevision(want string, fn registry.Function) *awsError {
	if want != "" && want != revisionID(fn.Revision) {
		return newError(http.StatusPreconditionFailed, typePrecondition,
			"The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id")
	}
	return nil
}

// currentSettings are fn's Lambda settings, which an update of its code
// keeps.
func currentSettings(fn registry.Function) settings {
	sp := fn.Spec
	env := sp.Env
	if env == nil {
		env = map[string]string{}
	}
	return settings{Handler: &sp.Handler, MemoryMB: &sp.MemoryMB, TimeoutS: &sp.TimeoutS, Env: &env, TmpMB: &sp.TmpMB}
}

type updateCodeRequest struct {
	functionCode
	RevisionID string `json:"RevisionId"`
	DryRun     bool   `json:"DryRun"`
}

func (s *Server) updateCode(w http.ResponseWriter, r *http.Request, c *call) {
	var req updateCodeRequest
	if e := decode(c, &req); e != nil {
		s.fail(w, c, e)
		return
	}
	if e := req.functionCode.check(); e != nil {
		s.fail(w, c, e)
		return
	}
	name, e := s.functionName(r, c)
	if e != nil {
		s.fail(w, c, e)
		return
	}
	unlock := s.lock(name)
	defer unlock()
	fn, err := s.lookup(r, c)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	if e := checkRevision(req.RevisionID, fn); e != nil {
		s.fail(w, c, e)
		return
	}
	// The code changes, the configuration stays (as on Lambda).
	data, err := rewriteZip(req.ZipFile, currentSettings(fn), false)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	if req.DryRun {
		s.writeConfiguration(w, c, http.StatusOK, fn)
		return
	}
	m, _, err := getMeta(s.db, name)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	if m.Revision != fn.Revision {
		m.Handler = "" // the settings of a revision deployed through /v1
	}
	nfn, err := s.deployZip(r.Context(), name, data)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	sum := sha256.Sum256(req.ZipFile)
	m.Revision, m.CodeSha256, m.CodeSize = nfn.Revision, base64.StdEncoding.EncodeToString(sum[:]), int64(len(req.ZipFile))
	if m.Runtime == "" {
		m.Runtime = s.cfg.Runtime
	}
	if err := putMeta(s.db, name, m); err != nil {
		s.fail(w, c, err)
		return
	}
	s.writeConfiguration(w, c, http.StatusOK, nfn)
}

type updateConfigRequest struct {
	Role        *string `json:"Role"`
	Handler     *string `json:"Handler"`
	Description *string `json:"Description"`
	Timeout     *int    `json:"Timeout"`
	MemorySize  *int    `json:"MemorySize"`
	Environment *struct {
		Variables map[string]string `json:"Variables"`
	} `json:"Environment"`
	Runtime          *string           `json:"Runtime"`
	RevisionID       string            `json:"RevisionId"`
	Layers           []string          `json:"Layers"`
	EphemeralStorage *ephemeralStorage `json:"EphemeralStorage"`
}

func (s *Server) updateConfiguration(w http.ResponseWriter, r *http.Request, c *call) {
	var req updateConfigRequest
	if e := decode(c, &req); e != nil {
		s.fail(w, c, e)
		return
	}
	if req.Runtime != nil {
		if e := checkRuntime(*req.Runtime); e != nil {
			s.fail(w, c, e)
			return
		}
	}
	if len(req.Layers) > 0 {
		s.fail(w, c, invalidParam("Layers are not supported: put the code in the zip, and its requirements in requirements.txt"))
		return
	}
	name, e := s.functionName(r, c)
	if e != nil {
		s.fail(w, c, e)
		return
	}
	unlock := s.lock(name)
	defer unlock()
	fn, release, err := s.reg.Lease(name)
	if errors.Is(err, registry.ErrNotFound) {
		err = notFound("Function not found: " + s.arn(c, name))
	}
	if err != nil {
		s.fail(w, c, err)
		return
	}
	defer release()
	if e := checkRevision(req.RevisionID, fn); e != nil {
		s.fail(w, c, e)
		return
	}
	m, _, err := getMeta(s.db, name)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	st := settings{MemoryMB: req.MemorySize, TimeoutS: req.Timeout}
	if req.Handler != nil {
		h, e := specHandler(*req.Handler)
		if e != nil {
			s.fail(w, c, e)
			return
		}
		st.Handler = &h
	}
	if req.Environment != nil {
		st.Env = &req.Environment.Variables
	}
	if req.EphemeralStorage != nil {
		st.TmpMB = &req.EphemeralStorage.Size
	}
	nfn := fn
	if st != (settings{}) {
		if nfn, err = s.redeploy(r.Context(), fn, st); err != nil {
			s.fail(w, c, err)
			return
		}
	}
	// The zip's hash and size stay: the code is the same.
	if m.Revision == fn.Revision {
		m.Revision = nfn.Revision
	} else {
		m.Handler = ""
	}
	if req.Handler != nil {
		m.Handler = *req.Handler
	}
	if m.Runtime == "" {
		m.Runtime = s.cfg.Runtime
	}
	if req.Runtime != nil {
		m.Runtime = *req.Runtime
	}
	if req.Role != nil {
		m.Role = *req.Role
	}
	if req.Description != nil {
		m.Description = *req.Description
	}
	if err := putMeta(s.db, name, m); err != nil {
		s.fail(w, c, err)
		return
	}
	s.writeConfiguration(w, c, http.StatusOK, nfn)
}

// redeploy deploys fn's code again with st in its function.yaml. The
// bytecode caches the deploy made are left out: the next deploy makes
// them again.
func (s *Server) redeploy(ctx context.Context, fn registry.Function, st settings) (registry.Function, error) {
	tmp, err := os.MkdirTemp(s.cfg.DataDir, "hearth-upload-*")
	if err != nil {
		return fn, err
	}
	defer os.RemoveAll(tmp)
	code := filepath.Join(tmp, "code")
	if err := archive.CopyDir(fn.CodeDir, code, archive.Limits{MaxBytes: s.cfg.MaxArchive}); err != nil {
		return fn, fmt.Errorf("copying the function's code: %w", err)
	}
	err = filepath.WalkDir(code, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "__pycache__" {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return fn, fmt.Errorf("copying the function's code: %w", err)
	}
	conf := filepath.Join(code, function.ConfigFile)
	old, err := os.ReadFile(conf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fn, err
	}
	data, err := st.applyTo(old)
	if err != nil {
		return fn, err
	}
	if err := os.WriteFile(conf, data, 0o644); err != nil {
		return fn, err
	}
	nfn, err := s.reg.Deploy(ctx, fn.Name, registry.Source{Dir: code})
	if err != nil {
		s.cfg.Logger.Warn("lambda API: configuration update failed", "function", fn.Name, "err", err)
		return fn, err
	}
	s.wk.Retire(nfn.Name, nfn.Revision)
	s.cfg.Logger.Info("configuration updated through the Lambda API", "function", nfn.Name, "revision", nfn.Revision)
	return nfn, nil
}
