"""The compression section: how updates (site → coordinator) and broadcasts (coordinator → site)
travel, and whether each site carries what compression dropped into its next update (error feedback).
The schemes are core/compression.py's; the combinations they cannot honour are refused here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from fedcare.core.compression import parse_scheme
from fedcare.core.config.base import Section
from fedcare.core.errors import ConfigError

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig


class CompressionSettings(Section):
    compress_updates: str = Field("none", description="how updates travel: none | fp16 | bf16 | int8 | int8:B | "
                                  "topk:F | topk:F+fp16|bf16|int8")
    compress_broadcast: str = Field("none", description="how the model travels to the sites: none | fp16 | bf16 | "
                                    "int8 | int8:B (a broadcast is the model itself: no topk)")
    error_feedback: bool = Field(False, description="each site adds what compression left out of its last update "
                                 "to the next one")

    @field_validator("compress_updates", "compress_broadcast")
    @classmethod
    def _scheme(cls, v: str, info) -> str:
        try:
            scheme = parse_scheme(v, info.field_name)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if info.field_name == "compress_broadcast" and scheme.topk is not None:
            raise ValueError("a broadcast is the model itself, and topk would zero most of its weights; "
                             "use fp16, bf16 or int8 for compress_broadcast")
        return str(scheme)

    def check(self, config: FederationConfig) -> None:
        updates = parse_scheme(self.compress_updates)
        if self.error_feedback and not updates.active:
            raise ValueError("error_feedback carries what update compression dropped; set compress_updates too")
        if config.privacy.secure_aggregation and updates.active:
            if updates.topk is not None:
                raise ValueError("secure aggregation masks every coordinate, so sparse updates (topk) cannot "
                                 "be summed: the masks need one common index set; use compress_updates none")
            raise ValueError("secure aggregation sends each update as 64-bit masked field words, so quantizing it "
                             "first would lose precision without saving a byte; use compress_updates none "
                             "(compress_broadcast works)")
