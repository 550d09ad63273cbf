{{/*
The operator's RBAC rules, and only those (docs/security.md explains each). The verbs follow
what the operator and kopf really call:
- tritonvllmmodels: list+watch (kopf's watch), patch (kopf's finalizer and annotations);
  tritonvllmmodels/status: patch (conditions).
- configmaps, services, deployments: list+watch (indexes of the children), create+patch
  (server-side apply: a PATCH that creates the object is also authorized as create).
- pods: list+watch (GPUs already held on each node). events: create (kopf.event).
- nodes: list+watch (GPU placement). customresourcedefinitions: list+watch (kopf's resource
  discovery). namespaces: list+watch, only when watching chosen namespaces (kopf's namespace
  observer; unused cluster-wide).
No get, update or delete anywhere (children are removed by the garbage collector through their
ownerReferences), no Secrets (tokens reach the pods only by secretKeyRef), no wildcards.
*/}}

{{- define "tvo.rules.namespaced" -}}
- apiGroups: ["tritonvllm.io"]
  resources: ["tritonvllmmodels"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["tritonvllm.io"]
  resources: ["tritonvllmmodels/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{- define "tvo.rules.cluster" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
