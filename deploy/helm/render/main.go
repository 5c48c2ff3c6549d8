// Command render is a stand-in for `helm template`, so the Weft chart can be
// rendered and tested where no helm binary exists (CI installs only Debian
// packages). It does what Helm does on top of Go's text/template and sprig,
// for the features charts like ours use:
//
//   - values: the chart's values.yaml, deep-merged with -f files and then
//     --set / --set-string overrides (a null override deletes a key);
//     numbers from YAML files are float64 and integers from --set are int64,
//     as in Helm, so a template that forgets `int` fails here as it would there
//   - .Release, .Chart (from Chart.yaml), .Capabilities.KubeVersion and
//     .Capabilities.APIVersions.Has, .Template.Name and .Template.BasePath
//   - include, tpl, required, toYaml, fromYaml, toJson, fromJson, and lookup
//     (always empty, as under `helm template`); env and expandenv are removed
//   - Chart.yaml checks from `helm lint`: apiVersion v2, a name, a SemVer
//     version, and kubeVersion against --kube-version
//
// Every template not starting with "_" is rendered, NOTES.txt only with
// --notes, and the output is one multi-document YAML stream on stdout, each
// document headed by "# Source: <chart>/templates/<file>" like Helm's.
//
// Build it against Debian's packages (golang-go,
// golang-github-masterminds-sprig-dev, golang-gopkg-yaml.v2-dev) in GOPATH
// mode, with no module proxy:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o render ./deploy/helm/render
//
// Debian installs sprig v3 without the /v3 directory, which is why it is
// imported here by its GOPATH path.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var valueFiles, sets, setStrings listFlag
	name := flag.String("name", "release-name", "release name (.Release.Name)")
	namespace := flag.String("namespace", "default", "release namespace (.Release.Namespace)")
	kubeVersion := flag.String("kube-version", "v1.34.0", "Kubernetes version for .Capabilities.KubeVersion")
	strict := flag.Bool("strict", false, "fail on a reference to a missing value (like `helm lint --strict`)")
	notes := flag.Bool("notes", false, "render only NOTES.txt, as `helm install` prints it")
	flag.Var(&valueFiles, "f", "a values file merged over values.yaml (repeatable)")
	flag.Var(&valueFiles, "values", "same as -f")
	flag.Var(&sets, "set", "key=value overrides, comma separated (repeatable)")
	flag.Var(&setStrings, "set-string", "like --set, but every value is a string (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: render [flags] CHART_DIR\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	opts := options{
		chartDir: flag.Arg(0), release: *name, namespace: *namespace, kubeVersion: *kubeVersion,
		strict: *strict, notes: *notes, valueFiles: valueFiles, sets: sets, setStrings: setStrings,
	}
	out, err := render(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

type options struct {
	chartDir, release, namespace, kubeVersion string
	strict, notes                             bool
	valueFiles, sets, setStrings              []string
}

// chartMeta is the part of Chart.yaml templates read, named as Helm's
// chart.Metadata so `.Chart.AppVersion` and friends work.
type chartMeta struct {
	APIVersion  string   `yaml:"apiVersion"`
	Name        string   `yaml:"name"`
	Version     string   `yaml:"version"`
	AppVersion  string   `yaml:"appVersion"`
	KubeVersion string   `yaml:"kubeVersion"`
	Description string   `yaml:"description"`
	Type        string   `yaml:"type"`
	Home        string   `yaml:"home"`
	Keywords    []string `yaml:"keywords"`
}

type kubeVersion struct{ Version, Major, Minor, GitVersion string }

func (k kubeVersion) String() string { return k.Version }

// apiVersions answers `.Capabilities.APIVersions.Has`; with no cluster to ask,
// everything is assumed served, as `helm template` assumes of the built-ins.
type apiVersions []string

func (apiVersions) Has(string) bool { return true }

type capabilities struct {
	KubeVersion kubeVersion
	APIVersions apiVersions
}

func render(o options) (string, error) {
	meta, err := loadChart(o.chartDir)
	if err != nil {
		return "", err
	}
	kv, err := checkKubeVersion(meta, o.kubeVersion)
	if err != nil {
		return "", err
	}
	values, err := loadValues(o)
	if err != nil {
		return "", err
	}

	files, err := templateFiles(o.chartDir)
	if err != nil {
		return "", err
	}
	root := template.New("gotpl")
	if o.strict {
		root.Option("missingkey=error")
	} else {
		root.Option("missingkey=zero")
	}
	root.Funcs(funcMap(root))
	for _, f := range files {
		text, err := os.ReadFile(filepath.Join(o.chartDir, "templates", f))
		if err != nil {
			return "", err
		}
		if _, err := root.New(meta.Name + "/templates/" + f).Parse(string(text)); err != nil {
			return "", fmt.Errorf("parse error in %s: %w", f, err)
		}
	}

	var out strings.Builder
	for _, f := range files {
		isNotes := f == "NOTES.txt"
		if strings.HasPrefix(filepath.Base(f), "_") || isNotes != o.notes {
			continue
		}
		name := meta.Name + "/templates/" + f
		top := map[string]interface{}{
			"Values": values,
			"Release": map[string]interface{}{
				"Name": o.release, "Namespace": o.namespace, "Service": "Helm",
				"IsInstall": true, "IsUpgrade": false, "Revision": 1,
			},
			"Chart":        meta,
			"Capabilities": capabilities{KubeVersion: kv},
			"Template":     map[string]interface{}{"Name": name, "BasePath": meta.Name + "/templates"},
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, top); err != nil {
			return "", fmt.Errorf("render error in %s: %w", f, err)
		}
		// Helm prints missing values as nothing rather than "<no value>".
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if isNotes {
			out.WriteString(text)
			continue
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		if err := checkYAML(text); err != nil {
			return "", fmt.Errorf("YAML parse error on %s: %w", name, err)
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s", name, text)
		if !strings.HasSuffix(text, "\n") {
			out.WriteString("\n")
		}
	}
	return out.String(), nil
}

// checkYAML refuses a template whose output is not YAML, as Helm does,
// naming the template rather than leaving a reader of the stream to guess.
func checkYAML(text string) error {
	for i, doc := range strings.Split("\n"+text, "\n---") {
		var v interface{}
		if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
	}
	return nil
}

func loadChart(dir string) (chartMeta, error) {
	var meta chartMeta
	data, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return meta, err
	}
	// Fields this program does not model (maintainers, icon, ...) are ignored.
	if err := yaml.Unmarshal(data, &meta); err != nil {
		return meta, fmt.Errorf("Chart.yaml: %w", err)
	}
	if meta.APIVersion != "v2" {
		return meta, fmt.Errorf("Chart.yaml: apiVersion is %q, want v2", meta.APIVersion)
	}
	if meta.Name == "" {
		return meta, errors.New("Chart.yaml: name is required")
	}
	if _, err := semver.StrictNewVersion(meta.Version); err != nil {
		return meta, fmt.Errorf("Chart.yaml: version %q is not SemVer 2: %w", meta.Version, err)
	}
	if meta.Type != "" && meta.Type != "application" && meta.Type != "library" {
		return meta, fmt.Errorf("Chart.yaml: type %q is neither application nor library", meta.Type)
	}
	return meta, nil
}

// checkKubeVersion builds .Capabilities.KubeVersion and, like `helm
// template`, refuses a chart whose kubeVersion constraint it does not meet.
func checkKubeVersion(meta chartMeta, version string) (kubeVersion, error) {
	v, err := semver.NewVersion(version)
	if err != nil {
		return kubeVersion{}, fmt.Errorf("--kube-version %q: %w", version, err)
	}
	kv := kubeVersion{
		Version: "v" + v.String(), Major: strconv.FormatUint(v.Major(), 10),
		Minor: strconv.FormatUint(v.Minor(), 10), GitVersion: "v" + v.String(),
	}
	if meta.KubeVersion != "" {
		c, err := semver.NewConstraint(meta.KubeVersion)
		if err != nil {
			return kv, fmt.Errorf("Chart.yaml: kubeVersion %q: %w", meta.KubeVersion, err)
		}
		if !c.Check(v) {
			return kv, fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", meta.KubeVersion, kv.Version)
		}
	}
	return kv, nil
}

// templateFiles lists templates/ recursively, sorted, as paths relative to it.
func templateFiles(chartDir string) ([]string, error) {
	base := filepath.Join(chartDir, "templates")
	var files []string
	err := filepath.Walk(base, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, err := filepath.Rel(base, path)
		files = append(files, filepath.ToSlash(rel))
		return err
	})
	sort.Strings(files)
	return files, err
}

// funcMap is sprig's functions plus Helm's own. include and tpl need the
// template set, so they close over root.
func funcMap(root *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	// Helm removes these so a chart renders the same on every machine.
	delete(f, "env")
	delete(f, "expandenv")

	includeDepth := 0
	f["include"] = func(name string, data interface{}) (string, error) {
		// Helm bounds recursion the same way, rather than overflow the stack.
		if includeDepth > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		includeDepth++
		defer func() { includeDepth-- }()
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return nil, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	f["toYaml"] = func(v interface{}) string {
		data, err := yaml.Marshal(v)
		if err != nil {
			return "" // Helm swallows the error the same way
		}
		return strings.TrimSuffix(string(data), "\n")
	}
	f["fromYaml"] = func(s string) map[string]interface{} {
		var v interface{}
		if err := yaml.Unmarshal([]byte(s), &v); err != nil {
			return map[string]interface{}{"Error": err.Error()}
		}
		m, _ := normalize(v).(map[string]interface{})
		if m == nil {
			m = map[string]interface{}{}
		}
		return m
	}
	// Under `helm template` there is no cluster, so lookup finds nothing.
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	return f
}

// loadValues merges values.yaml, the -f files, then the --set flags.
func loadValues(o options) (map[string]interface{}, error) {
	values, err := readValuesFile(filepath.Join(o.chartDir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	for _, path := range o.valueFiles {
		override, err := readValuesFile(path)
		if err != nil {
			return nil, err
		}
		values = merge(values, override)
	}
	for _, s := range o.sets {
		if err := applySet(values, s, false); err != nil {
			return nil, fmt.Errorf("--set %q: %w", s, err)
		}
	}
	for _, s := range o.setStrings {
		if err := applySet(values, s, true); err != nil {
			return nil, fmt.Errorf("--set-string %q: %w", s, err)
		}
	}
	return values, nil
}

func readValuesFile(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v interface{}
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if v == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := normalize(v).(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: values must be a map", path)
	}
	return m, nil
}

// normalize turns yaml.v2's map[interface{}]interface{} into the
// map[string]interface{} Helm's values are, and every number into float64:
// Helm reads values through JSON, so that is what templates see.
func normalize(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, val := range t {
			m[fmt.Sprint(k)] = normalize(val)
		}
		return m
	case []interface{}:
		for i := range t {
			t[i] = normalize(t[i])
		}
		return t
	case int:
		return float64(t)
	case int64:
		return float64(t)
	case uint64:
		return float64(t)
	default:
		return v
	}
}

// merge returns base with override laid over it: maps merge key by key,
// anything else is replaced, and a null override deletes the key.
func merge(base, override map[string]interface{}) map[string]interface{} {
	for k, ov := range override {
		if ov == nil {
			delete(base, k)
			continue
		}
		bm, bok := base[k].(map[string]interface{})
		om, ook := ov.(map[string]interface{})
		if bok && ook {
			base[k] = merge(bm, om)
		} else {
			base[k] = ov
		}
	}
	return base
}

// applySet applies one --set argument: comma-separated key=value pairs whose
// keys are dotted paths with optional list indexes (a.b[0].c), backslash
// escaping "." "," and "=". Values are typed as Helm types them: true,
// false, null, and int64 for integers; `{a,b}` is a list of strings.
func applySet(values map[string]interface{}, arg string, asString bool) error {
	for _, pair := range splitUnescaped(arg, ',', true) {
		eq := indexUnescaped(pair, '=')
		if eq < 0 {
			return fmt.Errorf("key %q has no value", pair)
		}
		key, raw := pair[:eq], unescape(pair[eq+1:])
		var val interface{}
		if !asString && strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}") {
			list := []interface{}{}
			if inner := raw[1 : len(raw)-1]; inner != "" {
				for _, item := range strings.Split(inner, ",") {
					list = append(list, typed(item, false))
				}
			}
			val = list
		} else {
			val = typed(raw, asString)
		}
		if err := setPath(values, splitUnescaped(key, '.', false), val); err != nil {
			return err
		}
	}
	return nil
}

func typed(s string, asString bool) interface{} {
	if asString {
		return s
	}
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	// Like Helm, "0"-led numbers other than 0 stay strings (they may be IDs).
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && (s == "0" || !strings.HasPrefix(s, "0")) {
		return n
	}
	return s
}

func setPath(m map[string]interface{}, path []string, val interface{}) error {
	seg := unescape(path[0])
	name, index, hasIndex, err := splitIndex(seg)
	if err != nil {
		return err
	}
	last := len(path) == 1
	if !hasIndex {
		if last {
			if val == nil {
				delete(m, name)
			} else {
				m[name] = val
			}
			return nil
		}
		child, ok := m[name].(map[string]interface{})
		if !ok {
			child = map[string]interface{}{}
			m[name] = child
		}
		return setPath(child, path[1:], val)
	}
	list, _ := m[name].([]interface{})
	for len(list) <= index {
		list = append(list, nil)
	}
	if last {
		list[index] = val
	} else {
		child, ok := list[index].(map[string]interface{})
		if !ok {
			child = map[string]interface{}{}
			list[index] = child
		}
		if err := setPath(child, path[1:], val); err != nil {
			return err
		}
	}
	m[name] = list
	return nil
}

// splitIndex parses "name[3]".
func splitIndex(seg string) (string, int, bool, error) {
	open := strings.IndexByte(seg, '[')
	if open < 0 || !strings.HasSuffix(seg, "]") {
		return seg, 0, false, nil
	}
	i, err := strconv.Atoi(seg[open+1 : len(seg)-1])
	if err != nil || i < 0 {
		return "", 0, false, fmt.Errorf("bad list index in %q", seg)
	}
	return seg[:open], i, true, nil
}

// splitUnescaped splits s on sep where sep is not backslash-escaped (and,
// with braces, not inside {...}); escapes are kept for later.
func splitUnescaped(s string, sep byte, braces bool) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			i++
		case braces && s[i] == '{':
			depth++
		case braces && s[i] == '}' && depth > 0:
			depth--
		case s[i] == sep && depth == 0:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

func indexUnescaped(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
		} else if s[i] == c {
			return i
		}
	}
	return -1
}

func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
