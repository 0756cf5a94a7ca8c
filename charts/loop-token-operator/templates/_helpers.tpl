{{- define "lto.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lto.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lto.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lto.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "lto.credentialsSecret" -}}
{{- .Values.credentials.existingSecret | default (printf "%s-credentials" (include "lto.fullname" .)) -}}
{{- end -}}

{{- define "lto.storeUrl" -}}
{{- if .Values.store.enabled -}}
{{ ternary "https" "http" .Values.store.tls.enabled }}://{{ include "lto.fullname" . }}-store.{{ .Release.Namespace }}.svc:8080
{{- else -}}
{{- required "store.externalUrl is required when store.enabled is false" .Values.store.externalUrl -}}
{{- end -}}
{{- end -}}

{{/* Whether the chart's store serves HTTPS. */}}
{{- define "lto.storeTls" -}}
{{- if and .Values.store.enabled .Values.store.tls.enabled }}true{{ end -}}
{{- end -}}

{{/* The Secret holding the store's certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "lto.storeTlsSecret" -}}
{{- .Values.store.tls.existingSecret | default (printf "%s-store-tls" (include "lto.fullname" .)) -}}
{{- end -}}

{{/* The Secret whose ca.crt the operator trusts for the store, or nothing (system roots, or plain HTTP). */}}
{{- define "lto.storeCaSecret" -}}
{{- if .Values.store.enabled -}}
{{- if .Values.store.tls.enabled }}{{ include "lto.storeTlsSecret" . }}{{ end -}}
{{- else -}}
{{- .Values.store.externalCaSecret -}}
{{- end -}}
{{- end -}}

{{/* The names the store's certificate is valid for: its Service, as reached from anywhere. */}}
{{- define "lto.storeDnsNames" -}}
{{- $svc := printf "%s-store" (include "lto.fullname" .) -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.store.tls.clusterDomain) | toJson -}}
{{- end -}}

{{/* Restricted pod security: non-root, read-only root filesystem, no capabilities, seccomp. */}}
{{- define "lto.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "lto.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
