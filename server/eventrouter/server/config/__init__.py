"""Server configuration: ``ServerConfig``, filled from flags, environment and a TOML file.

One module per concern, each importing only the ones above it in this list:

- ``checks``: how values are checked (``Problem``: the fields involved and why);
- ``settings``: the settings, their defaults, help and checks (``ServerConfig``;
  its docstring says how to add a setting);
- ``sources``: where values come from (flag > ``EVENTROUTER_<FIELD>`` > TOML
  file > default), and which source gave each (``resolve_config``);
- ``flags``: the flags of ``eventrouter serve`` and ``eventrouter config``.

The names below are the package's public ones; import them from here.
"""

from eventrouter.server.config.checks import Problem
from eventrouter.server.config.flags import add_serve_arguments
from eventrouter.server.config.settings import ServerConfig, validate
from eventrouter.server.config.sources import (
    CONFIG_FILE_ENV,
    ConfigError,
    ResolvedConfig,
    Source,
    config_from_args,
    env_name,
    flag_name,
    resolve_config,
)

__all__ = [
    "CONFIG_FILE_ENV",
    "ConfigError",
    "Problem",
    "ResolvedConfig",
    "ServerConfig",
    "Source",
    "add_serve_arguments",
    "config_from_args",
    "env_name",
    "flag_name",
    "resolve_config",
    "validate",
]
