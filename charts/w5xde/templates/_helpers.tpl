{{/*
Names, labels and images shared by every template. The layout follows the
prometheus-community charts so the chart reads like the ones users know.
*/}}

{{/* Chart name, overridable; truncated because some name fields stop at 63 characters. */}}
{{- define "w5xde.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name: <release>-<chart>, or just the release name when it
already contains the chart name (`helm install w5xde` gives `w5xde`).
*/}}
{{- define "w5xde.fullname" -}}
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

{{/* Chart name and version for the helm.sh/chart label. */}}
{{- define "w5xde.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Namespace of the namespaced objects, overridable for umbrella charts. */}}
{{- define "w5xde.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "w5xde.labels" -}}
helm.sh/chart: {{ include "w5xde.chart" . }}
app.kubernetes.io/name: {{ include "w5xde.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: w5xde
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector of the operator pods; never changes across upgrades (selectors are immutable). */}}
{{- define "w5xde.selectorLabels" -}}
app.kubernetes.io/name: {{ include "w5xde.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
The operator's selector labels as `k=v,...` (keys sorted), for --operator-pod-labels:
the workers' NetworkPolicies admit these pods, in the release namespace, to the
report port.
*/}}
{{- define "w5xde.selectorLabelsArg" -}}
{{- $pairs := list -}}
{{- range $key, $value := include "w5xde.selectorLabels" . | fromYaml -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* Labels of the operator objects: the common ones plus the component. */}}
{{- define "w5xde.operatorLabels" -}}
{{ include "w5xde.labels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
Selector of the worker pods and Services the operator creates (docs/helm.md):
component `worker` and the `w5xde.io/cluster` label naming their cluster.
*/}}
{{- define "w5xde.workerSelector" -}}
matchLabels:
  app.kubernetes.io/component: worker
matchExpressions:
  - key: w5xde.io/cluster
    operator: Exists
{{- end -}}

{{/* ServiceAccount the operator runs as. */}}
{{- define "w5xde.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "w5xde.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Operator image reference; the tag defaults to the chart's appVersion. */}}
{{- define "w5xde.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Default worker image handed to the operator. */}}
{{- define "w5xde.workerImage" -}}
{{- printf "%s:%s" .Values.workerImage.repository (default .Chart.AppVersion .Values.workerImage.tag) -}}
{{- end -}}

{{/* Name of the kopf peering object the operator replicas share. */}}
{{- define "w5xde.peeringName" -}}
{{- default (include "w5xde.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* Annotations of every CRD the chart installs. */}}
{{- define "w5xde.crdAnnotations" -}}
{{- if .Values.crds.keep }}
helm.sh/resource-policy: keep
{{- end }}
{{- end -}}

{{/* Name of the node-tuning objects. */}}
{{- define "w5xde.nodeTuning.fullname" -}}
{{- printf "%s-node-tuning" (include "w5xde.fullname" . | trunc 50 | trimSuffix "-") -}}
{{- end -}}

{{/* Labels of the node-tuning objects. */}}
{{- define "w5xde.nodeTuning.labels" -}}
{{ include "w5xde.labels" . }}
app.kubernetes.io/component: node-tuning
{{- end -}}

{{/* Selector of the node-tuning pods. */}}
{{- define "w5xde.nodeTuning.selectorLabels" -}}
app.kubernetes.io/name: {{ include "w5xde.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-tuning
{{- end -}}

{{/* Image of the node-tuning pods; defaults to the operator image, which has python3. */}}
{{- define "w5xde.nodeTuning.image" -}}
{{- $repository := default .Values.image.repository .Values.nodeTuning.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.nodeTuning.image.tag -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/*
Rules the operator needs in every namespace it serves. Each one matches an
action of the operator (DESIGN.md, Operator); nothing is granted "just in case".
*/}}
{{- define "w5xde.operator.namespacedRules" -}}
# The resource it reconciles, and `kubectl scale` through the scale subresource.
- apiGroups: ["w5xde.io"]
  resources: ["compressionclusters"]
  verbs: ["get", "list", "watch", "patch", "update"]
# Status it folds from the reports it pulls from the workers (workers hold no
# API permissions at all).
- apiGroups: ["w5xde.io"]
  resources: ["compressionclusters/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["w5xde.io"]
  resources: ["compressionclusters/scale"]
  verbs: ["get", "patch", "update"]
# Owned objects of each cluster; StatefulSets and pods are watched into indexes.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# The cluster key and CA: created once, read by name to sign report requests and
# certificates, patched to rotate the key. Never listed or watched, so the operator
# cannot read other Secrets in bulk.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# The CA certificate each cluster's workers trust (public; the CA key stays in the
# cluster's NAME-ca Secret, which no pod mounts).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
# Only to remove the worker Role and RoleBinding an earlier version created.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["delete"]
# Worker pods: readiness, and the pod IPs the reports are pulled from.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# The workers' NetworkPolicy: server-side apply (patch; create for a new one),
# read by name and deleted only when its cluster owns it and policies are off.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
# kopf posts handler progress and errors as events.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Cluster-scoped reads kopf does whatever namespaces it serves. */}}
{{- define "w5xde.operator.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end -}}

{{/*
kopf peering: the operator creates its peering object at start-up (kopf never
does), and replicas announce themselves by patching its status.
*/}}
{{- define "w5xde.operator.peeringRule" -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ . | quote }}]
  verbs: ["get", "list", "watch", "patch", "create"]
{{- end -}}

{{/*
Scrape settings shared by the Pod- and ServiceMonitor endpoints. Called with
(dict "monitor" <values> "clusterLabelSource" <meta label or "">): worker
targets get a `compressioncluster` label naming their CompressionCluster, which
the dashboard and the alert rules group by. Not `cluster`: that is the usual
external label of a multi-cluster Prometheus, and a target label of the same
name would be overwritten or clash (CloudNativePG moved away from it too).
*/}}
{{- define "w5xde.monitor.endpointSettings" -}}
{{- $monitor := .monitor -}}
interval: {{ $monitor.interval }}
{{- with $monitor.scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
{{- if or .clusterLabelSource $monitor.relabelings }}
relabelings:
  {{- with .clusterLabelSource }}
  - sourceLabels: [{{ . }}]
    targetLabel: compressioncluster
    action: replace
  {{- end }}
  {{- with $monitor.relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- with $monitor.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Where worker pods can be: the namespaces the operator serves. */}}
{{- define "w5xde.monitor.workerNamespaces" -}}
{{- if .Values.watchNamespaces -}}
matchNames:
  {{- toYaml .Values.watchNamespaces | nindent 2 }}
{{- else -}}
any: true
{{- end -}}
{{- end -}}

{{/*
The node label the tuning DaemonSet sets once the caps are in place; the
operator (NODE_TUNED_LABEL in operator/resources/metadata.py) schedules
clusters with spec.network.nodeTuning onto nodes carrying it as "true".
*/}}
{{- define "w5xde.nodeTuning.nodeLabel" -}}
w5xde.io/node-tuned
{{- end -}}
