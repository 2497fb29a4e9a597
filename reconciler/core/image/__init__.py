"""The pool's image: where a rendered config lands (layout, placement, systemd, kargs,
tmpfiles), the config layer (layer), the image's OCI documents (oci) and the
Containerfile for builds that need one (containerfile). Reasons: docs/design/image.md."""
