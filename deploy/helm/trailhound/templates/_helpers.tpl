{{/*
Names, labels and the pod spec every service shares. A service is named by
its component (ingest, enrich, detect, insights, notify, health).
*/}}

{{- define "trailhound.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The Kubernetes name of one service's objects: <fullname>-<component>. */}}
{{- define "trailhound.name" -}}
{{- printf "%s-%s" (include "trailhound.fullname" .root) .component -}}
{{- end -}}

{{- define "trailhound.selectorLabels" -}}
app.kubernetes.io/name: trailhound
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "trailhound.labels" -}}
{{ include "trailhound.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: trailhound
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Each service's gRPC port (also HTTP/1.1: /metrics, the dashboard). */}}
{{- define "trailhound.port" -}}
{{- get (dict "ingest" 50051 "enrich" 50052 "detect" 50053 "insights" 50054 "notify" 50055 "health" 50056) .component -}}
{{- end -}}

{{/* The grpc.health.v1 service name each server reports. */}}
{{- define "trailhound.grpcService" -}}
{{- printf "trailhound.%s.v1.%sService" .component (title .component) -}}
{{- end -}}

{{/* A service's in-cluster endpoint, as the others call it. */}}
{{- define "trailhound.endpoint" -}}
{{- printf "%s://%s.%s.svc:%s" (ternary "https" "http" .root.Values.tls.enabled) (include "trailhound.name" .) .root.Release.Namespace (include "trailhound.port" .) -}}
{{- end -}}

{{/*
Where enrich sends events: detect's Service, or with detect.replicas > 1
every pod in shard order, by its stable name under the headless Service.
*/}}
{{- define "trailhound.detectEndpoints" -}}
{{- $root := .root -}}
{{- $n := int $root.Values.detect.replicas -}}
{{- $ctx := dict "root" $root "component" "detect" -}}
{{- if le $n 1 -}}
{{- include "trailhound.endpoint" $ctx -}}
{{- else -}}
{{- $name := include "trailhound.name" $ctx -}}
{{- $eps := list -}}
{{- range $i := until $n -}}
{{- $eps = append $eps (printf "%s://%s-%d.%s-headless.%s.svc:%s" (ternary "https" "http" $root.Values.tls.enabled) $name $i $name $root.Release.Namespace (include "trailhound.port" $ctx)) -}}
{{- end -}}
{{- join "," $eps -}}
{{- end -}}
{{- end -}}

{{- define "trailhound.image" -}}
{{- $img := .root.Values.image -}}
{{- printf "%s%s%s:%s" $img.registry $img.repositoryPrefix .component (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/*
The pod template of one service. Arguments: root, component, args (the
wiring flags), and optional dataVolume (a volume source for /data; a
StatefulSet passes none and mounts its claim template instead).
*/}}
{{- define "trailhound.podTemplate" -}}
{{- $root := .root -}}
{{- $values := index $root.Values .component -}}
{{- $port := include "trailhound.port" . -}}
{{- $probe := dict "port" (int $port) "service" (include "trailhound.grpcService" .) -}}
metadata:
  labels:
    {{- include "trailhound.labels" . | nindent 4 }}
  annotations:
    checksum/config: {{ include "trailhound.toml" . | sha256sum }}
    {{- if eq .component "notify" }}
    checksum/secret: {{ toJson $root.Values.notify.secretEnv | sha256sum }}
    {{- end }}
    {{- if eq .component "enrich" }}
    checksum/org: {{ $root.Values.enrich.orgSnapshot.json | sha256sum }}
    {{- end }}
spec:
  serviceAccountName: {{ include "trailhound.name" . }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .component }}
      image: {{ include "trailhound.image" . }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        {{- range .args }}
        - {{ . | quote }}
        {{- end }}
        {{- range $values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: TRAILHOUND_{{ upper .component }}_LISTEN
          value: "0.0.0.0:{{ $port }}"
        - name: TRAILHOUND_CONFIG
          value: /etc/trailhound/config/{{ include "trailhound.configKey" . }}
        - name: TRAILHOUND_DATA_DIR
          value: /data
        - name: TRAILHOUND_LOG
          value: {{ $root.Values.log | quote }}
        - name: TRAILHOUND_LOG_JSON
          value: {{ $root.Values.logJson | quote }}
        - name: TRAILHOUND_SHUTDOWN_DEADLINE
          value: {{ $root.Values.shutdownDeadline | quote }}
        {{- if and (eq .component "detect") (gt (int $root.Values.detect.replicas) 1) }}
        # This pod's ordinal: its share of the accounts (--shard).
        - name: TRAILHOUND_POD_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
        {{- if $root.Values.insecure }}
        - name: TRAILHOUND_INSECURE
          value: "true"
        {{- end }}
        {{- with $root.Values.otlpEndpoint }}
        - name: TRAILHOUND_OTLP_ENDPOINT
          value: {{ . | quote }}
        {{- end }}
        {{- with $values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if eq .component "notify" }}
      {{- $secret := include "trailhound.notifySecret" $root }}
      {{- if $secret }}
      envFrom:
        - secretRef:
            name: {{ $secret }}
      {{- end }}
      {{- end }}
      ports:
        - name: grpc
          containerPort: {{ $port }}
          protocol: TCP
      {{- /* The kubelet's gRPC probe speaks no TLS: with it, the binary probes itself. */}}
      {{- $check := dict "grpc" $probe }}
      {{- if $root.Values.tls.enabled }}
      {{- $check = dict "exec" (dict "command" (list "/usr/local/bin/trailhound" "probe" "--service" .component (printf "127.0.0.1:%s" $port))) }}
      {{- end }}
      startupProbe:
        {{- toYaml $check | nindent 8 }}
        periodSeconds: 5
        timeoutSeconds: 3
        # Up to 5 minutes: detect replays its write-ahead log before it
        # listens.
        failureThreshold: 60
      readinessProbe:
        {{- toYaml $check | nindent 8 }}
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 2
      # NOT_SERVING (health's mark_not_serving, or a stuck service) fails
      # this, and the kubelet restarts the container.
      livenessProbe:
        {{- toYaml $check | nindent 8 }}
        periodSeconds: 10
        timeoutSeconds: 3
        failureThreshold: 3
      resources:
        {{- toYaml $values.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/trailhound/config
          readOnly: true
        - name: data
          mountPath: /data
        - name: tmp
          mountPath: /tmp
        {{- if and (eq .component "enrich") (include "trailhound.orgConfigMap" $root) }}
        - name: org
          mountPath: /etc/trailhound/org
          readOnly: true
        {{- end }}
        {{- if $root.Values.tls.enabled }}
        - name: tls
          mountPath: /etc/trailhound/tls
          readOnly: true
        {{- end }}
        {{- if and (ne $root.Values.auth.mode "none") $root.Values.auth.jwksCaConfigMap }}
        - name: jwks-ca
          mountPath: /etc/trailhound/jwks-ca
          readOnly: true
        {{- end }}
        {{- if and (eq .component "health") (ne $root.Values.auth.mode "none") $root.Values.auth.dashboard.clientSecret.existingSecret }}
        - name: oidc
          mountPath: /etc/trailhound/oidc
          readOnly: true
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "trailhound.fullname" $root }}-config
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- with .dataVolume }}
    - name: data
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- if and (eq .component "enrich") (include "trailhound.orgConfigMap" $root) }}
    - name: org
      configMap:
        name: {{ include "trailhound.orgConfigMap" $root }}
    {{- end }}
    {{- if $root.Values.tls.enabled }}
    # Mounted whole (no subPath), so rotated certificates reach the pod.
    - name: tls
      secret:
        secretName: {{ include "trailhound.tlsSecret" . }}
        defaultMode: 0440
    {{- end }}
    {{- if and (ne $root.Values.auth.mode "none") $root.Values.auth.jwksCaConfigMap }}
    - name: jwks-ca
      configMap:
        name: {{ $root.Values.auth.jwksCaConfigMap }}
    {{- end }}
    {{- if and (eq .component "health") (ne $root.Values.auth.mode "none") $root.Values.auth.dashboard.clientSecret.existingSecret }}
    - name: oidc
      secret:
        secretName: {{ $root.Values.auth.dashboard.clientSecret.existingSecret }}
        defaultMode: 0440
    {{- end }}
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The ConfigMap holding org.json, if any. */}}
{{- define "trailhound.orgConfigMap" -}}
{{- if .Values.enrich.orgSnapshot.configMap -}}
{{- .Values.enrich.orgSnapshot.configMap -}}
{{- else if .Values.enrich.orgSnapshot.json -}}
{{- include "trailhound.fullname" . }}-org
{{- end -}}
{{- end -}}

