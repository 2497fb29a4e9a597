#!/usr/bin/env bash
# Build one pool's image with buildah and push it. The one script both Containerfile
# builders run: on the reconciler's machine (buildah.py) and in a Kubernetes Job's pod
# (kubejob.py, which ships this very file in the Job's ConfigMap). Every path and
# option comes from the environment, so the same text runs in both places:
#
#   INPUT_DIR        the Containerfile and its context files (read only; in a Job a
#                    ConfigMap volume, whose entries are symlinks into ..data)
#   WORK_DIR         a writable scratch directory of this build
#   BASE_IMAGE       the base image by digest (pulled first: a pull failure is told apart)
#   IMAGE            where to push: host[:port]/repo:tag
#   DIGEST_FILE      gets the pushed manifest digest (a Job's /dev/termination-log)
#   PULL_AUTHFILE, PUSH_AUTHFILE        auth files for the base and the target (optional)
#   PULL_TLS_VERIFY, PUSH_TLS_VERIFY    false only for plain-HTTP registries (default true)
#   CERT_DIR         CA certificates (*.crt) for registries (optional)
#   STORAGE_DRIVER   vfs (default) or overlay; STORAGE_ROOT, STORAGE_RUNROOT (optional)
#   TIMESTAMP        image and file times, seconds since the epoch (default 0: reproducible)
#   STRIP_IF_EMPTY   absolute paths removed from the built image when they are empty
#                    files (what buildah's RUN steps leave; see strip_injected)
#   LOCK_FDS         lock descriptors held by the script, not given to buildah (optional)
#
# Exit status says what failed, so callers classify without parsing logs:
#   0 pushed; 2 bad environment or context; 10 pulling the base; 11 building (a RUN
#   step or the Containerfile: retrying the same inputs cannot help); 12 pushing;
#   13 removing the empty files buildah left (the storage, not the inputs).
# Lines starting "reconciler-build:" mark the phases. No secret is ever printed: auth
# files are passed by path.
set -uo pipefail

say() { printf 'reconciler-build: %s\n' "$*"; }
fail() {
  local code=$1
  shift
  say "FAILED: $*"
  exit "$code"
}

for var in INPUT_DIR WORK_DIR BASE_IMAGE IMAGE DIGEST_FILE; do
  [ -n "${!var:-}" ] || fail 2 "$var is not set"
done

storage=(--storage-driver "${STORAGE_DRIVER:-vfs}")
[ -n "${STORAGE_ROOT:-}" ] && storage+=(--root "$STORAGE_ROOT")
[ -n "${STORAGE_RUNROOT:-}" ] && storage+=(--runroot "$STORAGE_RUNROOT")
pull=(--tls-verify="${PULL_TLS_VERIFY:-true}")
push=(--tls-verify="${PUSH_TLS_VERIFY:-true}")
[ -n "${PULL_AUTHFILE:-}" ] && pull+=(--authfile "$PULL_AUTHFILE")
[ -n "${PUSH_AUTHFILE:-}" ] && push+=(--authfile "$PUSH_AUTHFILE")
if [ -n "${CERT_DIR:-}" ]; then
  pull+=(--cert-dir "$CERT_DIR")
  push+=(--cert-dir "$CERT_DIR")
fi
# LOCK_FDS (the local builder only): descriptors of the build's locks, which this script
# holds for as long as it runs, so a build whose reconciler was killed keeps them until
# it ends. buildah itself does not get them: with them, its chroot RUN steps lose their
# stderr.
for fd in ${LOCK_FDS:-}; do
  [[ $fd =~ ^[0-9]+$ ]] || fail 2 "LOCK_FDS: $fd is not a descriptor"
done
bah() (
  for fd in ${LOCK_FDS:-}; do eval "exec $fd>&-"; done
  exec buildah "${storage[@]}" "$@"
)

