"""The node agent: applies a pool's pin with `bootc switch`, a few machines at a time.

Modules, in the order a step uses them:
- `source`: the pool's pin and rollout policy (Git mirror, or in memory);
- `state`: the persisted phase machine (idle → staged → draining → rebooting →
  verifying → done | rolled-back | degraded);
- `agent`: one step of that machine over the bootc driver (`reconciler.adapters.bootc`);
- `coordination`: update slots (none, FleetLock) and MCO's `maxUnavailable` rule;
  `kubernetes`: Lease slots, cordon + eviction, node annotations;
- `health`: what "the new image came up healthy" means;
- `idle`: an idle `--once` ends as the last step did when its facts are the same;
- `cli`: `reconciler agent`.
"""
