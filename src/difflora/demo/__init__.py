"""`difflora demo`: the paper's comparison in miniature on a model the project makes itself."""

from .base import default_base_path

__all__ = ["default_base_path"]
