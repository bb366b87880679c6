"""One Ray actor pool per distinct model, shared by every stage step that uses the model.

A pool asks Ray for ``max`` engine actors (each on ``num_gpus`` GPUs) and starts work once ``min`` of
them are up; on an autoscaling cluster the pending ones make Ray add nodes, and join the pool once
placed (one that fails to load is dropped with a log line).

Failures are handled here, so stages see only final outcomes:
- a dead replica (OOM, lost node) is restarted by Ray (``max_restarts``) and its calls go to live ones;
  the pool fails only when none is usable for ``startup_timeout_s``;
- a failing chunk is split until the failing items are isolated; an item is retried with backoff, on
  another replica first, up to ``max_attempts`` times, and then reported as failed, never as output;
- ``request_timeout_s`` bounds a call's own run on its replica (a call waiting for the engine does
  not run the clock); a call past it fails, and the replica restarts, since the engine thread that
  hangs cannot be stopped.

A pool sends every chunk of a call at once, so a replica holds many calls: it merges them into
large batches, or adds them to its running batch (vLLM).

Each engine actor is named after its model and replica (``llama-a/0``), so the dashboard's Actors page
tells the pools apart; every pool start gets a namespace of its own (``moaa-pool-<hex>``), so a pool
started again while Ray still kills the last one's actors, or another run on the same cluster, never
finds its names taken. A restarted replica keeps its name.

One module per job:
- :mod:`~moaa_ray.pools.replica`: how one replica takes the calls sent to it (plain asyncio);
- :mod:`~moaa_ray.pools.actor`: the Ray actor that holds one engine replica, and its name;
- :mod:`~moaa_ray.pools.dispatch`: how a pool's calls are split across its replicas, retried,
  requeued and timed (no Ray: it talks to replicas through a :class:`~moaa_ray.pools.dispatch.Link`);
- :mod:`~moaa_ray.pools.model_pool`: a model's pool, the dispatch over Ray's actors;
- :mod:`~moaa_ray.pools.pool_set`: starting and stopping a stage's pools.
"""
