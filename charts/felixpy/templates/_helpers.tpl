{{- define "felixpy.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "felixpy.labels" -}}
app.kubernetes.io/name: felixpy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* Environment shared by the node agent and the route reflectors: how to reach the datastore. */}}
{{- define "felixpy.datastoreEnv" -}}
- name: DATASTORE_TYPE
  value: {{ .Values.datastore.type | quote }}
{{- if eq .Values.datastore.type "etcdv3" }}
- name: ETCD_ENDPOINTS
  value: {{ required "datastore.etcd.endpoints is required with datastore.type=etcdv3" .Values.datastore.etcd.endpoints | quote }}
{{- if .Values.datastore.etcd.tls.secretName }}
- name: ETCD_CA_CERT_FILE
  value: /etc/felixpy/etcd-tls/ca.crt
- name: ETCD_CERT_FILE
  value: /etc/felixpy/etcd-tls/tls.crt
- name: ETCD_KEY_FILE
  value: /etc/felixpy/etcd-tls/tls.key
{{- end }}
{{- if .Values.datastore.etcd.username }}
- name: ETCD_USERNAME
  value: {{ .Values.datastore.etcd.username | quote }}
- name: ETCD_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "datastore.etcd.passwordSecret is required with a username" .Values.datastore.etcd.passwordSecret }}
      key: password
{{- end }}
{{- end }}
- name: NODENAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: FELIX_LOGSEVERITYSCREEN
  value: {{ .Values.logSeverity | quote }}
- name: FELIX_HEALTHENABLED
  value: "true"
- name: FELIX_HEALTHHOST
  value: {{ .Values.healthHost | quote }}
- name: FELIX_HEALTHPORT
  value: {{ .Values.healthPort | quote }}
- name: FELIX_PROMETHEUSMETRICSENABLED
  value: {{ .Values.prometheusMetricsEnabled | quote }}
- name: FELIX_PROMETHEUSMETRICSHOST
  value: {{ .Values.prometheusMetricsHost | quote }}
- name: FELIX_PROMETHEUSMETRICSPORT
  value: {{ .Values.prometheusMetricsPort | quote }}
{{- end -}}

{{- define "felixpy.etcdTLSVolumeMount" -}}
{{- if and (eq .Values.datastore.type "etcdv3") .Values.datastore.etcd.tls.secretName }}
- name: etcd-tls
  mountPath: /etc/felixpy/etcd-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "felixpy.etcdTLSVolume" -}}
{{- if and (eq .Values.datastore.type "etcdv3") .Values.datastore.etcd.tls.secretName }}
- name: etcd-tls
  secret:
    secretName: {{ .Values.datastore.etcd.tls.secretName }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{- define "felixpy.probes" -}}
livenessProbe:
  httpGet:
    path: /liveness
    port: {{ .Values.healthPort }}
    host: 127.0.0.1
  periodSeconds: 10
  initialDelaySeconds: 10
  failureThreshold: 6
  timeoutSeconds: 10
readinessProbe:
  httpGet:
    path: /readiness
    port: {{ .Values.healthPort }}
    host: 127.0.0.1
  periodSeconds: 10
  timeoutSeconds: 10
{{- end -}}
