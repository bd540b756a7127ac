{{/*
The pipelines of pipeline.preset. Each is a whole flowbus pipeline.yaml;
"flowbus.pipeline" picks one, or pipeline.config when it is set.
*/}}

{{- define "flowbus.pipeline" -}}
{{- if .Values.pipeline.config -}}
{{ .Values.pipeline.config }}
{{- else -}}
{{- $presets := list "kernel" "kernel-kafka" "kernel-nats" "hubble-relay-kafka" "demo" -}}
{{- if not (has .Values.pipeline.preset $presets) -}}
{{- fail (printf "pipeline.preset %q: want one of %s, or set pipeline.config" .Values.pipeline.preset (join ", " $presets)) -}}
{{- end -}}
{{ include (printf "flowbus.pipeline.%s" .Values.pipeline.preset) . }}
{{- end -}}
{{- end -}}

{{- define "flowbus.pipeline.header" -}}
node_name: ${NODE_NAME}
lost_event_interval: 1s
shutdown_timeout: 30s
metrics:
  listen: ":{{ .Values.metrics.port }}"   # /metrics, /healthz, /readyz (the pod's probes)
{{- end -}}

{{- define "flowbus.pipeline.kernelSource" }}
  kernel:
    type: ebpf
    interfaces: {{ .Values.pipeline.kernel.interfaces }}
    direction: both
    aggregation: {{ .Values.pipeline.kernel.aggregation }}
    aggregation_interval: {{ .Values.pipeline.kernel.aggregationInterval }}
    perf_buffer_pages: {{ .Values.pipeline.kernel.perfBufferPages }}
    drops: {{ .Values.pipeline.kernel.drops }}
{{- end -}}

{{/* The kernel presets' transforms; their last stage is "redacted". */}}
{{- define "flowbus.pipeline.kernelTransforms" -}}
transforms:
{{- $input := "kernel" }}
{{- if .Values.pipeline.kubernetes.enabled }}
  enriched:
    type: kubernetes
    inputs: [kernel]
    cluster_name: {{ .Values.pipeline.kubernetes.clusterName | quote }}
{{- $input = "enriched" }}
{{- end }}
  redacted:
    type: redact
    inputs: [{{ $input }}]
    http: {url_query: {{ .Values.pipeline.redact.httpURLQuery }}}
    kafka: {api_key: {{ .Values.pipeline.redact.kafkaAPIKey }}}
{{- end -}}

{{/*
A tls block, indented for a component: ca_file from the Secret (when one is
given; the image's CA bundle otherwise), cert_file and key_file when
clientCert is set (mTLS), server_name when set.
*/}}
{{- define "flowbus.pipeline.tls" }}
{{- $t := .tls }}
{{- $d := printf "/etc/flowbus/secrets/%s" .dir }}
{{- if and $t.clientCert (not $t.existingSecret) }}
{{- fail (printf "%s: clientCert needs existingSecret (a Secret with tls.crt and tls.key)" .dir) }}
{{- end }}
{{- if or $t.existingSecret $t.serverName }}
{{- if $t.existingSecret }}
      ca_file: {{ $d }}/ca.crt
{{- end }}
{{- if $t.clientCert }}
      cert_file: {{ $d }}/tls.crt
      key_file: {{ $d }}/tls.key
{{- end }}
{{- if $t.serverName }}
      server_name: {{ $t.serverName | quote }}
{{- end }}
{{- else }} {}
{{- end }}
{{- end -}}

