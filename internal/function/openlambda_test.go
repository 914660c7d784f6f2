package function

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestOpenLambdaConfig(t *testing.T) {
	def := func(h string, env map[string]string) Spec {
		return Spec{Handler: h, MemoryMB: DefaultMemoryMB, TimeoutS: DefaultTimeoutS,
			MaxConcurrency: DefaultMaxConcurrency, Network: NetworkIsolated, Env: env, TmpMB: DefaultTmpMB}
	}
	tests := []struct {
		name  string
		files map[string]string
		want  Spec
		warns []string // each warning must contain its string, in order
	}{
		{"environment", map[string]string{"f.py": "", "ol.yaml": "environment:\n  GREETING: hi\n  N: 3\n"},
			def("f.f", map[string]string{"GREETING": "hi", "N": "3"}), nil},
		{"empty", map[string]string{"f.py": "", "ol.yaml": "# nothing\n"}, def("f.f", nil), nil},
		{"every ignored key", map[string]string{"f.py": "", "ol.yaml": `triggers:
  http:
    - method: GET
  cron:
    - schedule: "*/5 * * * *"
  kafka:
    - bootstrap_servers: [localhost:9092]
      topics: [t]
  sqs: []
environment: {A: b}
reuse-sandbox: false
memory: 512
`}, def("f.f", map[string]string{"A": "b"}), []string{
			"ol.yaml: triggers.http: ignored", "ol.yaml: triggers.cron: ignored", "ol.yaml: triggers.kafka: ignored",
			"ol.yaml: triggers.sqs: ignored", "ol.yaml: reuse-sandbox: ignored", "ol.yaml: memory: ignored"}},
		{"entry file picks the handler", map[string]string{"app.py": "", "ol.yaml": "environment: {OL_ENTRY_FILE: app.py}\n"},
			def("app.f", map[string]string{"OL_ENTRY_FILE": "app.py"}), nil},
		{"entry file in a package", map[string]string{"pkg/app.py": "", "f.py": "", "ol.yaml": "environment: {OL_ENTRY_FILE: pkg/app.py}\n"},
			def("pkg.app.f", map[string]string{"OL_ENTRY_FILE": "pkg/app.py"}), nil},
		{"wsgi app", map[string]string{"app.py": "", "ol.yaml": "environment: {OL_ENTRY_FILE: app.py, OL_WSGI_ENTRY: app}\n"},
			def("app.f", map[string]string{"OL_ENTRY_FILE": "app.py", "OL_WSGI_ENTRY": "app"}),
			[]string{"environment.OL_WSGI_ENTRY: WSGI and ASGI apps are not supported"}},
		{"function.yaml wins", map[string]string{"app.py": "", "main.py": "",
			"function.yaml": "handler: main.run\nenv: {A: mine, C: c}\n",
			"ol.yaml":       "environment: {OL_ENTRY_FILE: app.py, A: theirs, B: b, C: c}\n"},
			def("main.run", map[string]string{"OL_ENTRY_FILE": "app.py", "A": "mine", "B": "b", "C": "c"}),
			[]string{"ol.yaml: environment.A: ignored: function.yaml's env sets it",
				"ol.yaml: environment.OL_ENTRY_FILE: not used to pick the handler: function.yaml sets handler main.run"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warns, err := Load(writeTree(t, tt.files))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Load =\n %+v\nwant\n %+v", got, tt.want)
			}
			if len(warns) != len(tt.warns) {
				t.Fatalf("warnings %q, want %d like %q", warns, len(tt.warns), tt.warns)
			}
			for i, w := range tt.warns {
				if !strings.Contains(warns[i], w) {
					t.Errorf("warning %d = %q, want it to contain %q", i, warns[i], w)
				}
			}
		})
	}
}

func TestOpenLambdaConfigErrors(t *testing.T) {
	tests := []struct {
		name, ol, msg string
	}{
		{"bad yaml", "environment: [unclosed", "ol.yaml"},
		{"not a mapping", "- a\n- b\n", "want a mapping"},
		{"environment not a map", "environment: [a, b]", "ol.yaml: environment"},
		{"environment nested", "environment: {A: {b: c}}", "ol.yaml: environment"},
		{"bad variable", "environment: {\"A-B\": x}", "A-B"},
		{"reserved variable", "environment: {HEARTH_X: x}", "reserved"},
		{"entry file not .py", "environment: {OL_ENTRY_FILE: app}", "OL_ENTRY_FILE"},
		{"entry file traversal", "environment: {OL_ENTRY_FILE: ../app.py}", "identifier"},
		{"entry file missing", "environment: {OL_ENTRY_FILE: nope.py}", "nope.py"},
		{"two documents", "environment: {A: b}\n---\nenvironment: {A: c}\n", "more than one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(writeTree(t, map[string]string{"f.py": "", "ol.yaml": tt.ol}))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load error = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
		})
	}
}
