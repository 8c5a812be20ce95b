{{/* Chart name, possibly overridden. */}}
{{- define "kvtrace-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: "<release>-<chart>" unless the release name already contains the chart name. */}}
{{- define "kvtrace-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "chart-version" for the helm.sh/chart label. */}}
{{- define "kvtrace-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "kvtrace-operator.labels" -}}
helm.sh/chart: {{ include "kvtrace-operator.chart" . }}
{{ include "kvtrace-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: kvtrace
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels selecting the operator pods (never change on upgrade). */}}
{{- define "kvtrace-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvtrace-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "kvtrace-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kvtrace-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels of the chart's CRDs (their own app.kubernetes.io/part-of comes from crds/). */}}
{{- define "kvtrace-operator.crdLabels" -}}
helm.sh/chart: {{ include "kvtrace-operator.chart" . }}
app.kubernetes.io/name: {{ include "kvtrace-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* An image (or repository) moved to images.registry when one is set: REGISTRY/LAST-PATH-ELEMENT,
as `make images IMAGE_REGISTRY=...` names them. Call with (list IMAGE ROOT). */}}
{{- define "kvtrace-operator.mirrored" -}}
{{- $image := index . 0 }}
{{- $registry := (index . 1).Values.images.registry | trimSuffix "/" }}
{{- if $registry }}
{{- printf "%s/%s" $registry (base $image) }}
{{- else }}
{{- $image }}
{{- end }}
{{- end }}

{{/* The operator image reference (also the query-proxy sidecars' default): pinned by digest when one is given. */}}
{{- define "kvtrace-operator.image" -}}
{{- $repository := include "kvtrace-operator.mirrored" (list .Values.image.repository $) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespaces watched with scope "namespace", as a JSON list (the release namespace when none is given). */}}
{{- define "kvtrace-operator.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- .Values.watch.namespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* Name of the Service the API server calls the injection webhook through. */}}
{{- define "kvtrace-operator.webhookServiceName" -}}
{{- printf "%s-webhook" (include "kvtrace-operator.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* Name of the MutatingWebhookConfiguration the operator applies (render/webhook.py
configuration_name): kvtrace-injection cluster-wide, else kvtrace-injection-NS... */}}
{{- define "kvtrace-operator.webhookConfigurationName" -}}
{{- if eq .Values.watch.scope "cluster" }}
{{- print "kvtrace-injection" }}
{{- else }}
{{- $namespaces := include "kvtrace-operator.watchNamespaces" . | fromJsonArray | sortAlpha | uniq }}
{{- printf "kvtrace-injection-%s" (join "-" $namespaces) | trunc 253 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels of the `helm test` objects: not the operator's selector (no Deployment adopts the
test pod), but the part-of/component pair the pipelines' NetworkPolicies admit (the doctor's
canary reaches the collector and Jaeger). */}}
{{- define "kvtrace-operator.testLabels" -}}
helm.sh/chart: {{ include "kvtrace-operator.chart" . }}
app.kubernetes.io/name: {{ include "kvtrace-operator.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: kvtrace
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The annotations of a `helm test` object, created in weight order, deleted before the next
run and after a pass (a failed run's pod stays for `kubectl logs`). Call with the weight. */}}
{{- define "kvtrace-operator.testHook" -}}
helm.sh/hook: test
helm.sh/hook-weight: {{ . | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}

{{/* Whether the operator gets a PodDisruptionBudget: asked for, or several replicas. */}}
{{- define "kvtrace-operator.pdb" -}}
{{- if or .Values.podDisruptionBudget.enabled (gt (int .Values.replicaCount) 1) }}true{{- end }}
{{- end }}

{{/* The pods' topologySpreadConstraints: the given ones (the pods' selector filled in where a
constraint has no labelSelector); none given and several replicas: spread over nodes, softly. */}}
{{- define "kvtrace-operator.topologySpread" -}}
{{- $constraints := list }}
{{- range .Values.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "kvtrace-operator.selectorLabels" $ | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
{{- if and (not $constraints) (gt (int .Values.replicaCount) 1) }}
{{- $constraints = list (dict "maxSkew" 1 "topologyKey" "kubernetes.io/hostname" "whenUnsatisfiable" "ScheduleAnyway" "labelSelector" (dict "matchLabels" (include "kvtrace-operator.selectorLabels" . | fromYaml))) }}
{{- end }}
{{- if $constraints }}
{{- toYaml $constraints }}
{{- end }}
{{- end }}

{{/* Fail early on combinations the schema cannot express. */}}
{{- define "kvtrace-operator.validate" -}}
{{- if and (hasKey .Values.podDisruptionBudget "minAvailable") (hasKey .Values.podDisruptionBudget "maxUnavailable") }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (a PodDisruptionBudget takes one)" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.name) }}
{{- fail "replicaCount > 1 needs peering.name: without kopf peering several replicas would all reconcile at once" }}
{{- end }}
{{- if and .Values.watch.namespaces (ne .Values.watch.scope "namespace") }}
{{- fail "watch.namespaces is only used with watch.scope=namespace (scope cluster watches every namespace)" }}
{{- end }}
{{- if and .Values.webhook.enabled (gt (int .Values.replicaCount) 1) }}
{{- fail "webhook.enabled with replicaCount > 1 is not supported yet: each replica makes its own webhook CA (docs/injection.md); set webhook.enabled=false or replicaCount=1" }}
{{- end }}
{{- if and .Values.webhook.enabled (has (int .Values.webhook.port) (list (int .Values.healthPort) (int .Values.metrics.port))) }}
{{- fail "webhook.port must differ from healthPort and metrics.port (each is a port of the operator container)" }}
{{- end }}
{{- end }}
