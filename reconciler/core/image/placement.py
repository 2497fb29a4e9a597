"""Placement: where a path of a rendered config goes in a bootc image.

Stage: part of the image plan. Input: an absolute path. Output: the image (under
`/etc`, `/usr`), `/var` (created at boot by a tmpfiles.d line, under its canonical /var
path) or refused, with the fix. Reasons: `docs/design/image.md`.
"""

from __future__ import annotations

from typing import Literal

# Top-level trees that live on /var on a bootc host → their canonical /var path.
VAR_ALIASES = (
    ("/home", "/var/home"),
    ("/root", "/var/roothome"),
    ("/opt", "/var/opt"),
    ("/srv", "/var/srv"),
    ("/mnt", "/var/mnt"),
    ("/usr/local", "/var/usrlocal"),
)
_REFUSED: dict[str, str] = {
    "/var/run": "/var/run is /run, recreated at every boot; use RuntimeDirectory= in a unit",
    "/var/lock": "/var/lock is in /run, recreated at every boot; use RuntimeDirectory=",
    "/usr/etc": "bootc refuses images with /usr/etc (lint etc-usretc); write the /etc path",
    "/run": "/run is recreated at every boot; use RuntimeDirectory= or a tmpfiles.d "
    "file under /usr/lib/tmpfiles.d/",
    "/tmp": "/tmp is cleared at every boot; use a tmpfiles.d file",  # noqa: S108
    "/proc": "/proc is an API filesystem; set sysctls with a file in /etc/sysctl.d/",
    "/sys": "/sys is an API filesystem; use a udev rule or a tmpfiles.d 'w' line",
    "/dev": "/dev is an API filesystem; use a udev rule",
    "/boot": "/boot belongs to the bootloader; use kernelArguments for boot options",
    "/sysroot": "/sysroot is the physical root, not part of the image",
    "/ostree": "/ostree is the physical root's repository, not part of the image",
}
_USRMOVE = ("/bin", "/sbin", "/lib", "/lib64")


def place(path: str) -> tuple[Literal["image", "var"], str] | tuple[Literal["refused"], str]:
    """`("image", path)`, `("var", canonical /var path)` or `("refused", fix)`."""
    if not path.startswith("/"):
        return "refused", f"write an absolute path, e.g. '/{path}'"
    for prefix, fix in _REFUSED.items():
        if path == prefix or path.startswith(prefix + "/"):
            return "refused", fix
    for prefix in _USRMOVE:
        if path == prefix or path.startswith(prefix + "/"):
            return "refused", f"{prefix} is a symlink to /usr{prefix}; write /usr{path}"
    for alias, real in VAR_ALIASES:
        if path == alias or path.startswith(alias + "/"):
            return "var", real + path[len(alias) :]
    if path == "/var" or path.startswith("/var/"):
        return "var", path
    if path.startswith(("/etc/", "/usr/")):
        return "image", path
    top = "/" + path.split("/")[1]
    return "refused", (
        f"{top} is read-only on a bootc host and not carried by the image; put the file "
        "under /etc or /usr, or under /var (created at boot)"
    )
