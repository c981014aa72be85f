"""Input kinds: the named kinds of patient data a site may hold (see base.py for what a kind is).

`tabular` (the EHR table), `omics` (gene expression) and `image` (image files) are built in; a new kind registers here.
"""

from __future__ import annotations

from fedcare.core.errors import ConfigError
from fedcare.data.inputs.base import Fitted, InputJob, InputKind, SiteInput
from fedcare.data.inputs.image import IMAGE
from fedcare.data.inputs.omics import OMICS
from fedcare.data.inputs.tabular import TABULAR

__all__ = ["DEFAULT_KIND", "Fitted", "InputJob", "InputKind", "SiteInput", "input_kind", "input_kinds",
           "register_input_kind"]

DEFAULT_KIND = TABULAR.name  # the columns no other input claims
_KINDS: dict[str, InputKind] = {TABULAR.name: TABULAR, OMICS.name: OMICS, IMAGE.name: IMAGE}


def register_input_kind(kind: InputKind) -> None:
    if kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ConfigError(f"an input kind named '{kind.name}' is already registered")
    _KINDS[kind.name] = kind


def input_kinds() -> tuple[InputKind, ...]:
    return tuple(_KINDS.values())


def input_kind(name: str) -> InputKind:
    if name not in _KINDS:
        raise ConfigError(f"unknown input kind '{name}'; the kinds are: {', '.join(_KINDS)}")
    return _KINDS[name]
