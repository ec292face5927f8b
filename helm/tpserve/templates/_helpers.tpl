{{/* Names, labels, images and the pieces the router and worker pods share. */}}

{{- define "tpserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tpserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* selector labels of one component: (dict "ctx" $ "component" "router") */}}
{{- define "tpserve.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tpserve.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Worker groups in one worker pod: gpusPerNode / tp per node, or 1 per StatefulSet pod. */}}
{{- define "tpserve.groupsPerPod" -}}
{{- if eq .Values.workers.mode "perNode" -}}
{{- if ne (mod (int .Values.workers.gpusPerNode) (int .Values.tp)) 0 -}}
{{- fail (printf "workers.gpusPerNode (%d) must be a multiple of tp (%d): each node runs gpusPerNode / tp whole groups" (int .Values.workers.gpusPerNode) (int .Values.tp)) -}}
{{- end -}}
{{- div (int .Values.workers.gpusPerNode) (int .Values.tp) -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{- define "tpserve.workersHeadless" -}}
{{- printf "%s-worker" (include "tpserve.fullname" .) -}}
{{- end -}}

{{/* The model folder inside the pods; empty for the bundled model (the CLI's default). */}}
{{- define "tpserve.modelDir" -}}
{{- if ne .Values.model.source "bundled" -}}
{{- if .Values.model.path -}}
{{- printf "%s/%s" .Values.model.mountPath .Values.model.path -}}
{{- else -}}
{{- .Values.model.mountPath -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tpserve.modelVolume" -}}
{{- $m := .Values.model -}}
{{- if eq $m.source "pvc" }}
- name: model
  persistentVolumeClaim:
    claimName: {{ required "model.pvc.claimName is required with model.source=pvc" $m.pvc.claimName }}
    readOnly: true
{{- else if eq $m.source "hostPath" }}
- name: model
  hostPath:
    path: {{ required "model.hostPath.path is required with model.source=hostPath" $m.hostPath.path }}
    type: Directory
{{- else if eq $m.source "image" }}
- name: model
  image:
    reference: {{ required "model.image.reference is required with model.source=image" $m.image.reference }}
    pullPolicy: {{ $m.image.pullPolicy }}
{{- end }}
{{- end -}}

{{- define "tpserve.modelMount" -}}
{{- if ne .Values.model.source "bundled" }}
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* REDIS_URL / NATS_URL for one service: (dict "ctx" $ "name" "redis" "env" "REDIS_URL" "scheme" "redis" "port" 6379) */}}
{{- define "tpserve.stateEnv" -}}
{{- $v := index .ctx.Values .name -}}
{{- if eq $v.mode "deploy" }}
- name: {{ .env }}
  value: {{ printf "%s://%s-%s:%d" .scheme (include "tpserve.fullname" .ctx) .name (int .port) | quote }}
{{- else if eq $v.mode "external" }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-%s" (include "tpserve.fullname" .ctx) .name) $v.external.existingSecret }}
      key: {{ $v.external.secretKey }}
{{- end }}
{{- end -}}

{{/* Environment every tpserve pod gets: the cluster name and where Redis and NATS are. */}}
{{- define "tpserve.clusterEnv" -}}
- name: TPSERVE_CLUSTER
  value: {{ .Release.Name | quote }}
{{- include "tpserve.stateEnv" (dict "ctx" . "name" "redis" "env" "REDIS_URL" "scheme" "redis" "port" 6379) }}
{{- include "tpserve.stateEnv" (dict "ctx" . "name" "nats" "env" "NATS_URL" "scheme" "nats" "port" 4222) }}
{{- end -}}

{{/* "true" when the pods get REDIS_URL: worker groups then register in the ledger and routers find them there. */}}
{{- define "tpserve.clustered" -}}
{{- if ne .Values.redis.mode "none" -}}true{{- end -}}
{{- end -}}

{{/* The args of one worker group's container: (dict "ctx" $ "group" 0) */}}
{{- define "tpserve.workerArgs" -}}
{{- $v := .ctx.Values -}}
{{- $w := $v.workers -}}
- worker
{{- with include "tpserve.modelDir" .ctx }}
- --model
- {{ . | quote }}
{{- end }}
- --quantization
- {{ $v.model.quantization | quote }}
- --group-size
- {{ $v.model.groupSize | quote }}
- --load-format
- {{ $v.model.loadFormat | quote }}
- --device
- {{ $w.device | quote }}
{{- if $w.kvCacheMiB }}
- --kv-cache-mib
- {{ $w.kvCacheMiB | quote }}
{{- end }}
- --gpu-memory-utilization
- {{ $w.gpuMemoryUtilization | quote }}
- --kv-cache-dtype
- {{ $w.kvCacheDtype | quote }}
- --max-batch-tokens
- {{ $w.maxBatchTokens | quote }}
- --threads
- {{ $w.threads | quote }}
- --worker-host
- "0.0.0.0"
- --worker-port
- {{ add $w.port .group | quote }}
- --worker-metrics-port
- {{ add $w.metricsPort .group | quote }}
- --worker-log-level
- {{ $w.logLevel | quote }}
- --drain-timeout-s
- {{ $w.drainTimeoutSeconds | quote }}
{{- if gt (int $v.tp) 1 }}
- --tp
- {{ $v.tp | quote }}
{{- end }}
{{- if include "tpserve.clustered" .ctx }}
# Registers as a group in the Redis ledger under a name unique per pod and group; routers dial the pod IP.
- --group
- "$(POD_NAME)-g{{ .group }}"
- --advertise-host
- "$(POD_IP)"
{{- end }}
{{- range $w.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* One worker group's container: (dict "ctx" $ "group" 0) */}}
{{- define "tpserve.workerContainer" -}}
{{- $v := .ctx.Values -}}
{{- $w := $v.workers -}}
{{- $port := add $w.port .group -}}
- name: group-{{ .group }}
  image: {{ include "tpserve.image" (dict "ctx" .ctx "image" $v.image.worker) }}
  imagePullPolicy: {{ $v.image.worker.pullPolicy }}
  args:
    {{- include "tpserve.workerArgs" . | nindent 4 }}
  ports:
    - name: grpc-{{ .group }}
      containerPort: {{ $port }}
    - name: metrics-{{ .group }}
      containerPort: {{ add $w.metricsPort .group }}
  env:
    - name: TPSERVE_TP_SIZE
      value: {{ $v.tp | quote }}
    - name: TPSERVE_GROUP_INDEX
      value: {{ .group | quote }}
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    {{- include "tpserve.clusterEnv" .ctx | nindent 4 }}
    {{- with $w.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  resources:
    {{- $res := deepCopy (default dict $w.resources) }}
    {{- if ne $w.device "cpu" }}
    {{- $_ := set $res "limits" (merge (dict $w.gpuResource (int $v.tp)) (default dict $res.limits)) }}
    {{- $_ := set $res "requests" (merge (dict $w.gpuResource (int $v.tp)) (default dict $res.requests)) }}
    {{- end }}
    {{- toYaml $res | nindent 4 }}
  startupProbe:
    tcpSocket:
      port: {{ $port }}
    periodSeconds: {{ $w.startupProbe.periodSeconds }}
    failureThreshold: {{ $w.startupProbe.failureThreshold }}
  readinessProbe:
    grpc:
      port: {{ $port }}
      service: tpserve.worker.v1.Worker
    periodSeconds: 5
    failureThreshold: 2
  livenessProbe:
    tcpSocket:
      port: {{ $port }}
    periodSeconds: 10
    failureThreshold: 6
  securityContext:
    {{- include "tpserve.containerSecurity" . | nindent 4 }}
  volumeMounts:
    - name: dshm
      mountPath: /dev/shm
    - name: tmp
      mountPath: /tmp
    {{- with include "tpserve.modelMount" .ctx | trim }}{{ . | nindent 4 }}{{ end }}
{{- end -}}

{{- define "tpserve.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tpserve.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* The worker pod spec shared by the DaemonSet and the StatefulSet. */}}
{{- define "tpserve.workerPodSpec" -}}
{{- $w := .Values.workers -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{ end -}}
terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds }}
securityContext:
  {{- include "tpserve.podSecurity" . | nindent 2 }}
containers:
{{- range $g := until (int (include "tpserve.groupsPerPod" .)) }}
{{- include "tpserve.workerContainer" (dict "ctx" $ "group" $g) | nindent 0 }}
{{- end }}
{{- with $w.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: dshm
    emptyDir:
      medium: Memory
      sizeLimit: {{ $w.shmSize }}
  - name: tmp
    emptyDir: {}
  {{- with include "tpserve.modelVolume" . | trim }}{{ . | nindent 2 }}{{ end }}
{{- end -}}

{{/* The gRPC ports of the worker groups of one pod, as a list. */}}
{{- define "tpserve.groupPorts" -}}
{{- $ports := list -}}
{{- range $g := until (int (include "tpserve.groupsPerPod" .)) -}}
{{- $ports = append $ports (toString (add $.Values.workers.port $g)) -}}
{{- end -}}
{{- $ports | toJson -}}
{{- end -}}

{{/* Checks across values that the schema cannot express. */}}
{{- define "tpserve.validate" -}}
{{- $w := .Values.workers -}}
{{- $r := .Values.router -}}
{{- if le (int $w.terminationGracePeriodSeconds) (int $w.drainTimeoutSeconds) -}}
{{- fail (printf "workers.terminationGracePeriodSeconds (%d) must exceed workers.drainTimeoutSeconds (%d), or Kubernetes kills workers mid-drain" (int $w.terminationGracePeriodSeconds) (int $w.drainTimeoutSeconds)) -}}
{{- end -}}
{{- if le (int $r.terminationGracePeriodSeconds) (add $r.drainTimeoutSeconds $r.preStopSleepSeconds | int) -}}
{{- fail (printf "router.terminationGracePeriodSeconds (%d) must exceed router.drainTimeoutSeconds + router.preStopSleepSeconds (%d)" (int $r.terminationGracePeriodSeconds) (add $r.drainTimeoutSeconds $r.preStopSleepSeconds | int)) -}}
{{- end -}}
{{- if and $r.autoscaling.enabled (gt (int $r.autoscaling.minReplicas) (int $r.autoscaling.maxReplicas)) -}}
{{- fail "router.autoscaling.minReplicas must not exceed router.autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}