# buildah makes /etc/hostname, /etc/resolv.conf and /etc/hosts the mount points of every
# RUN step and leaves them behind, empty, when the image has none (bootc's lint
# `buildah-injected`). This buildah has no --no-hostname, and --dns=none would leave
# RUN steps without DNS, so they are removed after the build: one more layer of
# whiteouts, committed with the same --timestamp (the same inputs still give the same
# digest), and only when there is something to remove. STRIP_IF_EMPTY names the
# candidates: the builder leaves out the ones the pool's own config writes. Cost: on
# vfs the working container is one more full copy of the image (bud's own one is
# gone by then, so the disk peak stays that of bud). Reusing bud's own container
# (`--rm=false`) does not work here: without --layers (a layer per step) this buildah
# refuses it, or with --no-cache removes the container anyway.
strip_injected() {
  local ctr mnt f removed=()
  [ -n "${STRIP_IF_EMPTY:-}" ] || return 0
  ctr=$(bah from --pull=never --quiet "$IMAGE") || return 1
  mnt=$(bah mount "$ctr") || return 1
  for f in $STRIP_IF_EMPTY; do
    if [ -f "$mnt$f" ] && [ ! -L "$mnt$f" ] && [ ! -s "$mnt$f" ]; then
      rm -f "$mnt$f" && removed+=("$f")
    fi
  done
  bah umount "$ctr" >/dev/null || return 1
  if [ ${#removed[@]} -eq 0 ]; then
    bah rm "$ctr" >/dev/null
    return
  fi
  say "removing ${removed[*]}: empty, left by buildah's RUN steps"
  # The history says what this layer is, and the base annotations keep naming the
  # pool's base (a commit would name the image built just above).
  bah config --created-by "reconciler-build: rm ${removed[*]} (empty, left by buildah)" \
    --annotation "org.opencontainers.image.base.name=$BASE_IMAGE" \
    --annotation "org.opencontainers.image.base.digest=${BASE_IMAGE##*@}" \
    --history-comment "" "$ctr" || return 1
  bah commit --quiet --rm --timestamp "${TIMESTAMP:-0}" "$ctr" "$IMAGE" >/dev/null
}

# The context, dereferenced: `ADD config-layer.tar /` must see a file to extract, not
# a ConfigMap volume's symlink. Dot entries (..data, ..<timestamp>) are not copied.
context="$WORK_DIR/context"
rm -rf "$context" && mkdir -p "$context" || fail 2 "cannot create $context"
[ -f "$INPUT_DIR/Containerfile" ] || fail 2 "no Containerfile in $INPUT_DIR"
cp -L "$INPUT_DIR"/* "$context"/ || fail 2 "cannot copy the context from $INPUT_DIR"

# Working containers left by a build that was killed (a reconciler restart, a timeout)
# would only pile up: one build at a time uses this storage (the local builder holds a
# lock; a Job's storage is its own emptyDir), so whatever is there now is stale.
bah rm --all >/dev/null 2>&1 || true

say "pulling $BASE_IMAGE"
bah pull --quiet --policy missing "${pull[@]}" "$BASE_IMAGE" >/dev/null ||
  fail 10 "pulling the base image $BASE_IMAGE"

# --timestamp fixes the created time and every file's mtime: the same inputs give the
# same image digest (reference test-infrastructure.md §4). --pull=false: the base is
# present (pulled by digest above); other FROMs of the admin's content are pulled once.
bah bud --isolation chroot --timestamp "${TIMESTAMP:-0}" --pull=false "${pull[@]}" \
  --file "$context/Containerfile" --tag "$IMAGE" "$context" ||
  fail 11 "building $IMAGE"

strip_injected || fail 13 "removing the empty files buildah left in $IMAGE"

say "pushing $IMAGE"
rm -f "$WORK_DIR/digest"
bah push "${push[@]}" --digestfile "$WORK_DIR/digest" "$IMAGE" "docker://$IMAGE" ||
  fail 12 "pushing $IMAGE"
digest=$(cat "$WORK_DIR/digest") || fail 12 "buildah wrote no digest file"
# Keep the base (the next build of the pool starts from it), drop what was built.
bah rmi "$IMAGE" >/dev/null 2>&1 || true
printf '%s' "$digest" >"$DIGEST_FILE" || fail 2 "cannot write $DIGEST_FILE"
say "pushed $IMAGE@$digest"
