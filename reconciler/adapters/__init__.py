"""Adapters: everything that touches the world (files, Git, registries, builders,
Kubernetes, bootc), each behind a small interface and translating foreign errors."""
