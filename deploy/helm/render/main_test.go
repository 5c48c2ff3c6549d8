package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSetTypesValuesAsHelmDoes(t *testing.T) {
	values := map[string]interface{}{"keep": "x", "drop": "y"}
	for _, s := range []string{
		"a.b=5,a.c=true,a.d=007,a.e=1.5,drop=null",
		`list[1].name=second,dotted\.key=v,list0={x,y}`,
	} {
		if err := applySet(values, s, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := applySet(values, "s=5", true); err != nil {
		t.Fatal(err)
	}
	want := map[string]interface{}{
		"keep":       "x",
		"a":          map[string]interface{}{"b": int64(5), "c": true, "d": "007", "e": "1.5"},
		"list":       []interface{}{nil, map[string]interface{}{"name": "second"}},
		"dotted.key": "v",
		"list0":      []interface{}{"x", "y"},
		"s":          "5",
	}
	if !reflect.DeepEqual(values, want) {
		t.Fatalf("got %#v\nwant %#v", values, want)
	}
}

func TestMergeIsDeepAndNullDeletes(t *testing.T) {
	base := map[string]interface{}{
		"server": map[string]interface{}{"replicas": 3.0, "storage": map[string]interface{}{"size": "10Gi"}},
		"gone":   "x",
	}
	override := map[string]interface{}{
		"server": map[string]interface{}{"storage": map[string]interface{}{"storageClass": "fast"}},
		"gone":   nil,
	}
	got := merge(base, override)
	want := map[string]interface{}{
		"server": map[string]interface{}{"replicas": 3.0, "storage": map[string]interface{}{"size": "10Gi", "storageClass": "fast"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
}

// A tiny chart through the whole pipeline: helpers, include, tpl, toYaml,
// required, values files, and what is and is not rendered.
func TestRenderChart(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Chart.yaml", "apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: \"9\"\nkubeVersion: \">=1.29.0-0\"\n")
	write("values.yaml", "count: 2\nlabels: {a: b}\ngreeting: \"hi {{ .Release.Name }}\"\nneed: \"\"\n")
	write("over.yaml", "need: here\n")
	write("templates/_h.tpl", `{{- define "demo.name" -}}{{ .Chart.Name }}-{{ .Release.Name }}{{- end -}}`)
	write("templates/cm.yaml", `kind: ConfigMap
name: {{ include "demo.name" . }}
count: {{ int .Values.count }}
raw: {{ .Values.count }}
greeting: {{ tpl .Values.greeting . }}
need: {{ required "need is required" .Values.need }}
kube: {{ .Capabilities.KubeVersion.Version }}
labels:
  {{- toYaml .Values.labels | nindent 2 }}
`)
	write("templates/empty.yaml", "{{- if false }}x{{ end }}\n")
	write("templates/NOTES.txt", "notes for {{ .Release.Name }}\n")

	o := options{chartDir: dir, release: "r", namespace: "ns", kubeVersion: "1.30.1", strict: true,
		valueFiles: []string{filepath.Join(dir, "over.yaml")}}
	out, err := render(o)
	if err != nil {
		t.Fatal(err)
	}
	want := "---\n# Source: demo/templates/cm.yaml\nkind: ConfigMap\nname: demo-r\ncount: 2\nraw: 2\n" +
		"greeting: hi r\nneed: here\nkube: v1.30.1\nlabels:\n  a: b\n"
	if out != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}

	o.notes = true
	if out, err := render(o); err != nil || out != "notes for r\n" {
		t.Fatalf("notes: %q, %v", out, err)
	}

	o.notes, o.valueFiles = false, nil
	if _, err := render(o); err == nil || !strings.Contains(err.Error(), "need is required") {
		t.Fatalf("want the required error, got %v", err)
	}

	o.kubeVersion = "1.28.0"
	if _, err := render(o); err == nil || !strings.Contains(err.Error(), "incompatible") {
		t.Fatalf("want the kubeVersion error, got %v", err)
	}
}

func TestBrokenYAMLNamesTheTemplate(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "templates"), 0o755)
	os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v2\nname: d\nversion: 0.1.0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "values.yaml"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "templates/ok.yaml"), []byte("a: 1\n---\nb: 2\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "templates/bad.yaml"), []byte("a: 1\n---\nb: \"2\n"), 0o644)
	_, err := render(options{chartDir: dir, release: "r", namespace: "ns", kubeVersion: "1.30.0"})
	if err == nil || !strings.Contains(err.Error(), "d/templates/bad.yaml") || !strings.Contains(err.Error(), "document 2") {
		t.Fatalf("want a parse error naming bad.yaml's document 2, got %v", err)
	}
}

func TestStrictRefusesMissingValues(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "templates"), 0o755)
	os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v2\nname: d\nversion: 0.1.0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "values.yaml"), []byte("a: {}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "templates/x.yaml"), []byte("v: {{ .Values.a.typo }}\n"), 0o644)
	o := options{chartDir: dir, release: "r", namespace: "ns", kubeVersion: "1.30.0"}
	if out, err := render(o); err != nil || !strings.Contains(out, "v: \n") {
		t.Fatalf("lenient: %q, %v", out, err)
	}
	o.strict = true
	if _, err := render(o); err == nil {
		t.Fatal("strict render of a missing value succeeded")
	}
}
