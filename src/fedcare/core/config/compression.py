"""The compression section: how updates (site → coordinator) and broadcasts (coordinator → site)
travel, and whether each site carries what compression dropped into its next update (error feedback).
The schemes are core/compression.py's; the combinations they cannot honour are refused here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from fedcare.core.compression import LEVELS, parse_scheme
from fedcare.core.config.base import Section
from fedcare.core.errors import ConfigError

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig


class CompressionSettings(Section):
    compress_updates: str = Field("none", description="how updates travel: none | fp16 | bf16 | int8[:B] | int4[:B] | "
                                  "topk:F | topk:F+fp16|bf16|int8|int4")
    compress_broadcast: str = Field("none", description="how the model travels to the sites: none | fp16 | bf16 | "
                                    "int8[:B] | int4[:B] (a broadcast is the model itself: no topk)")
    compress_range: float | None = Field(None, gt=0, allow_inf_nan=False,
                                         description="under secure aggregation, the bound on each update "
                                         "coordinate that int8/int4 scale to (steps of range/127 or range/7); a "
                                         "site whose update exceeds it is left out of the round, saying so")
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
        if self.compress_range is not None and not (config.privacy.secure_aggregation and updates.active):
            raise ValueError("compress_range is the scale of quantized updates under secure aggregation; set "
                             "secure_aggregation and compress_updates int8 or int4, or drop it")
        if config.privacy.secure_aggregation and updates.active:
            if updates.topk is not None:
                raise ValueError("secure aggregation masks every coordinate, so sparse updates (topk) cannot "
                                 "be summed: the masks need one common index set; use compress_updates none")
            if updates.quantizer not in LEVELS or updates.block is not None:
                raise ValueError("secure aggregation sums integers in a ring, so updates need one scale common to "
                                 "every site: use compress_updates int8 or int4 (no block size, no float format)")
            if self.error_feedback:
                raise ValueError("error feedback is not built for secure aggregation (the rounding happens in the "
                                 "masking ring); drop error_feedback")
            if config.privacy.site_dp_epsilon is not None:
                raise ValueError("quantized secure aggregation is not built for site-level DP (its Gaussian noise "
                                 "has no bound to scale to); use compress_updates none with site_dp_epsilon")
            if self.compress_range is None:
                raise ValueError("quantized secure aggregation needs compress_range, the bound on each update "
                                 "coordinate that every site scales to (e.g. compress_range 0.5)")
            if any(float(w) != int(w) for w in config.algorithm.site_weights.values()):
                raise ValueError("quantized secure aggregation sums integers, so site_weights must be whole "
                                 "numbers; use whole weights or compress_updates none")
