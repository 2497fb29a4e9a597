"""Image references: parse, validate, normalise and format `[host[:port]/]path[:tag][@digest]`.

Stage: used wherever an image name enters or leaves the system (MachineOSConfig push and
pull specs, `osImageURL`, pins, CLI flags). Input: a string; output: an `ImageRef` whose
`str()` is the fully qualified form (`docker.io/library/busybox:latest`), or an
`InvalidReference` saying what is wrong and how to write it instead.

The grammar and the normalisation are Docker's, as implemented by
distribution/distribution `reference/regexp.go` and `reference/normalize.go` (the same
rules containers/image, skopeo, podman and bootc apply): the first path component is a
registry host only if it contains `.` or `:` or is `localhost`; otherwise the host is
`docker.io`, and a single-component docker.io path gets the `library/` prefix;
`index.docker.io` is the legacy spelling of `docker.io`. Hand-written rather than a
library because no maintained Python package implements exactly this grammar, and the
core must stay free of I/O dependencies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from reconciler.errors import ReconcilerError

DEFAULT_REGISTRY = "docker.io"
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
# distribution `reference.NameTotalLengthMax`: host/path without tag or digest.
NAME_MAX_LENGTH = 255

# regexp.go, translated term by term (Go RE2 and Python agree on these constructs).
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]*)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
HOST_RE = re.compile(rf"^{_HOST}(?::[0-9]+)?$")
PATH_COMPONENT_RE = re.compile(rf"^{_PATH_COMPONENT}$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
# We accept only the algorithms the OCI image spec registers, in their canonical
# lowercase-hex encoding (distribution's grammar is looser; registries are not).
DIGEST_RE = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")

_TAG_FIX = "a tag is 1-128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
_PATH_FIX = (
    "path components are lowercase letters and digits, separated by '.', '_', '__' or dashes"
)


class InvalidReference(ReconcilerError, ValueError):
    """An image reference that does not follow the grammar.

    `str()` reads `image reference 'VALUE': PROBLEM; FIX`; the parts are attributes
    so callers can place them in a `ConfigProblem` with file and field.
    """

    def __init__(self, value: str, problem: str, fix: str) -> None:
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"image reference {value!r}: {problem}; {fix}")


@dataclass(frozen=True)
class ImageRef:
    """A parsed, normalised image reference.

    `registry` is the host as written (`quay.io`, `127.0.0.1:5000`, `docker.io`);
    `repository` is the path inside it (`fedora/fedora-bootc`, `library/busybox`).
    Either, both or none of `tag` and `digest` may be set; when both are, the digest
    decides what is pulled (Docker and bootc ignore the tag then).
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def reference(self) -> str:
        """What goes after `/manifests/` in a registry request: the digest if any,
        else the tag, else `latest`."""
        return self.digest or self.tag or DEFAULT_TAG


