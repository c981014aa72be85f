"""The privacy section: record-level DP (DP-SGD at each site), site-level DP (DP-FedAvg) and secure
aggregation; the combinations they cannot honour are refused here, in one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from fedcare.core.config.base import Section

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig


# Site-level DP's defaults, chosen on heart-disease's validation rows at ε = 10 (benchmarks/site_dp_defaults.py,
# RESULTS.md §11): C = 1 with the server's full step gave 0.53 validation accuracy, below the majority class;
# C = 0.1 with a server learning rate of 0.1 gives 0.78. Neither changes ε (they act after the noise).
SITE_DP_CLIP = 0.1
SITE_DP_SERVER_LR = 0.1  # the server learning rate under site-level DP when server_lr is not set


class PrivacySettings(Section):
    dp_epsilon: float | None = Field(None, gt=0, description="record-level DP: each site's ε budget for the run (DP-SGD)")
    dp_delta: float = Field(1e-5, gt=0, lt=1, description="record-level DP: δ")
    dp_clip: float = Field(1.0, gt=0, description="record-level DP: per-patient gradient norm bound")
    site_dp_epsilon: float | None = Field(None, gt=0, description="site-level DP (DP-FedAvg): the run's ε budget "
                                          "for each hospital's participation")
    site_dp_delta: float = Field(1e-5, gt=0, lt=1, description="site-level DP: δ")
    site_dp_clip: float = Field(SITE_DP_CLIP, gt=0, description="site-level DP: the update norm bound C (the "
                                "starting C with site_dp_clip_quantile)")
    site_dp_clip_quantile: float | None = Field(None, ge=0, le=1, description="site-level DP: adapt C to this "
                                                "quantile of the update norms (adaptive clipping)")
    secure_aggregation: bool = Field(False, description="the coordinator sees only the sum of the updates "
                                     "(masked vectors, Bonawitz et al.)")
    secagg_max_dropouts: int = Field(0, ge=0, description="secure aggregation: sites that may drop after "
                                     "masking in a round without losing it")

    def check(self, config: FederationConfig) -> None:
        robust, algorithm = config.robustness, config.algorithm.name
        if self.secure_aggregation:
            if robust.aggregator != "mean" or robust.norm_bound is not None:
                rule = "norm_bound" if robust.aggregator == "mean" else f"aggregator {robust.aggregator}"
                raise ValueError(f"secure aggregation gives the coordinator only the sum of the updates, and {rule} "
                                 "needs each update: use aggregator mean without norm_bound")
            if algorithm in ("scaffold", "cyclic"):
                raise ValueError(f"secure aggregation does not run with {algorithm}: "
                                 + ("scaffold needs each site's control variate" if algorithm == "scaffold"
                                    else "cyclic trains one site per round, and a sum needs at least 2"))
        elif self.secagg_max_dropouts:
            raise ValueError("secagg_max_dropouts needs secure_aggregation")
        if self.site_dp_epsilon is None:
            if self.site_dp_clip_quantile is not None:
                raise ValueError("site_dp_clip_quantile (adaptive clipping) needs site_dp_epsilon")
            return
        if robust.aggregator != "mean" or robust.norm_bound is not None:
            raise ValueError("site-level DP (DP-FedAvg) clips, averages and noises the updates itself: "
                             "use aggregator mean without norm_bound")
        if algorithm in ("scaffold", "cyclic"):
            raise ValueError(f"site-level DP does not run with {algorithm}: "
                             + ("its control variates would be sent unclipped and unnoised"
                                if algorithm == "scaffold" else
                                "the accountant assumes sites drawn at random each round, cyclic takes them in turn"))
        if config.algorithm.site_weights:
            raise ValueError("site-level DP averages the sites uniformly (a site's size is private): "
                             "remove site_weights")
