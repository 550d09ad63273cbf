"""GPU placement: where a model's replicas run and at which tensor-parallel size, or why nowhere.

Pure: reads the model's spec and facts and plain Node and Pod dicts, talks to nothing.
- inventory.py: the nodes' GPUs (class, count, memory, free capacity);
- engine.py: the engine arguments placement reads;
- memory.py: the one memory plan interface, by the model's facts (by_facts.py, kv_cache.py,
  split.py) or by spec.modelSizeGiB (by_size.py), answering in budget.py's terms;
- exclusion.py: why a node cannot take the model's pods;
- place.py: the one algorithm, with bin-packing preferences (preference.py);
- sticky.py: a placement kept while the fields it reads are unchanged;
- model.py: the control loop's and the `render` command's entry points.
"""

from .budget import GPUs, Refusal, Sized
from .engine import EngineArgError, EngineLimits, pipeline_parallel_size
from .exclusion import exclusion
from .inventory import (
    COUNT_LABEL,
    MEMORY_LABEL,
    PRODUCT_LABEL,
    NodeGPUs,
    gpus_per_pod,
    inventory,
    pod_tolerations,
)
from .memory import MemoryPlan, memory_plan
from .model import (
    FactsQuery,
    facts_query,
    facts_verdict,
    place_by_size,
    place_from_snapshot,
    place_model,
    place_spec,
)
from .place import (
    BELOW_ESTIMATE,
    Placed,
    Placement,
    PlacementWarning,
    Unplaceable,
    free_replica_slots,
    place,
)
from .preference import preferred_terms
from .sticky import PLACEMENT_ANNOTATION, placement_digest, sticky

__all__ = [
    "BELOW_ESTIMATE",
    "COUNT_LABEL",
    "MEMORY_LABEL",
    "PLACEMENT_ANNOTATION",
    "PRODUCT_LABEL",
    "EngineArgError",
    "EngineLimits",
    "FactsQuery",
    "GPUs",
    "MemoryPlan",
    "NodeGPUs",
    "Placed",
    "Placement",
    "PlacementWarning",
    "Refusal",
    "Sized",
    "Unplaceable",
    "exclusion",
    "facts_query",
    "facts_verdict",
    "free_replica_slots",
    "gpus_per_pod",
    "inventory",
    "memory_plan",
    "pipeline_parallel_size",
    "place",
    "place_by_size",
    "place_from_snapshot",
    "place_model",
    "place_spec",
    "placement_digest",
    "pod_tolerations",
    "preferred_terms",
    "sticky",
]
