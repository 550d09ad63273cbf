{{/*
The operator's RBAC rules, and only those (docs/security.md explains each). The verbs follow
what the operator and kopf really call:
- tritonvllmmodels: list+watch (the watch), patch (removing round 1's finalizer once);
  tritonvllmmodels/status: patch (conditions); tritonvllmmodels/scale: patch (an autoscaled
  multi-node model's first spec.replicas: the scale subresource its autoscaler reads needs the
  field); tritonvllmmodels/finalizers: update, never
  called: the children's ownerReferences set blockOwnerDeletion (a model's deletion waits for
  them in foreground deletion), which OwnerReferencesPermissionEnforcement (OpenShift's default)
  allows only to who may update the owner's finalizers; without it every child is refused.
- configmaps, services, deployments, poddisruptionbudgets, jobs (the prefetch Job): list+watch
  (the children's watches,
  filtered by label on the server), create+patch (server-side apply: a PATCH that creates the
  object is also authorized as create), get (before the first apply of a child, to refuse
  adopting an object of that name that is not ours).
- configmaps, poddisruptionbudgets: delete (a config no pod mounts any more; the budget of a
  model scaled to one replica).
- replicasets: list+watch (a config stays while a ReplicaSet with replicas mounts it).
- statefulsets (a multi-node model's groups, one per replica): as the children above, and
  delete (the groups of replicas scaled away).
- horizontalpodautoscalers, scaledobjects (keda.sh): list+watch, get, create+patch as for the
  children above, and delete (the autoscaler of a model whose spec.autoscaling is removed, or an
  HPA replaced by a ScaledObject once KEDA is installed).
- inferencepools (inference.networking.k8s.io): list+watch, get, create+patch as for the children
  above, and delete (the pool of a model whose spec.gateway is removed).
- pods: list+watch (GPUs held on each node; the model's pods' PodScheduled). events: create.
- secrets: get only, with operator.modelFacts.readTokenSecrets (the token a model names in
  spec.storage.hfTokenSecret, for the facts lookup of a gated repo), narrowed to
  operator.modelFacts.tokenSecretNames when set. Never list or watch.
- pods/log: get only, with operator.prefetch.readProgress (the last lines of a running prefetch
  pod: the download's bytes done and total).
- leases, in the release namespace only: get+create+update (leader election).
- nodes: list+watch (GPU placement). customresourcedefinitions: list+watch (kopf's resource
  discovery). namespaces: list+watch, only when watching chosen namespaces (kopf's namespace
  observer; unused cluster-wide).
No update anywhere but the Lease (and the finalizers right above, which the operator never uses), no delete of Deployments or Services (children go with their
model through ownerReferences), no list or watch of Secrets (tokens reach the pods only by
secretKeyRef), no wildcards.
*/}}

{{- define "tvo.rules.namespaced" -}}
- apiGroups: ["tritonvllm.io"]
  resources: ["tritonvllmmodels"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["tritonvllm.io"]
  resources: ["tritonvllmmodels/status"]
  verbs: ["patch"]
- apiGroups: ["tritonvllm.io"]
  resources: ["tritonvllmmodels/scale"]
  verbs: ["patch"]
- apiGroups: ["tritonvllm.io"]
  resources: ["tritonvllmmodels/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "get", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "get", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "get", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["list", "watch", "get", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list", "watch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "get", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "get", "create", "patch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "get", "create", "patch", "delete"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list", "watch", "get", "create", "patch", "delete"]
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["list", "watch", "get", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if and .Values.operator.modelFacts.enabled .Values.operator.modelFacts.readTokenSecrets }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
  {{- with .Values.operator.modelFacts.tokenSecretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
{{- end }}
{{- if .Values.operator.prefetch.readProgress }}
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{- end }}
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
