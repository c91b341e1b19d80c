{{- define "herald.labels" -}}
app.kubernetes.io/name: herald
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "herald.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end }}

{{- define "herald.gossipSecret" -}}
{{ .Values.speaker.gossip.existingSecret | default (printf "%s-gossip" .Release.Name) }}
{{- end }}

{{- /* The names of Herald's CRDs, one per file in crds/ (named after its CRD), as a list. */}}
{{- define "herald.crdNames" -}}
{{- $names := list }}
{{- range $path, $_ := .Files.Glob "crds/*.yaml" }}
{{- $names = append $names (base $path | trimSuffix ".yaml") }}
{{- end }}
{{- toJson $names }}
{{- end }}
