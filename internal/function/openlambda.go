package function

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// OpenLambdaFile is OpenLambda's per-function configuration, read so that
// an OpenLambda function deploys unchanged (see
// open-lambda/open-lambda docs/worker/lambda-config.md).
const OpenLambdaFile = "ol.yaml"

// OpenLambda's environment variables that choose the entry point.
const (
	olEntryFile = "OL_ENTRY_FILE"
	olWSGIEntry = "OL_WSGI_ENTRY"
	olASGIEntry = "OL_ASGI_ENTRY"
)

// olConfig is what of ol.yaml maps onto a Spec.
type olConfig struct {
	// Env is ol.yaml's environment.
	Env map[string]string
	// Module is the handler module OL_ENTRY_FILE names, "" if none.
	Module string
}

// parseOpenLambda reads ol.yaml content. environment becomes the
// function's environment, and OL_ENTRY_FILE (OpenLambda's entry file,
// f.py by default) picks the handler module, whose function OpenLambda
// calls f. Every other key has no Hearth equivalent: each gets a warning
// that says so, in the file's order. Malformed content is an ErrInvalid
// error, as OpenLambda refuses it too.
func parseOpenLambda(data []byte) (olConfig, []string, error) {
	var cfg olConfig
	if len(bytes.TrimSpace(data)) == 0 {
		return cfg, nil, nil
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return cfg, nil, fmt.Errorf("%s: %s: %w", OpenLambdaFile, yamlMsg(err), ErrInvalid)
	}
	if len(doc.Content) == 0 {
		return cfg, nil, nil
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return cfg, nil, fmt.Errorf("%s: line %d: want a mapping of settings: %w", OpenLambdaFile, top.Line, ErrInvalid)
	}
	var warns []string
	warn := func(key, why string) {
		warns = append(warns, fmt.Sprintf("%s: %s: ignored: %s", OpenLambdaFile, key, why))
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		switch k.Value {
		case "environment":
			env := map[string]string{}
			if err := v.Decode(&env); err != nil {
				return cfg, nil, fmt.Errorf("%s: environment: %s: %w", OpenLambdaFile, yamlMsg(err), ErrInvalid)
			}
			if err := checkEnv(OpenLambdaFile+": environment", env); err != nil {
				return cfg, nil, err
			}
			if len(env) > 0 {
				cfg.Env = env
			}
			if f, ok := env[olEntryFile]; ok {
				m, err := entryModule(f)
				if err != nil {
					return cfg, nil, err
				}
				cfg.Module = m
			}
			for _, name := range []string{olWSGIEntry, olASGIEntry} {
				if _, ok := env[name]; ok {
					warns = append(warns, fmt.Sprintf("%s: environment.%s: WSGI and ASGI apps are not supported: the variable is set, but Hearth calls the handler with each event", OpenLambdaFile, name))
				}
			}
		case "triggers":
			if v.Kind != yaml.MappingNode {
				warn("triggers", "Hearth functions are invoked over HTTP (POST /run/NAME)")
				continue
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				switch kind := v.Content[j].Value; kind {
				case "http":
					warn("triggers.http", "Hearth does not restrict HTTP methods per function; it invokes with POST /run/NAME and POST /v1/functions/NAME/invoke")
				case "cron":
					warn("triggers.cron", "Hearth has no scheduled invocations")
				case "kafka":
					warn("triggers.kafka", "Hearth has no Kafka triggers")
				default:
					warn("triggers."+kind, "not a trigger Hearth knows")
				}
			}
		case "reuse-sandbox":
			warn("reuse-sandbox", "Hearth reuses warm sandboxes for every function; the worker's no_warm_cache setting turns that off for all of them")
		default:
			warn(k.Value, "not an OpenLambda setting Hearth knows")
		}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return cfg, nil, fmt.Errorf("%s: more than one YAML document: %w", OpenLambdaFile, ErrInvalid)
	}
	return cfg, warns, nil
}

// entryModule turns OL_ENTRY_FILE ("app.py", "pkg/app.py") into a module
// name ("app", "pkg.app").
func entryModule(file string) (string, error) {
	m, ok := strings.CutSuffix(file, ".py")
	if !ok || m == "" {
		return "", fmt.Errorf("%s: environment.%s: %q does not name a .py file: %w", OpenLambdaFile, olEntryFile, file, ErrInvalid)
	}
	m = strings.ReplaceAll(strings.TrimPrefix(m, "./"), "/", ".")
	for _, part := range strings.Split(m, ".") {
		if !identRE.MatchString(part) {
			return "", fmt.Errorf("%s: environment.%s: %q: %q is not a Python identifier: %w", OpenLambdaFile, olEntryFile, file, part, ErrInvalid)
		}
	}
	return m, nil
}
