"""Pure rendering: from (model, placement, settings) to files and manifests. No API calls."""

from .model_files import (
    TritonConfigError,
    config_data,
    config_hash,
    model_repository_files,
    render_config_pbtxt,
    render_model_json,
)

__all__ = [
    "TritonConfigError",
    "config_data",
    "config_hash",
    "model_repository_files",
    "render_config_pbtxt",
    "render_model_json",
]