{{/* The Secret notify's environment comes from, if any. */}}
{{- define "trailhound.notifySecret" -}}
{{- if .Values.notify.existingSecret -}}
{{- .Values.notify.existingSecret -}}
{{- else if .Values.notify.secretEnv -}}
{{- include "trailhound.fullname" . }}-notify
{{- end -}}
{{- end -}}

{{/* The Secret holding one service's certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "trailhound.tlsSecret" -}}
{{- $prefix := .root.Values.tls.secretPrefix | default (printf "%s-tls-" (include "trailhound.fullname" .root)) -}}
{{- printf "%s%s" $prefix .component -}}
{{- end -}}

{{/*
Refuses values that would give pods trailhound refuses to start, naming
the fix: auth without mTLS between the services, a Certificate without
an issuer, OIDC without issuer or audience.
*/}}
{{- define "trailhound.checkSecurity" -}}
{{- $tls := .Values.tls -}}
{{- $auth := .Values.auth -}}
{{- if not (has $auth.mode (list "none" "oidc" "tokens")) -}}
{{- fail (printf "auth.mode %q: none, oidc or tokens" $auth.mode) -}}
{{- end -}}
{{- if and (ne $auth.mode "none") (not (and $tls.enabled $tls.mtls)) -}}
{{- fail "auth.mode needs tls.enabled and tls.mtls: the services prove who they are to each other only with client certificates (README: Security)" -}}
{{- end -}}
{{- if and $tls.enabled $tls.certManager.enabled (not $tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name (an Issuer or ClusterIssuer of your CA)" -}}
{{- end -}}
{{- if and $tls.enabled (regexMatch "(?m)^\\s*\\[tls\\]" .Values.config) -}}
{{- fail "tls.enabled renders [tls]: remove the [tls] section from config" -}}
{{- end -}}
{{- if and (ne $auth.mode "none") (regexMatch "(?m)^\\s*\\[+auth[].]" .Values.config) -}}
{{- fail "auth.mode renders [auth]: remove the [auth] sections from config" -}}
{{- end -}}
{{- if and (eq $auth.mode "oidc") (or (not $auth.issuer) (not $auth.audience)) -}}
{{- fail "auth.mode oidc needs auth.issuer and auth.audience" -}}
{{- end -}}
{{- end -}}

{{/* A TOML value from a Helm value: strings and lists of strings as JSON, which is valid TOML. */}}
{{- define "trailhound.tomlList" -}}
{{- if kindIs "string" . -}}{{ list . | toJson }}{{- else -}}{{ . | default list | toJson }}{{- end -}}
{{- end -}}

{{/* One grant or token's scope keys. */}}
{{- define "trailhound.scopeToml" -}}
{{- with .ous }}
ous = {{ toJson . }}
{{- end }}
{{- with .accounts }}
accounts = {{ toJson . }}
{{- end }}
{{- with .environments }}
environments = {{ toJson . }}
{{- end }}
{{- end -}}

{{/*
The [tls] and [auth] sections the chart renders from `tls` and `auth`,
for one component: health's port may take callers without a client
certificate (the dashboard), and only health reads the OIDC client secret.
*/}}
{{- define "trailhound.securityToml" -}}
{{- $root := .root -}}
{{- $tls := $root.Values.tls -}}
{{- $auth := $root.Values.auth -}}
{{- if $tls.enabled }}
[tls]
cert = "/etc/trailhound/tls/tls.crt"
key = "/etc/trailhound/tls/tls.key"
ca = "/etc/trailhound/tls/ca.crt"
{{- if $tls.mtls }}
client_ca = "/etc/trailhound/tls/ca.crt"
{{- if and (eq .component "health") $tls.dashboardWithoutClientCert }}
client_cert_optional = true
{{- end }}
{{- end }}
reload_interval = {{ $tls.reloadInterval | toString | toJson }}
{{- end }}
{{- if ne $auth.mode "none" }}
[auth]
mode = {{ toJson $auth.mode }}
{{- with $auth.issuer }}
issuer = {{ toJson . }}
{{- end }}
{{- with $auth.audience }}
audience = {{ include "trailhound.tomlList" . }}
{{- end }}
{{- with $auth.jwksUrl }}
jwks_url = {{ toJson . }}
{{- end }}
{{- if $auth.jwksCaConfigMap }}
jwks_ca = "/etc/trailhound/jwks-ca/ca.crt"
{{- end }}
groups_claim = {{ toJson $auth.groupsClaim }}
leeway = {{ $auth.leeway | toString | toJson }}
{{- with $auth.services }}
services = {{ toJson . }}
{{- end }}
{{- if eq .component "health" }}
{{- with $auth.dashboard.publicUrl }}
public_url = {{ toJson . }}
{{- end }}
{{- with $auth.dashboard.clientId }}
client_id = {{ toJson . }}
{{- end }}
{{- if $auth.dashboard.clientSecret.existingSecret }}
client_secret_file = {{ printf "/etc/trailhound/oidc/%s" $auth.dashboard.clientSecret.key | toJson }}
{{- end }}
{{- end }}
{{- range $auth.grants }}
[[auth.grants]]
{{- with .group }}
group = {{ toJson . }}
{{- end }}
{{- with .subject }}
subject = {{ toJson . }}
{{- end }}
role = {{ toJson .role }}
{{- include "trailhound.scopeToml" . }}
{{- end }}
{{- range $auth.tokens }}
[[auth.tokens]]
name = {{ toJson .name }}
sha256 = {{ toJson .sha256 }}
role = {{ toJson .role }}
{{- include "trailhound.scopeToml" . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* trailhound.toml as one component reads it: `config` and the chart's sections. */}}
{{- define "trailhound.toml" -}}
{{- .root.Values.config }}
{{- include "trailhound.securityToml" . }}
{{- end -}}

{{/* The ConfigMap key a component's configuration is under. */}}
{{- define "trailhound.configKey" -}}
{{- if eq .component "health" -}}trailhound-health.toml{{- else -}}trailhound.toml{{- end -}}
{{- end -}}
