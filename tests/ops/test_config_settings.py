"""Each setting is declared once, in config/settings.py: the declarations stay whole."""

from __future__ import annotations

import argparse
from dataclasses import fields

from eventrouter.server.config import ServerConfig, add_serve_arguments, env_name, flag_name
from eventrouter.server.config.settings import setting_of


def test_every_field_is_declared_with_its_type_help_and_default() -> None:
    for f in fields(ServerConfig):
        declared = setting_of(f)  # a KeyError: declared without setting()
        kind = type(f.default)
        assert kind in (bool, int, float, str), f"{f.name}: {kind.__name__} is no setting type"
        # The default's type is the setting's type: `x: float = setting(1, ...)` would
        # make an integer setting that refuses 0.5.
        assert f.type == kind.__name__, f"{f.name}: annotated {f.type}, default {f.default!r}"
        assert declared.help.strip(), f"{f.name}: no help"


def test_every_field_has_a_flag_with_its_help_and_environment_variable() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    by_dest = {action.dest: action for action in parser._actions}
    for f in fields(ServerConfig):
        action = by_dest[f.name]
        assert flag_name(f.name) in action.option_strings
        assert action.help is not None
        assert action.help.startswith(setting_of(f).help)
        assert action.help.endswith(f"; env {env_name(f.name)})")
