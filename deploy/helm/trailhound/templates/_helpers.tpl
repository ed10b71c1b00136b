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
{{- printf "http://%s.%s.svc:%s" (include "trailhound.name" .) .root.Release.Namespace (include "trailhound.port" .) -}}
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
    checksum/config: {{ $root.Values.config | sha256sum }}
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
          value: /etc/trailhound/config/trailhound.toml
        - name: TRAILHOUND_DATA_DIR
          value: /data
        - name: TRAILHOUND_LOG
          value: {{ $root.Values.log | quote }}
        - name: TRAILHOUND_LOG_JSON
          value: {{ $root.Values.logJson | quote }}
        - name: TRAILHOUND_SHUTDOWN_DEADLINE
          value: {{ $root.Values.shutdownDeadline | quote }}
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
      startupProbe:
        grpc: {{- toYaml $probe | nindent 10 }}
        periodSeconds: 5
        # Up to 5 minutes: detect replays its write-ahead log before it
        # listens.
        failureThreshold: 60
      readinessProbe:
        grpc: {{- toYaml $probe | nindent 10 }}
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 2
      # NOT_SERVING (health's mark_not_serving, or a stuck service) fails
      # this, and the kubelet restarts the container.
      livenessProbe:
        grpc: {{- toYaml $probe | nindent 10 }}
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
