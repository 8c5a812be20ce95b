{{/*
Least-privilege RBAC of the operator. No wildcards: every group, resource and verb is named,
and every rule says why the operator needs it. The same namespaced rules become a ClusterRole
(watch.scope=cluster) or one Role per watched namespace (watch.scope=namespace).
*/}}

{{/* Rules for objects inside the watched namespaces. */}}
{{- define "kvtrace-operator.rules.namespaced" -}}
# Our custom resources: kopf lists and watches them, a KVCluster reconcile reads the
# TracingPipeline it references by name, and kopf patches their metadata (its progress and
# last-handled-configuration annotations under kvtrace.dev/, and its finalizer).
- apiGroups: [kvtrace.dev]
  resources: [kvclusters, tracingpipelines]
  verbs: [get, list, watch, patch]
# Their status subresources: conditions, phase, replicas, endpoints and a pipeline's
# consumers are written as merge patches of /status.
- apiGroups: [kvtrace.dev]
  resources: [kvclusters/status, tracingpipelines/status]
  verbs: [get, patch]
# The scale subresource of KVCluster (kubectl scale, HPAs) is read to report scaling; the
# operator never scales a cluster itself, so no update/patch.
- apiGroups: [kvtrace.dev]
  resources: [kvclusters/scale]
  verbs: [get]
# Children of both kinds, applied server-side (create on the first apply, patch after),
# watched by the managed-by label (a child deleted by hand is re-created at once, a rollout
# refreshes the owner's status) and deleted when a re-render no longer contains them.
# Core kinds: headless and client Services, node and collector ConfigMaps, the
# instrumentation ConfigMap, the members' ServiceAccount.
- apiGroups: [""]
  resources: [configmaps, services, serviceaccounts]
  verbs: [get, list, watch, create, patch, delete]
# Secrets: get reads the ones the rendered pods reference (resourceVersion and key names
# only: a missing one becomes SecretsReady=False, a changed one rolls the pods that read it
# at start) and the consumers' OTLP tokens (to write the collector's token set); list/watch
# stream them so a change is seen at once and prune the ones the operator owns; create makes
# the generated token Secrets (NAME-otlp-token, CLUSTER-otlp-client-token, consumer tokens,
# the token set NAME-otlp-tokens; once) and the managed TLS Secrets; patch/delete apply and
# prune owned ones and rewrite the token set (server-side apply and merge patches: no update). RBAC cannot filter by label or name, so this covers every Secret of the watched
# namespaces: narrow it with watch.scope=namespace.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
# cert-manager Certificates of a pipeline with spec.security.tls.mode certManager (one per TLS
# server): applied, then listed and deleted when the pipeline leaves that mode or drops a
# server; without cert-manager installed the operator reports it and never calls this API.
- apiGroups: [cert-manager.io]
  resources: [certificates]
  verbs: [list, create, patch, delete]
# Workloads: the KV members' StatefulSet, the collector tier(s) and Jaeger Deployments.
- apiGroups: [apps]
  resources: [statefulsets, deployments]
  verbs: [get, list, watch, create, patch, delete]
# The PodDisruptionBudget that keeps a quorum of members through voluntary disruptions.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
# The NetworkPolicy limiting the peer port (7071) to the cluster's own members.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
# Jaeger's badger volume claim is applied with its pipeline. No delete: the operator never
# deletes data; the claim goes with its pipeline through the owner reference.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch, create, patch]
# Pods are only read: members' and collectors' readiness for status and events.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Service endpoints are only read: whether the client, collector and Jaeger Services have
# ready backends (status endpoints).
- apiGroups: [""]
  resources: [endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
# The Role and RoleBinding of a pipeline's Prometheus (spec.metrics): it discovers the
# collector, Jaeger and KV node pods of its own namespace to scrape them. The Role grants only
# get/list/watch on pods, which the operator holds itself (no escalate or bind needed).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch, delete]
# Events about our resources (Created, Updated, Scaling, Ready, InvalidSpec...) and kopf's
# own warnings and errors: create only, never read or change others' events.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- if .Values.webhook.enabled }}
{{- include "kvtrace-operator.rules.webhook" . }}
{{- end }}
{{- end }}

{{/* What the injection webhook adds in the watched namespaces (webhook.enabled). Its
workloads' token Secrets (get, create, patch) and InjectionFailed/InstrumentationChanged
events (create) are already granted above. */}}
{{- define "kvtrace-operator.rules.webhook" }}
# Injection: a pod's workload is the Deployment above its ReplicaSet (read only).
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [get]
# Injection: an injected workload is read when its pipeline changes, and a restart-on-change
# one is rolled by a merge patch of its pod template's checksum annotation (Deployments and
# StatefulSets are granted get and patch above).
- apiGroups: [apps]
  resources: [daemonsets]
  verbs: [get, patch]
{{- end }}

{{/* Cluster-scoped reads kopf needs whatever the watch scope. */}}
{{- define "kvtrace-operator.rules.cluster" -}}
# kopf scans the API for the resources its handlers serve and watches the CRDs, so the
# handlers start (or stop) when kvtrace's CRDs are installed, upgraded or removed. Read only.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.webhook.enabled }}
# The injection webhook's MutatingWebhookConfiguration, server-side applied at every start
# with the operator's new CA: create (RBAC cannot restrict create by name), and patch only
# the configuration of this operator's scope.
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations]
  verbs: [create]
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations]
  resourceNames: [{{ include "kvtrace-operator.webhookConfigurationName" . }}]
  verbs: [patch]
{{- end }}
{{- end }}
