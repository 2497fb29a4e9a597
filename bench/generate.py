"""Generate a large, realistic config repository: N MachineConfigs across P pools.

Pools: `master`, `worker`, and P-2 custom pools that select `role In [worker, <pool>]`
(the usual MCO pattern, so every custom pool merges all worker configs plus its own).
Configs rotate through the kinds admins write: a file in /etc (base64), a file under
/var, a systemd unit with a dropin, kernel arguments, SSH keys; several per file as
multi-document YAML, like real repositories.

    python bench/generate.py OUT_DIR --configs 2000 --pools 20
"""

from __future__ import annotations

import argparse
import base64
import random
from pathlib import Path

HEADER = "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n"


def _b64(text: str) -> str:
    return "data:;base64," + base64.b64encode(text.encode()).decode()


def _config(i: int, role: str, rng: random.Random) -> str:
    name = f"{10 + i % 90:02d}-{role}-cfg-{i:05d}"
    meta = (
        f"{HEADER}metadata:\n  name: {name}\n  labels:\n"
        f"    machineconfiguration.openshift.io/role: {role}\n"
    )
    kind = i % 5
    body = "".join(f"option{j} = {rng.randint(0, 10**6)}\n" for j in range(12))
    if kind == 0:
        spec = f"""spec:
  config:
    ignition:
      version: 3.2.0
    storage:
      files:
        - path: /etc/{role}/app-{i}.conf
          mode: 420
          overwrite: true
          contents:
            source: {_b64(body)}
        - path: /etc/sysctl.d/90-{i}.conf
          mode: 420
          contents:
            source: {_b64(f"net.core.somaxconn = {1024 + i}{chr(10)}")}
"""
    elif kind == 1:
        spec = f"""spec:
  config:
    ignition:
      version: 3.4.0
    storage:
      files:
        - path: /var/lib/app-{i}/state.json
          mode: 384
          contents:
            source: "data:,%7B%22id%22%3A{i}%7D"
"""
    elif kind == 2:
        spec = f"""spec:
  config:
    ignition:
      version: 3.4.0
    systemd:
      units:
        - name: app-{i}.service
          enabled: true
          contents: |
            [Unit]
            Description=App {i}
            [Service]
            ExecStart=/usr/bin/app --id {i}
            [Install]
            WantedBy=multi-user.target
          dropins:
            - name: 10-limits.conf
              contents: |
                [Service]
                MemoryMax={128 + i % 512}M
"""
    elif kind == 3:
        spec = f"""spec:
  kernelArguments:
    - quiet
    - hugepages={i % 64}
"""
    else:
        spec = f"""spec:
  config:
    ignition:
      version: 3.2.0
    passwd:
      users:
        - name: core
          sshAuthorizedKeys:
            - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA{i:08d}{"x" * 28} user{i}@example.com
"""
    return meta + spec


def generate(out: Path, configs: int, pools: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    customs = [f"custom{i:02d}" for i in range(max(0, pools - 2))]
    roles = ["master", "worker", *customs]
    (out / "machineconfigpools").mkdir(parents=True, exist_ok=True)
    (out / "machineconfigs").mkdir(exist_ok=True)
    (out / "machineosconfigs").mkdir(exist_ok=True)
    for role in roles:
        if role in ("master", "worker"):
            selector = f"    matchLabels:\n      machineconfiguration.openshift.io/role: {role}\n"
        else:
            selector = (
                "    matchExpressions:\n      - key: machineconfiguration.openshift.io/role\n"
                f"        operator: In\n        values: [worker, {role}]\n"
            )
        (out / "machineconfigpools" / f"{role}.yaml").write_text(
            "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfigPool\n"
            f"metadata:\n  name: {role}\nspec:\n  machineConfigSelector:\n{selector}"
        )
        (out / "machineosconfigs" / f"{role}.yaml").write_text(
            "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineOSConfig\n"
            f"metadata:\n  name: {role}\nspec:\n  machineConfigPool:\n    name: {role}\n"
            f"  renderedImagePushSpec: registry.example.com/fleet/{role}:latest\n"
            "  baseImagePullSpec: quay.io/fedora/fedora-bootc:42\n"
        )
    per_file = 4
    docs: list[str] = []
    for i in range(configs):
        docs.append(_config(i, roles[i % len(roles)], rng))
        if len(docs) == per_file or i == configs - 1:
            (out / "machineconfigs" / f"batch-{i // per_file:05d}.yaml").write_text(
                "---\n".join(docs)
            )
            docs = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--pools", type=int, default=20)
    args = parser.parse_args()
    generate(args.out, args.configs, args.pools)


if __name__ == "__main__":
    main()
