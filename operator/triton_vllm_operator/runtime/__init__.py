"""The control runtime, all in this package, read in the order things flow:

kinds.py      every collection watched or written (paths, selectors, verbs), one registry
informer.py   reflectors: list page by page, watch, re-list on 410 and periodically
store.py      the World: slim caches with replace-on-relist and uid-aware deletes
workqueue.py  deduplicating queue of model keys with backoff
controller.py workers that run the pure reconcile pass and carry out its plan; resync
leader.py     Lease election with a renew deadline and release on shutdown
client.py     API calls with timeouts, a QPS/burst limit and a leadership check on writes
main.py       the process: kopf's framework around all of the above

The pure layers (api, render, placement, reconcile) never import this package (`make lint`
checks it with import-linter).
"""
