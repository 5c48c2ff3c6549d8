{{/*
The chart name, as used in labels. Kubernetes label values and DNS labels
stop at 63 characters.
*/}}
{{- define "weft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: fullnameOverride, else the release name
when it already contains the chart name, else <release>-<chart>. Cut to 50
characters so suffixes such as "-connect-injector" still fit in 63.
*/}}
{{- define "weft.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "weft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels every object carries. */}}
{{- define "weft.labels" -}}
helm.sh/chart: {{ include "weft.chart" . }}
{{ include "weft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The labels that pick this release's pods; they never change on upgrade. */}}
{{- define "weft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Names of the server objects; the headless Service and the StatefulSet share one. */}}
{{- define "weft.server.fullname" -}}
{{- printf "%s-server" (include "weft.fullname" .) -}}
{{- end -}}

{{- define "weft.server.selectorLabels" -}}
{{ include "weft.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "weft.connectInject.fullname" -}}
{{- printf "%s-connect-injector" (include "weft.fullname" .) -}}
{{- end -}}

{{- define "weft.connectInject.selectorLabels" -}}
{{ include "weft.selectorLabels" . }}
app.kubernetes.io/component: connect-injector
{{- end -}}

{{/* The Weft image; the tag defaults to the chart's appVersion. */}}
{{- define "weft.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The servers' RPC address as the injected agents dial it: the headless
Service's name resolves to every server pod, ready or not.
*/}}
{{- define "weft.server.rpcAddr" -}}
{{- printf "%s.%s.svc:8300" (include "weft.server.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/*
The container securityContext of every Weft container: nothing but its own
files, written only to mounted volumes.
*/}}
{{- define "weft.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{/*
Refuse values the chart cannot honour: reserved ones for features the weft
binary does not have yet (rather than deploy something other than what was
asked for), and ones that would render a broken cluster.
*/}}
{{- define "weft.validateValues" -}}
{{- if .Values.tls.enabled -}}
{{- fail "tls.enabled is reserved: `weft agent` has no TLS settings for its HTTP API yet, so the chart cannot turn TLS on. Set tls.enabled=false." -}}
{{- end -}}
{{- if lt (int .Values.server.replicas) 1 -}}
{{- fail "server.replicas must be at least 1" -}}
{{- end -}}
{{- if not (has .Values.server.podAntiAffinity (list "required" "preferred" "none")) -}}
{{- fail (printf "server.podAntiAffinity must be required, preferred or none, not %q" (toString .Values.server.podAntiAffinity)) -}}
{{- end -}}
{{- end -}}
