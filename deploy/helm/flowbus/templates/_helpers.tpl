{{- define "flowbus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flowbus.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "flowbus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flowbus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flowbus.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "flowbus.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: flowbus
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "flowbus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "flowbus.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "flowbus.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the pipeline has an ebpf source (it needs capabilities). */}}
{{- define "flowbus.usesBPF" -}}
{{- if regexMatch "(?m)^\\s*type:\\s*\"?ebpf\"?\\s*(#.*)?$" (include "flowbus.pipeline" .) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the pipeline reads the Kubernetes API (kubernetes transform). */}}
{{- define "flowbus.usesKubeAPI" -}}
{{- if regexMatch "(?m)^\\s*type:\\s*\"?kubernetes\"?\\s*(#.*)?$" (include "flowbus.pipeline" .) -}}true{{- end -}}
{{- end -}}

{{/*
The workload kind: a DaemonSet (one flowbus per node), except for the
hubble-relay-kafka preset, which reads every node's flows from Hubble Relay
and so runs once, as a Deployment.
*/}}
{{- define "flowbus.kind" -}}
{{- if and (not .Values.pipeline.config) (eq .Values.pipeline.preset "hubble-relay-kafka") -}}Deployment{{- else -}}DaemonSet{{- end -}}
{{- end -}}
