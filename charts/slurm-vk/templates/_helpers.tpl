{{/* Names, labels and the per-partition values every template shares. */}}

{{- define "slurm-vk.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slurm-vk.fullname" -}}
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

{{- define "slurm-vk.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "slurm-vk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "slurm-vk.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slurm-vk.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A partition name as a DNS label: lower case, `_` and `.` as `-`. */}}
{{- define "slurm-vk.slug" -}}
{{- . | lower | replace "_" "-" | replace "." "-" | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* The virtual node's name for a partition (dict "p" partition). */}}
{{- define "slurm-vk.nodeName" -}}
{{- $n := .p.nodeName | default (printf "slurm-%s" (include "slurm-vk.slug" .p.name)) }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" $n) }}
{{- fail (printf "partition %q: node name %q is not a valid DNS subdomain; set partitions[].nodeName" .p.name $n) }}
{{- end }}
{{- $n }}
{{- end }}

{{/* Object name for a partition's Deployment and ConfigMap (dict "root" $ "p" partition). */}}
{{- define "slurm-vk.partitionFullname" -}}
{{- printf "%s-%s" (include "slurm-vk.fullname" .root | trunc 22 | trimSuffix "-") (include "slurm-vk.slug" .p.name) }}
{{- end }}

{{- define "slurm-vk.slurmTokenSecret" -}}
{{- .Values.slurmrestd.token.existingSecret | default (printf "%s-slurmrestd" (include "slurm-vk.fullname" .)) }}
{{- end }}

{{- define "slurm-vk.fetchTokenSecret" -}}
{{- .Values.fetch.token.existingSecret | default (printf "%s-fetch" (include "slurm-vk.fullname" .)) }}
{{- end }}

{{/* Every node name, for the RBAC resourceNames; fails on duplicates. */}}
{{- define "slurm-vk.nodeNames" -}}
{{- $names := list }}
{{- $parts := list }}
{{- range .Values.partitions }}
{{- $n := include "slurm-vk.nodeName" (dict "p" .) }}
{{- if has $n $names }}
{{- fail (printf "two partitions get the node name %q: give one of them a nodeName" $n) }}
{{- end }}
{{- if has .name $parts }}
{{- fail (printf "partition %q is listed twice" .name) }}
{{- end }}
{{- $names = append $names $n }}
{{- $parts = append $parts .name }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* Fails with a readable message when a value the chart cannot do without is missing. */}}
{{- define "slurm-vk.validate" -}}
{{- if not .Values.partitions }}
{{- fail "partitions: list at least one Slurm partition, e.g. --set 'partitions[0].name=debug'" }}
{{- end }}
{{- if not .Values.slurmrestd.url }}
{{- fail "slurmrestd.url is required: where slurmrestd listens, e.g. http://slurmctl:6820" }}
{{- end }}
{{- if not (or .Values.slurmrestd.token.existingSecret .Values.slurmrestd.token.value) }}
{{- fail "slurmrestd.token: set existingSecret (a Secret holding the JWT) or value" }}
{{- end }}
{{- if not .Values.fetch.url }}
{{- fail "fetch.url is required: where slurm-fetchd listens on the Slurm side" }}
{{- end }}
{{- if not .Values.fetch.sharedRoot }}
{{- fail "fetch.sharedRoot is required: slurm-fetchd's -root as the compute nodes see it" }}
{{- end }}
{{- if not (or .Values.fetch.token.existingSecret .Values.fetch.token.value) }}
{{- fail "fetch.token: set existingSecret (a Secret holding the token) or value" }}
{{- end }}
{{- $t := .Values.tenancy }}
{{- if eq $t.mode "mapped" }}
{{- if not $t.namespaces }}
{{- fail "tenancy.mode=mapped: map at least one namespace to a Slurm user in tenancy.namespaces" }}
{{- end }}
{{- if .Values.slurmrestd.user }}
{{- fail "slurmrestd.user and tenancy.mode=mapped exclude each other: each namespace's jobs run as its own user" }}
{{- end }}
{{- range $ns, $e := $t.namespaces }}
{{- if not (and $e $e.user) }}
{{- fail (printf "tenancy.namespaces.%s: a user is required in mapped mode" $ns) }}
{{- end }}
{{- end }}
{{- else }}
{{- range $ns, $e := $t.namespaces }}
{{- if and $e (or $e.user $e.tokenSecret) }}
{{- fail (printf "tenancy.namespaces.%s: user and tokenSecret need tenancy.mode=mapped (single mode runs every job as the token's user)" $ns) }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := include "slurm-vk.nodeNames" . }}
{{- end }}

{{/* slurm-vk's config file for one partition (dict "root" $ "p" partition). */}}
{{- define "slurm-vk.config" -}}
{{- $v := .root.Values }}
{{- $p := .p }}
{{- $labels := merge (dict) ($p.labels | default dict) $v.node.labels }}
{{- $labelList := list }}
{{- range $k := keys $labels | sortAlpha }}
{{- $labelList = append $labelList (printf "%s=%s" $k (get $labels $k)) }}
{{- end }}
{{- $taintList := list }}
{{- range concat ($v.node.taints | default list) ($p.taints | default list) }}
{{- if .value }}
{{- $taintList = append $taintList (printf "%s=%s:%s" .key .value .effect) }}
{{- else }}
{{- $taintList = append $taintList (printf "%s:%s" .key .effect) }}
{{- end }}
{{- end }}
{{- $cfg := dict
  "nodeName" (include "slurm-vk.nodeName" (dict "p" $p))
  "partition" $p.name
  "slurmrestdURL" $v.slurmrestd.url
  "slurmAPIVersion" $v.slurmrestd.apiVersion
  "slurmUser" $v.slurmrestd.user
  "slurmTokenFile" "/var/run/slurm-vk/slurmrestd/token"
  "fetchURL" $v.fetch.url
  "fetchTokenFile" "/var/run/slurm-vk/fetch/token"
  "sharedRoot" $v.fetch.sharedRoot
  "runtime" $v.runtime
  "hostPathPrefixes" (join "," $v.hostPathPrefixes)
  "allowedOptions" (join "," $v.allowedOptions)
  "statusInterval" $v.statusInterval
  "nodeInterval" $v.nodeInterval
  "restartBackoff" $v.restartBackoff
  "maxRestartBackoff" $v.maxRestartBackoff
  "logTimeHelper" $v.logTimeHelper
  "agent" $v.exec.agent
  "agentURL" $v.exec.agentURL
  "agentCAFile" $v.exec.agentCAFile
  "maxPods" (int (ternary $p.maxPods $v.node.maxPods (hasKey $p "maxPods")))
  "queueFactor" (float64 (ternary $p.queueFactor $v.node.queueFactor (hasKey $p "queueFactor")))
  "nodeLabels" (join "," $labelList)
  "nodeTaints" (join "," $taintList)
  "listen" (printf ":%d" (int $v.kubelet.port))
  "verbose" (eq $v.logLevel "debug")
}}
{{- if $v.slurmrestd.tls.caConfigMap }}
{{- $_ := set $cfg "slurmCAFile" (printf "/var/run/slurm-vk/slurmrestd-ca/%s" $v.slurmrestd.tls.caKey) }}
{{- end }}
{{- if $v.fetch.tls.caConfigMap }}
{{- $_ := set $cfg "fetchCAFile" (printf "/var/run/slurm-vk/fetch-ca/%s" $v.fetch.tls.caKey) }}
{{- end }}
{{- if $v.kubelet.tls.existingSecret }}
{{- $_ := set $cfg "tlsCert" "/var/run/slurm-vk/kubelet-tls/tls.crt" }}
{{- $_ := set $cfg "tlsKey" "/var/run/slurm-vk/kubelet-tls/tls.key" }}
{{- end }}
{{- if $v.kubelet.auth.enabled }}
{{- $_ := set $cfg "clientCA" (printf "/var/run/slurm-vk/client-ca/%s" $v.kubelet.auth.clientCAKey) }}
{{- else }}
{{- $_ := set $cfg "insecureKubeletAPI" true }}
{{- end }}
{{- if $v.metrics.enabled }}
{{- $_ := set $cfg "metricsListen" (printf ":%d" (int $v.metrics.port)) }}
{{- end }}
{{- $allowed := merge (dict) ($p.allowed | default dict) ($v.allowed | default dict) }}
{{- range $k := list "runtimes" "partitions" "accounts" "qos" "reservations" "constraints" }}
{{- $key := get (dict "runtimes" "allowedRuntimes" "partitions" "allowedPartitions" "accounts" "allowedAccounts" "qos" "allowedQOS" "reservations" "allowedReservations" "constraints" "allowedConstraints") $k }}
{{- $_ := set $cfg $key (join "," (get $allowed $k | default list)) }}
{{- end }}
{{- $tenants := dict }}
{{- range $ns, $t := $v.tenancy.namespaces }}
{{- $t = $t | default dict }}
{{- $e := pick $t "user" "account" }}
{{- if $t.tokenSecret }}
{{- $_ := set $e "tokenFile" (printf "/var/run/slurm-vk/tenants/%s/token" $ns) }}
{{- end }}
{{- $_ := set $tenants $ns $e }}
{{- end }}
{{- $_ := set $cfg "tenancy" (dict "mode" $v.tenancy.mode "namespaces" $tenants) }}
{{- toYaml $cfg }}
{{- end }}