{{- define "flowbus.pipeline.kafkaSink" }}
{{- $k := .root.Values.pipeline.kafka }}
  kafka:
    type: kafka
    inputs: [{{ .input }}]
    brokers: {{ toJson $k.brokers }}
    topic: {{ $k.topic | quote }}
    lost_topic: {{ $k.lostTopic | quote }}
    key: {{ $k.key | quote }}
    encoding: {{ $k.encoding }}
    compression: {{ $k.compression }}
    client_id: flowbus-${NODE_NAME}
{{- if $k.tls.enabled }}
    tls:
{{- include "flowbus.pipeline.tls" (dict "tls" $k.tls "dir" "kafka-tls") }}
{{- end }}
{{- if $k.sasl.enabled }}
{{- if not $k.sasl.existingSecret }}
{{- fail "pipeline.kafka.sasl.enabled needs pipeline.kafka.sasl.existingSecret (a Secret with the password)" }}
{{- end }}
    sasl:
      mechanism: {{ $k.sasl.mechanism }}
      username: {{ $k.sasl.username | quote }}
      password_file: /etc/flowbus/secrets/kafka-sasl/{{ $k.sasl.passwordKey }}
{{- end }}
    buffer: {events: {{ $k.buffer.events }}, when_full: {{ $k.buffer.whenFull }}}
{{- end -}}

{{- define "flowbus.pipeline.kernel" -}}
# Kernel network events on this node, read by flowbus's BPF programs, as
# redacted Hubble flows on the pod's stdout (kubectl logs).
{{ include "flowbus.pipeline.header" . }}
sources:
{{- include "flowbus.pipeline.kernelSource" . }}
{{ include "flowbus.pipeline.kernelTransforms" . }}
sinks:
  stdout:
    type: file
    inputs: [redacted]
    path: "-"
    encoding: json
{{- end -}}

{{- define "flowbus.pipeline.kernel-kafka" -}}
# Kernel network events on this node as Hubble flows, published to Kafka.
{{ include "flowbus.pipeline.header" . }}
sources:
{{- include "flowbus.pipeline.kernelSource" . }}
{{ include "flowbus.pipeline.kernelTransforms" . }}
sinks:
{{- include "flowbus.pipeline.kafkaSink" (dict "root" . "input" "redacted") }}
{{- end -}}

{{- define "flowbus.pipeline.kernel-nats" -}}
{{- $n := .Values.pipeline.nats -}}
# Kernel network events on this node as Hubble flows, published to NATS
# JetStream.
{{ include "flowbus.pipeline.header" . }}
sources:
{{- include "flowbus.pipeline.kernelSource" . }}
{{ include "flowbus.pipeline.kernelTransforms" . }}
sinks:
  nats:
    type: nats
    inputs: [redacted]
    url: {{ $n.url | quote }}
    subject: {{ $n.subject | quote }}
    lost_subject: {{ $n.lostSubject | quote }}
    encoding: {{ $n.encoding }}
    jetstream: {stream: {{ $n.stream }}, create: {{ $n.createStream }}}
{{- if $n.credentials.existingSecret }}
    credentials_file: /etc/flowbus/secrets/nats/{{ $n.credentials.credentialsKey }}
{{- end }}
{{- if $n.tls.enabled }}
    tls:
{{- include "flowbus.pipeline.tls" (dict "tls" $n.tls "dir" "nats-tls") }}
{{- end }}
    buffer: {events: {{ $n.buffer.events }}, when_full: {{ $n.buffer.whenFull }}}
{{- end -}}

{{- define "flowbus.pipeline.hubble-relay-kafka" -}}
{{- $h := .Values.pipeline.hubble -}}
# Hubble's flows, already enriched by Cilium, read from Hubble Relay and
# published to Kafka. The relay serves every node's flows: run this preset
# on one node (a nodeSelector), or read each agent's unix socket instead.
{{ include "flowbus.pipeline.header" . }}
sources:
  hubble:
    type: hubble
    address: {{ $h.address | quote }}
{{- if $h.tls.enabled }}
    tls:
{{- include "flowbus.pipeline.tls" (dict "tls" $h.tls "dir" "hubble-tls") }}
{{- end }}
sinks:
{{- include "flowbus.pipeline.kafkaSink" (dict "root" . "input" "hubble") }}
{{- end -}}

{{- define "flowbus.pipeline.demo" -}}
# Synthetic flows on the pod's stdout: needs no privileges and no broker.
{{ include "flowbus.pipeline.header" . }}
sources:
  demo:
    type: generate
    rate: {{ .Values.pipeline.demo.rate }}
sinks:
  stdout:
    type: file
    inputs: [demo]
    path: "-"
    encoding: json
{{- end -}}
