{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "postroom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart> unless the release name already contains it.
*/}}
{{- define "postroom.fullname" -}}
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

{{- define "postroom.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every object of the release.
*/}}
{{- define "postroom.labels" -}}
helm.sh/chart: {{ include "postroom.chart" . }}
app.kubernetes.io/part-of: {{ include "postroom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Name of a component's objects. Call with (dict "root" $ "name" $name).
*/}}
{{- define "postroom.componentName" -}}
{{- printf "%s-%s" (include "postroom.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of a component. Call with (dict "root" $ "name" $name).
*/}}
{{- define "postroom.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/*
All labels of a component. Call with (dict "root" $ "name" $name).
*/}}
{{- define "postroom.componentLabels" -}}
helm.sh/chart: {{ include "postroom.chart" .root }}
app.kubernetes.io/part-of: {{ include "postroom.name" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: {{ .name }}
{{ include "postroom.selectorLabels" . }}
{{- end }}

{{- define "postroom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "postroom.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the DATABASE_URL of each component.
*/}}
{{- define "postroom.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- printf "%s-database" (include "postroom.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Name of the ConfigMap holding tenants.yaml ("" when there is none).
*/}}
{{- define "postroom.tenantsConfigMapName" -}}
{{- if .Values.tenants.existingConfigMap }}
{{- .Values.tenants.existingConfigMap }}
{{- else if .Values.tenants.seed }}
{{- printf "%s-tenants" (include "postroom.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The ports a component listens on: its `ports` plus the implicit TLS port when enabled.
Call with the merged component; returns YAML (a list under key "ports").
*/}}
{{- define "postroom.ports" -}}
{{- $ports := list }}
{{- range .ports }}
{{- $ports = append $ports . }}
{{- end }}
{{- $tls := .tls | default dict }}
{{- if $tls.enabled }}
{{- $ports = append $ports (dict "name" "smtps" "containerPort" $tls.containerPort "servicePort" $tls.port "public" true) }}
{{- end }}
{{- toYaml (dict "ports" $ports) }}
{{- end }}