def parse(text: str) -> ImageRef:
    """Parse and normalise `text`; raise `InvalidReference` naming the bad part."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidReference(
            str(text),
            "is empty",
            "write host/path[:tag][@sha256:...], e.g. quay.io/fedora/fedora-bootc:42",
        )
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReference(text, "contains whitespace", f"write {''.join(text.split())!r}")
    for prefix in ("docker://", "ostree-unverified-registry:", "registry:", "https://", "http://"):
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            raise InvalidReference(
                text,
                f"has a transport or scheme prefix {prefix!r}",
                f"write the registry reference alone: {rest!r}",
            )

    rest, digest = _split_digest(text)
    name, tag = _split_tag(text, rest)
    registry, path = _split_registry(name)
    _check_registry(text, registry)
    _check_path(text, path)
    if len(f"{registry}/{path}") > NAME_MAX_LENGTH:
        raise InvalidReference(
            text,
            f"name is {len(registry) + 1 + len(path)} characters, over the limit of "
            f"{NAME_MAX_LENGTH}",
            "use a shorter repository path",
        )
    return ImageRef(registry=registry, repository=path, tag=tag, digest=digest)


def with_tag(ref: ImageRef, tag: str) -> ImageRef:
    """The same repository with `tag` and no digest."""
    if not TAG_RE.match(tag):
        raise InvalidReference(
            f"{repository(ref)}:{tag}",
            f"tag {tag!r} is not valid",
            _TAG_FIX,
        )
    return replace(ref, tag=tag, digest=None)


def with_digest(ref: ImageRef, digest: str) -> ImageRef:
    """The same repository pinned to `digest`, without a tag (bootc keeps the string
    exactly as given, so a pin carries no tag: reference bootc-contract.md §1)."""
    _check_digest(f"{repository(ref)}@{digest}", digest)
    return replace(ref, tag=None, digest=digest)


def repository(ref: ImageRef) -> str:
    """`host/path`, without tag or digest: the name auth files and scopes talk about."""
    return f"{ref.registry}/{ref.repository}"


def is_digest(value: str) -> bool:
    return bool(DIGEST_RE.match(value))


# --- the pieces ------------------------------------------------------------------------


def _split_digest(text: str) -> tuple[str, str | None]:
    if "@" not in text:
        return text, None
    rest, _, digest = text.rpartition("@")
    if "@" in rest:
        raise InvalidReference(
            text, "contains more than one '@'", "keep one '@sha256:<hex>' at the end"
        )
    _check_digest(text, digest)
    return rest, digest


def _check_digest(text: str, digest: str) -> None:
    if DIGEST_RE.match(digest):
        return
    algo, _, hexpart = digest.partition(":")
    if algo.lower() == "sha256" and hexpart:
        problem = f"digest {digest!r} is not 'sha256:' followed by 64 lowercase hex digits"
        fix = (
            f"write 'sha256:{hexpart.lower()}'"
            if re.fullmatch(r"[0-9a-fA-F]{64}", hexpart)
            else ("copy the full digest, e.g. from `skopeo inspect --format '{{.Digest}}'`")
        )
    else:
        problem = f"digest {digest!r} is not a sha256 or sha512 digest"
        fix = "write '@sha256:' followed by 64 lowercase hex digits"
    raise InvalidReference(text, problem, fix)


def _split_tag(text: str, rest: str) -> tuple[str, str | None]:
    # A ':' after the last '/' starts a tag; before it, it is the registry's port.
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon <= slash:
        return rest, None
    name, tag = rest[:colon], rest[colon + 1 :]
    if not TAG_RE.match(tag):
        raise InvalidReference(
            text,
            f"tag {tag!r} is not valid",
            _TAG_FIX,
        )
    return name, tag


def _split_registry(name: str) -> tuple[str, str]:
    # normalize.go splitDockerDomain
    first, sep, remainder = name.partition("/")
    if sep and (("." in first or ":" in first) or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DEFAULT_REGISTRY, name
    if registry == LEGACY_DEFAULT_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return registry, path


def _check_registry(text: str, registry: str) -> None:
    if not HOST_RE.match(registry):
        raise InvalidReference(
            text,
            f"registry host {registry!r} is not a host name, IPv4 or [IPv6] address "
            "with an optional :port",
            "write it like quay.io or 127.0.0.1:5000",
        )


def _check_path(text: str, path: str) -> None:
    if _IDENTIFIER_RE.match(path.removeprefix(OFFICIAL_PREFIX)):
        raise InvalidReference(
            text,
            "is a bare 64-hex identifier, not a repository name",
            "write host/path@sha256:<hex> to pin by digest",
        )
    if not path:
        raise InvalidReference(
            text, "has no repository path", "write host/path, e.g. quay.io/fedora/fedora-bootc"
        )
    if path.lower() != path and all(PATH_COMPONENT_RE.match(c) for c in path.lower().split("/")):
        raise InvalidReference(
            text, f"repository path {path!r} must be lowercase", f"write {path.lower()!r}"
        )
    for component in path.split("/"):
        if not PATH_COMPONENT_RE.match(component):
            what = (
                "an empty path component ('//' or a trailing '/')"
                if not component
                else (f"path component {component!r} is not valid")
            )
            raise InvalidReference(
                text,
                what,
                _PATH_FIX,
            )


def short_image(ref: ImageRef, digest: str) -> str:
    """`host/path@sha256:<12 hex>`: how an uploaded image is named in one log line."""
    return f"{repository(ref)}@{digest[:19]}"
