"""The node agent: applies a pool's pin with `bootc switch`, a few machines at a time."""
