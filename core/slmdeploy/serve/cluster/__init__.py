"""``slmdeploy serve --ray``: the same server as Ray Serve deployments on a Ray cluster.

- `options`: what the command asks of the cluster (address, replicas or autoscaling) and each deployment's Ray
  Serve options (`ray_actor_options` from the package's threads and measured peak memory);
- `packages`: where a package is on the shared cache every node mounts, and the digest a replica checks it by;
- `bridge`: a request carried from the front to a replica, and the replica's app called on it in process;
- `replica`: one model's deployment: slmdeploy's engine and FastAPI app, one engine per replica;
- `front`: the ingress deployment (Host, CORS and body limits, as on one machine): routes a request to its model's
  replicas, ends a stream whose replica was lost with an error chunk, aggregates ``/health`` and ``/metrics``;
- `stats`: the replicas' health and metrics, gathered for the front;
- `deploy`: connecting, checking the nodes, running the application until the command is stopped.

Ray Serve comes with the ``[ray-serve]`` extra and is imported only here, inside functions.
"""
