"""The buildah builder: build a pool's Containerfile on this machine and push it.

Stage: build, for plans with RUN steps (extensions, kernel swap, the admin's
containerFile). Input: a `PoolPlan`. Output: the digest of the pushed image manifest,
or a `BuildError` with the log's last lines (`transient=False` when a build step
failed: the same inputs fail the same way; `True` for pull, push, timeout or a killed
build).

How, and why:
- `build.sh` does the work (pull the base by digest, `buildah bud`, `buildah push
  --digestfile`), the same script a Kubernetes Job runs (`kubejob.py`). Between bud
  and push it removes the empty `/etc/hostname`, `/etc/resolv.conf` and `/etc/hosts`
  buildah's RUN steps leave (bootc's `buildah-injected` lint), except those the pool's
  config layer writes (`script.strip_if_empty`).
- `--isolation chroot`: no OCI runtime, no cgroups; crun fails on this kind of host
  (cgroup v1 hybrid, reference test-infrastructure.md §4) and chroot needs nothing but
  buildah. `--timestamp 0`: two builds of the same inputs give the same digest.
- Storage is the builder's own: `<work_dir>/containers` (graph root, run root, vfs or
  overlay) with its own `storage.conf` and `containers.conf` (runtime runc, lowered
  ulimits: the working settings of reference §4), so nothing depends on the host's
  `/etc/containers` or disturbs other users of buildah. The base stays cached there;
  built images are removed after the push.
- One build at a time per storage (a file lock), so working containers left by a
  killed build (a reconciler restart, a timeout) are stale by definition and the
  script removes them before building: a killed build never breaks the next one, and
  nothing it left behind is reused. `storages` builds may run at once, each in a
  storage of its own (`containers`, `containers-1`, ...: the base is pulled into each).
- One build per inputs digest on this host, whichever reconciler process starts it:
  a lock per inputs digest in a directory those processes share (`buildlock.py`). A
  build that finds the lock held waits for its holder and raises `BuiltElsewhere`
  (`building.ensure_image` then finds the image by its tag, or builds if the other
  build failed). Both locks are inherited by `build.sh` (`LOCK_FDS`; not by buildah,
  whose chroot RUN steps lose their stderr with them): when the reconciler is killed
  (SIGKILL, OOM), its build keeps them until it exits, so no second build starts over
  it and no stale-container cleanup runs under it. (Such an orphan ends at its next
  line of output, its log pipe gone, or when it is done.)
- Logs stream line by line to `<log_dir>/<pool>-<id>.log` and to the logger (one INFO
  line per Containerfile step, the rest at DEBUG), with every credential string
  replaced by `***`. The log is kept when the build fails, removed when it succeeds.
- A timeout, `stop` (the reconciler shutting down) or Ctrl-C kills the whole process
  group (buildah and what it started).
- Credentials: the registry client's, for exactly the base and the target, written to
  a private (0600) auth file for the build's duration (`--authfile`), so pull secrets
  and every auth-file format the client reads work with buildah too; `--tls-verify=false`
  only for the client's plain-HTTP hosts; the client's CA file via `--cert-dir`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from reconciler.adapters.builders import buildlock, script
from reconciler.adapters.registry import RegistryClient
from reconciler.core import reference
from reconciler.core.poolplan import PoolPlan
from reconciler.errors import BuildError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 3600.0
_STEP_RE = re.compile(r"^STEP (\d+)/(\d+): (.*)$")
_KILL_GRACE_S = 5.0

CONTAINERS_CONF = """\
# Written by the reconciler's buildah builder (reference test-infrastructure.md §4).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
"""


class BuiltElsewhere(BuildError):
    """Another process held the build lock of these inputs and has let it go: look the
    image up by its tag (it may have failed: then build)."""


class BuildahBuilder:
    """Builds with `buildah bud --isolation chroot` on this machine (module docstring)."""

    name = "buildah"

    def __init__(
        self,
        registry: RegistryClient,
        work_dir: Path,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        log_dir: Path | None = None,
        storage_driver: str = "vfs",
        buildah: str = "buildah",
        locks: buildlock.BuildLocks | None = None,
        storages: int = 1,
    ) -> None:
        if storage_driver not in ("vfs", "overlay"):
            raise ValueError(f"storage driver {storage_driver!r}: use vfs or overlay")
        if storages < 1:
            raise ValueError(f"storages must be at least 1, not {storages}")
        self.registry = registry
        self.work_dir = Path(work_dir)
        self.timeout_s = timeout_s
        self.log_dir = Path(log_dir) if log_dir is not None else self.work_dir / "build-logs"
        self.storage_driver = storage_driver
        self.buildah = buildah
        self.locks = locks or buildlock.BuildLocks()
        self.storages = storages
        self.last_pgid: int | None = None
        """The process group of the latest build (tests check it is gone after a kill)."""
        self._running: set[subprocess.Popen[bytes]] = set()
        self._stopping = threading.Event()
        self._guard = threading.Lock()

    # --- paths ----------------------------------------------------------------------------

    @property
    def storage_dir(self) -> Path:
        """The first storage (the only one with `storages` 1)."""
        return self.storage_dirs[0]

    @property
    def storage_dirs(self) -> list[Path]:
        return [self.work_dir / ("containers" if i == 0 else f"containers-{i}")
                for i in range(self.storages)]  # fmt: skip

    def _configure_storage(self, root: Path) -> dict[str, str]:
        (root / "storage").mkdir(parents=True, exist_ok=True)
        (root / "run").mkdir(parents=True, exist_ok=True)
        storage_conf = root / "storage.conf"
        storage_conf.write_text(
            "[storage]\n"
            f'driver = "{self.storage_driver}"\n'
            f'graphroot = "{root / "storage"}"\n'
            f'runroot = "{root / "run"}"\n'
        )
        containers_conf = root / "containers.conf"
        containers_conf.write_text(CONTAINERS_CONF)
        return {
            "CONTAINERS_STORAGE_CONF": str(storage_conf),
            "CONTAINERS_CONF": str(containers_conf),
            "STORAGE_DRIVER": self.storage_driver,
            "STORAGE_ROOT": str(root / "storage"),
            "STORAGE_RUNROOT": str(root / "run"),
        }

    @contextlib.contextmanager
    def _storage_lock(self, pool: str) -> Iterator[tuple[Path, int]]:
        """A free storage and its lock's descriptor (for the build to inherit)."""
        files = []
        try:
            for root in self.storage_dirs:
                root.mkdir(parents=True, exist_ok=True)
                f = open(root / "lock", "w")  # noqa: SIM115 - closed below
                files.append(f)
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                yield root, f.fileno()
                return
            log.info("pool %s: waiting for another build to finish with %s", pool,
                     self.storage_dirs[0])  # fmt: skip
            fcntl.flock(files[0], fcntl.LOCK_EX)
            yield self.storage_dirs[0], files[0].fileno()
        finally:
            for f in files:
                f.close()  # closing lets the lock go

    def _claim(self, plan: PoolPlan, waiting: Callable[[str], None] | None) -> buildlock.Claim:
        """This host's lock of the plan's inputs; if another process holds it, wait for
        it to let go and raise `BuiltElsewhere`."""
        what = f"buildah build of {plan.target} for pool {plan.pool} (work dir {self.work_dir})"
        claim = self.locks.try_claim(plan.inputs_digest, what)
        if claim is not None:
            return claim
        holder = self.locks.holder(plan.inputs_digest)
        log.info("pool %s: %s is already being built: %s; waiting for it", plan.pool,
                 plan.target, holder)  # fmt: skip
        if waiting is not None:
            waiting(holder)
        if not self.locks.wait(plan.inputs_digest, stop=self._stopping):
            raise BuildError(f"pool {plan.pool}: stopped while waiting for {holder}",
                             transient=True)  # fmt: skip
        raise BuiltElsewhere(
            f"pool {plan.pool}: {plan.target} was being built by {holder}, which has ended; "
            "look it up in the registry",
            transient=True,
        )

    def stop(self) -> None:
        """Kill the builds running now (the reconciler is shutting down) and end waits
        for other processes' builds; each fails as a transient `BuildError`."""
        self._stopping.set()
        with self._guard:
            running = list(self._running)
        for proc in running:
            _kill_group(proc)

    # --- the build ------------------------------------------------------------------------

    def build(self, plan: PoolPlan, waiting: Callable[[str], None] | None = None) -> str:
        """Build `plan`'s Containerfile, push it to `plan.target`; return the digest.

        When another process is building these inputs, `waiting` hears who, this waits
        for it and raises `BuiltElsewhere`."""
        if shutil.which(self.buildah) is None:
            raise BuildError(
                f"pool {plan.pool}: {self.buildah!r} is not on PATH; install buildah "
                "(scripts/setup does) or use the Job builder",
                transient=False,
            )
        inputs = script.prepare(plan)
        build_dir = self.work_dir / "builds" / f"{plan.pool}-{inputs.short_id}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{plan.pool}-{inputs.short_id}.log"
        auth = script.auth_document(
            self.registry.credentials, [inputs.base, inputs.target]
        )  # fmt: skip
        claim = self._claim(plan, waiting)
        with claim, self._storage_lock(plan.pool) as (root, storage_fd):
            # A directory left by a killed build is replaced, never reused.
            shutil.rmtree(build_dir, ignore_errors=True)
            input_dir, work = build_dir / "input", build_dir / "work"
            input_dir.mkdir(parents=True)
            work.mkdir()
            os.chmod(build_dir, 0o700)
            for name, data in inputs.files().items():
                (input_dir / name).write_bytes(data)
            env = self._env(inputs, input_dir, work, root)
            if not auth.empty:
                authfile = build_dir / "auth.json"
                fd = os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(auth.data)
                env["PULL_AUTHFILE"] = env["PUSH_AUTHFILE"] = str(authfile)
                log.debug("pool %s: registry logins from %s", plan.pool, ", ".join(auth.sources))
            try:
                code, tail = self._run(inputs, env, log_path, script.LogTail(auth.secrets),
                                       keep=(claim.fd, storage_fd))  # fmt: skip
            finally:
                # The auth file never outlives the build, whatever happened.
                (build_dir / "auth.json").unlink(missing_ok=True)
            where = f"build log: {log_path}"
            if code != 0:
                raise script.failure(inputs, code, tail, where=where)
            digest = script.check_digest(inputs, (work / "digest.out").read_text(), where=where)
            shutil.rmtree(build_dir, ignore_errors=True)
        log_path.unlink(missing_ok=True)
        log.info(
            "pool %s: uploaded image %s (buildah)",
            plan.pool,
            reference.short_image(inputs.target, digest),
        )
        return digest

    def _env(
        self, inputs: script.BuildInputs, input_dir: Path, work: Path, storage: Path
    ) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            # Our auth file and storage replace whatever the environment names.
            if k not in ("REGISTRY_AUTH_FILE", "CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF")
        }
        env.update(self._configure_storage(storage))
        insecure = self.registry.insecure
        env.update(
            INPUT_DIR=str(input_dir),
            WORK_DIR=str(work),
            BASE_IMAGE=inputs.base_image,
            IMAGE=inputs.image,
            DIGEST_FILE=str(work / "digest.out"),
            PULL_TLS_VERIFY=script.env_flags(inputs.base.registry, insecure),
            PUSH_TLS_VERIFY=script.env_flags(inputs.target.registry, insecure),
            TIMESTAMP="0",
            STRIP_IF_EMPTY=" ".join(inputs.strip_if_empty),
        )
        cas = script.ca_certificates(
            self.registry.ca_file,
            self.registry.certs_dirs,
            [inputs.base.registry, inputs.target.registry],
        )
        if cas:
            certs = work / "certs"
            certs.mkdir()
            for name, data in cas.items():
                (certs / name).write_bytes(data)
            env["CERT_DIR"] = str(certs)
        return env

    def _run(
        self,
        inputs: script.BuildInputs,
        env: dict[str, str],
        log_path: Path,
        tail: script.LogTail,
        keep: tuple[int, ...] = (),
    ) -> tuple[int | None, str]:
        """Run build.sh; stream its output; returns (exit status or None if killed, tail).
        `keep`: the lock descriptors the build's processes hold on to (module docstring)."""
        if self._stopping.is_set():
            raise BuildError(f"pool {inputs.pool}: the reconciler is stopping", transient=True)
        env = {**env, "LOCK_FDS": " ".join(str(fd) for fd in keep)}
        started = time.monotonic()
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                ["bash", str(script.SCRIPT)],
                env=env,
                cwd=env["WORK_DIR"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout kills it all
                pass_fds=keep,
            )
            self.last_pgid = proc.pid
            with self._guard:
                self._running.add(proc)
            if proc.stdout is None:  # cannot happen with stdout=PIPE; says so to mypy
                raise RuntimeError("no pipe from the build")
            reader = threading.Thread(
                target=self._stream,
                args=(inputs.pool, proc.stdout, log_file, tail, started),
                name=f"buildah-log-{inputs.pool}",
                daemon=True,
            )
            reader.start()
            try:
                code: int | None = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                code = None
                reader.join(timeout=_KILL_GRACE_S)
                message = (
                    f"pool {inputs.pool}: the build of {inputs.image} took longer than "
                    f"{self.timeout_s:.0f}s and was stopped; build log: {log_path}; "
                    "raise --build-timeout if the build is just slow"
                )
                raise BuildError(message, log_tail=tail.text(), transient=True) from None
            except BaseException:
                # Interrupted (Ctrl-C, shutdown): never leave a build running behind us.
                _kill_group(proc)
                raise
            finally:
                with self._guard:
                    self._running.discard(proc)
            reader.join(timeout=_KILL_GRACE_S)
        if code is not None and code < 0:
            code = None  # killed by a signal
        log.info("pool %s: build finished with status %s in %.1fs", inputs.pool, code,
                 time.monotonic() - started)  # fmt: skip
        return code, tail.text()

    @staticmethod
    def _stream(
        pool: str, out: IO[bytes], log_file: IO[str], tail: script.LogTail, started: float
    ) -> None:
        for raw in iter(out.readline, b""):
            line = tail.add(raw.decode(errors="replace"))
            log_file.write(line + "\n")
            log_file.flush()
            step = _STEP_RE.match(line)
            if step:
                log.info("pool %s: step %s/%s %s (%.0fs)", pool, step[1], step[2],
                         step[3][:120], time.monotonic() - started)  # fmt: skip
            elif line.startswith("reconciler-build:"):
                log.info("pool %s: %s", pool, line.removeprefix("reconciler-build: "))
            else:
                log.debug("pool %s: %s", pool, line)
        out.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the build's process group, SIGKILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, _KILL_GRACE_S)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        break
    # The leader is gone; anything else left in its group goes too, and we wait until
    # it has (so a new build never races the old one for the storage).
    deadline = time.monotonic() + _KILL_GRACE_S
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    log.warning("build process group %d did not exit after SIGKILL", proc.pid)
