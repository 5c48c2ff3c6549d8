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

{{- define "weft.meshGateway.fullname" -}}
{{- printf "%s-mesh-gateway" (include "weft.fullname" .) -}}
{{- end -}}

{{- define "weft.meshGateway.selectorLabels" -}}
{{ include "weft.selectorLabels" . }}
app.kubernetes.io/component: mesh-gateway
{{- end -}}

{{/*
The mesh gateway's address for other networks, as `weft connect gateway
--wan-address` takes it (IP:PORT; an IPv6 address in brackets). NodeIP: the
node's IP, which the pod only learns at run time, from the Downward API
(HOST_IP), and the hostPort; Service and Static: wanAddress.static.
*/}}
{{- define "weft.meshGateway.wanAddress" -}}
{{- $wan := .Values.meshGateway.wanAddress -}}
{{- $port := int $wan.port -}}
{{- if eq $wan.source "NodeIP" -}}
{{- printf "$(HOST_IP):%d" $port -}}
{{- else if contains ":" (toString $wan.static) -}}
{{- printf "[%s]:%d" $wan.static $port -}}
{{- else -}}
{{- printf "%s:%d" $wan.static $port -}}
{{- end -}}
{{- end -}}

{{/* What the mesh gateway's containers learn of their pod from the Downward API. */}}
{{- define "weft.meshGateway.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: HOST_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
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
TLS on server RPC (port 8300). Weft refuses plaintext RPC that leaves a
host, so the servers always serve it over TLS, and every agent the chart
deploys verifies them against the RPC CA.

The Secret with the CA certificate (ca.crt) and the servers' certificate and
key (tls.crt, tls.key): server.tls.existingSecret, else the one the chart
generates (server-tls-secret.yaml).
*/}}
{{- define "weft.server.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "weft.server.fullname" .)) .Values.server.tls.existingSecret -}}
{{- end -}}

{{/*
The name every server's certificate carries and agents and servers check
(verify_server_hostname): server.<datacenter>.<domain>.
*/}}
{{- define "weft.server.tlsName" -}}
{{- printf "server.%s.%s" .Values.datacenter (trimAll "." (toString .Values.domain)) | lower -}}
{{- end -}}

{{/*
Where the RPC TLS files are mounted, in the servers (ca.crt, tls.crt,
tls.key) and in the chart's client agents (ca.crt only).
*/}}
{{- define "weft.rpcTlsDir" -}}
/weft/tls
{{- end -}}

{{/*
The client Service's HTTP API (the Ready servers'), as the ACL Job calls it.
*/}}
{{- define "weft.httpAddr" -}}
{{- printf "%s.%s.svc:8500" (include "weft.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/*
The servers' verify_incoming: server.tls.verifyIncoming when it is true or
false, else (null, the default) on exactly when ACLs are, since with ACLs
every agent in the cluster enrolls by login and has a certificate.
*/}}
{{- define "weft.server.verifyIncoming" -}}
{{- $v := get .Values.server.tls "verifyIncoming" -}}
{{- if kindIs "bool" $v -}}
{{- $v -}}
{{- else -}}
{{- .Values.acl.enabled -}}
{{- end -}}
{{- end -}}

{{/*
ACLs. The Secret with the generated management token (key token) and the
servers' acl config file holding it (key acl.json): acl-secret.yaml.
*/}}
{{- define "weft.acl.tokenSecretName" -}}
{{- printf "%s-management-token" (include "weft.fullname" .) -}}
{{- end -}}

{{/*
The audience of the service-account tokens agents log in with: the one the
injector (`weft k8s webhook --acl-auth-method`) projects into pods, so the
chart's own agents and the auth method use it too.
*/}}
{{- define "weft.acl.audience" -}}
weft
{{- end -}}

{{/* Where agents find that projected token (as in injected pods). */}}
{{- define "weft.acl.tokenDir" -}}
/var/run/secrets/weft/serviceaccount
{{- end -}}

{{/* The ACL Job's objects. */}}
{{- define "weft.acl.initFullname" -}}
{{- printf "%s-acl-init" (include "weft.fullname" .) -}}
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
{{- if not (regexMatch "^[A-Za-z0-9_-]*$" (toString .Values.network)) -}}
{{- fail (printf "network %q must use only letters, digits, '-' and '_'" (toString .Values.network)) -}}
{{- end -}}
{{- include "weft.validateServerTls" . -}}
{{- include "weft.validateAcl" . -}}
{{- include "weft.validateMeshGateway" . -}}
{{- end -}}

{{/*
ACLs: the auth method's name goes into the injector's flags and every
agent's config, and the servers' acl block is the chart's own.
*/}}
{{- define "weft.validateAcl" -}}
{{- $acl := .Values.acl -}}
{{- if not (kindIs "bool" $acl.enabled) -}}
{{- fail (printf "acl.enabled must be true or false, not %q" (toString $acl.enabled)) -}}
{{- end -}}
{{- if $acl.enabled -}}
{{- if not (regexMatch "^[A-Za-z0-9_-]+$" (toString $acl.authMethodName)) -}}
{{- fail (printf "acl.authMethodName %q must be letters, digits, '-' and '_'" (toString $acl.authMethodName)) -}}
{{- end -}}
{{- if not $acl.boundIssuer -}}
{{- fail "acl.boundIssuer must not be empty: the issuer the service-account tokens carry (the API server's --service-account-issuer)" -}}
{{- end -}}
{{- if and $acl.jwksUrl (not (hasPrefix "https://" (toString $acl.jwksUrl))) -}}
{{- fail (printf "acl.jwksUrl must be an https:// URL, not %q" (toString $acl.jwksUrl)) -}}
{{- end -}}
{{- if not (kindIs "bool" $acl.issuerDiscoveryBinding) -}}
{{- fail (printf "acl.issuerDiscoveryBinding must be true or false, not %q" (toString $acl.issuerDiscoveryBinding)) -}}
{{- end -}}
{{- if hasKey .Values.server.extraConfig "acl" -}}
{{- fail "server.extraConfig must not set acl with acl.enabled: the chart writes the servers' acl block itself (a later acl block would replace all of it, management token included); set acl.enabled=false to write your own" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The servers' tls block is the chart's own (server-config.yaml): a tls key in
extraConfig would replace all of it (a later config file's tls block wins
whole), leaving the servers without their certificate.
*/}}
{{- define "weft.validateServerTls" -}}
{{- $tls := .Values.server.tls -}}
{{- $verifyIncoming := get $tls "verifyIncoming" -}}
{{- if not (or (kindIs "bool" $verifyIncoming) (kindIs "invalid" $verifyIncoming) (eq "" (toString $verifyIncoming))) -}}
{{- fail (printf "server.tls.verifyIncoming must be true, false or null, not %q" (toString $verifyIncoming)) -}}
{{- end -}}
{{- if and (not $tls.existingSecret) (lt (int $tls.certValidityDays) 1) -}}
{{- fail "server.tls.certValidityDays must be at least 1" -}}
{{- end -}}
{{- if hasKey .Values.server.extraConfig "tls" -}}
{{- fail "server.extraConfig must not set tls: the chart writes the servers' tls block itself (see server.tls); bring your own certificates with server.tls.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/*
A mesh gateway is the way into a named network from the others, and it must
be told, when it starts, the address the other networks reach it at.
*/}}
{{- define "weft.validateMeshGateway" -}}
{{- $gw := .Values.meshGateway -}}
{{- if $gw.enabled -}}
{{- if not .Values.network -}}
{{- fail "meshGateway.enabled needs network: a mesh gateway is the way into a named network from the others, and with network empty this cluster's pods are in the default network. Set network to the name of this cluster's network." -}}
{{- end -}}
{{- if lt (int $gw.replicas) 1 -}}
{{- fail "meshGateway.replicas must be at least 1" -}}
{{- end -}}
{{- if not $gw.serviceName -}}
{{- fail "meshGateway.serviceName must not be empty: it is the gateway's service name in the catalog" -}}
{{- end -}}
{{- $source := toString $gw.wanAddress.source -}}
{{- $static := default "" $gw.wanAddress.static | toString -}}
{{- if not (has $source (list "Service" "NodeIP" "Static")) -}}
{{- fail (printf "meshGateway.wanAddress.source must be Service, NodeIP or Static, not %q" $source) -}}
{{- end -}}
{{- if and (eq $source "Service") (not $static) -}}
{{- fail "meshGateway.wanAddress.source=Service needs meshGateway.wanAddress.static: the gateway is given its address for other networks (--wan-address) when it starts, but a LoadBalancer Service's address is only assigned after the install, so the chart cannot know it. Reserve an IP for the Service (through meshGateway.service.annotations, as your cloud provider asks) and set meshGateway.wanAddress.static to it, or use wanAddress.source=NodeIP or Static." -}}
{{- end -}}
{{- if and (eq $source "Static") (not $static) -}}
{{- fail "meshGateway.wanAddress.source=Static needs meshGateway.wanAddress.static: the IP other networks reach the gateway at" -}}
{{- end -}}
{{- if and (ne $source "NodeIP") (not (or (regexMatch "^[0-9]{1,3}([.][0-9]{1,3}){3}$" $static) (regexMatch "^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$" $static))) -}}
{{- fail (printf "meshGateway.wanAddress.static must be an IP address (`weft connect gateway --wan-address` takes IP:PORT, not a host name), not %q" $static) -}}
{{- end -}}
{{- range $what, $port := dict "meshGateway.port" $gw.port "meshGateway.wanAddress.port" $gw.wanAddress.port "meshGateway.adminPort" $gw.adminPort -}}
{{- if or (lt (int $port) 1) (gt (int $port) 65535) -}}
{{- fail (printf "%s must be a port number (1-65535), not %v" $what $port) -}}
{{- end -}}
{{- end -}}
{{- if eq (int $gw.port) (int $gw.adminPort) -}}
{{- fail "meshGateway.port and meshGateway.adminPort must differ" -}}
{{- end -}}
{{- if not (has (toString $gw.service.type) (list "ClusterIP" "NodePort" "LoadBalancer")) -}}
{{- fail (printf "meshGateway.service.type must be ClusterIP, NodePort or LoadBalancer, not %q" (toString $gw.service.type)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
