"""The Prosody adapter: ``mod_pushrules.lua`` (the module, shipped as package data) and the
sidecar's side of its Unix socket (``bridge``), plus shadow-mode comparison (``shadow``)."""

from importlib.resources import files

MODULE_NAME = "mod_pushrules.lua"


def module_path() -> str:
    """Where the installed mod_pushrules.lua is (point Prosody's plugin_paths at its folder)."""
    return str(files(__name__) / MODULE_NAME)
