"""GitOps for image-mode (bootc) machine pools."""

__version__ = "0.1.0"
