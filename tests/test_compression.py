"""Compressed updates and broadcasts (core/compression.py): the codecs, their strict decoding, error
feedback kept in the site's state, the bytes counted per direction, and how compression composes
with privacy, robust rules and secure aggregation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save

import fedcare
from fedcare.core.compression import (
    PACKED,
    _bitmap_encode,
    _quantize,
    _top,
    _varint_encode,
    encode,
    exact,
    kept,
    packed_names,
    parse_scheme,
    roundtrip,
)
from fedcare.core.config import make_config
from fedcare.core.errors import ConfigError, ParamsError
from fedcare.core.serialization import (
    params_from_bytes,
    params_to_bytes,
    update_from_bytes,
    update_to_bytes,
)
from fedcare.core.update import Update
from fedcare.core.updateframe import Frame, pack

RNG = np.random.default_rng(7)
ARRAYS = {"layer.0.weight": RNG.normal(size=(100, 80)).astype(np.float32), "layer.0.bias": RNG.normal(size=3).astype(np.float32),
          "scalar": np.array(1.5)}
RUN = dict(dataset="heart-disease", rounds=3, baselines=False, seed=1)


@pytest.mark.parametrize("text, bound, size", [("fp16", 1e-3, 0.52), ("bf16", 8e-3, 0.52), ("int8", 1 / 127, 0.27),
                                               ("int8:64", 1 / 127, 0.29), ("int4", 1 / 7, 0.14), ("int4:64", 1 / 7, 0.16)])
def test_quantizers_shrink_the_bytes_within_their_precision(text, bound, size):
    plain = len(params_to_bytes(ARRAYS))
    blob = params_to_bytes(ARRAYS, scheme=parse_scheme(text), rng=np.random.default_rng(0))
    got, _ = params_from_bytes(blob, ARRAYS)
    assert len(blob) < plain * size
    for k, v in ARRAYS.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        assert np.abs(got[k] - v).max() <= bound * np.abs(v).max() * 1.01


@pytest.mark.parametrize("text, levels", [("int8", 127), ("int4", 7)])
def test_stochastic_rounding_is_unbiased_and_nearest_without_a_generator(text, levels):
    x = {"w": RNG.normal(size=501).astype(np.float32)}  # odd: int4's last byte holds one entry
    scheme = parse_scheme(text)
    rng = np.random.default_rng(1)
    mean = np.mean([roundtrip(x, scheme, rng)["w"] for _ in range(1500)], axis=0)
    step = np.abs(x["w"]).max() / levels
    assert np.abs(mean - x["w"]).max() < 0.1 * step  # a biased rounding is off by up to half a step
    nearest = roundtrip(x, scheme, None)["w"]
    assert np.abs(nearest - x["w"]).max() <= step / 2 * 1.001


def test_topk_keeps_the_largest_entries_exactly_with_the_smaller_index_code():
    x = {"w": RNG.normal(size=(300,)).astype(np.float32)}
    got = roundtrip(x, parse_scheme("topk:0.1"), None)["w"]
    top = np.argsort(-np.abs(x["w"]))[:30]
    assert np.count_nonzero(got) == 30 and np.array_equal(got[top], x["w"][top])
    for fraction, code, index_bytes in ((0.1, "varint", 30), (0.5, "bitmap", 38)):  # 1 byte a short gap; n/8
        parts, codec = encode(x, parse_scheme(f"topk:{fraction}+int8"))
        assert codec == f"topk:{fraction:g}+int8;{code}" and set(parts) == {PACKED}
        assert parts[PACKED].size == index_bytes + kept(fraction, 300) + 4  # positions, int8 values, one scale


def test_every_array_is_packed_and_the_framing_is_compact():
    small = {"weight": RNG.normal(size=(1, 13)).astype(np.float32), "bias": np.full(1, 0.5, np.float32)}
    update = Update("site-0", small, 61, {"train_loss": 0.6931471805599453})
    plain = update_to_bytes(update, 12)
    blob = update_to_bytes(update, 12, parse_scheme("int8"))
    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    assert set(header) == {PACKED}  # no array named, shaped or offset, and no JSON metadata
    # the frame (index code, round 12, 61 examples, 1 metric: train_loss by number, float32), then
    # the weight as int8 with its scale and the single-entry bias exactly
    assert header[PACKED]["shape"] == [(1 + 1 + 1 + 1 + 1 + 4) + (13 + 4) + 4]
    assert len(blob) == 8 + 56 + 30 and len(plain) > 3 * len(blob)  # 328 bytes uncompressed
    got = update_from_bytes(blob, small, 12, compress="int8", sender="site-0")
    assert got.metrics == {"train_loss": float(np.float32(0.6931471805599453))} and got.num_examples == 61
    assert got.site_id == "site-0" and got.grad["bias"].tolist() == [0.5]
    assert np.abs(got.grad["weight"] - small["weight"]).max() <= np.abs(small["weight"]).max() / 127
    blob = params_to_bytes(ARRAYS, scheme=parse_scheme("topk:0.01+int8"))  # a broadcast names its codec
    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    assert set(header) == {"__metadata__", PACKED}
    with pytest.raises(ParamsError, match="against the params it answers"):
        params_from_bytes(blob)


def test_batch_norm_statistics_and_single_entries_travel_exactly():
    state = {"bn.running_var": RNG.random(200).astype(np.float32), "bn.running_mean": RNG.normal(size=200).astype(np.float32),
             "bn.weight": RNG.normal(size=200).astype(np.float32), "head.bias": np.full(1, 0.25, np.float32)}
    got = roundtrip(state, parse_scheme("topk:0.01+int4"), np.random.default_rng(0))
    for name in ("bn.running_var", "bn.running_mean", "head.bias"):
        assert exact(name, state[name].size) and np.array_equal(got[name], state[name])
    assert not exact("bn.weight", 200) and np.count_nonzero(got["bn.weight"]) == kept(0.01, 200)


def _frame_update(scheme: str = "topk:0.1+int8", round_: int = 3) -> tuple[bytes, dict]:
    update = Update("s", {k: v for k, v in ARRAYS.items()}, 9, {"train_loss": 0.5, "rows.image": 7})
    return update_to_bytes(update, round_, parse_scheme(scheme), np.random.default_rng(0)), ARRAYS


@pytest.mark.parametrize("what, words", [
    ("replayed", "trained for round 3, not for round 4"), ("asked plain", "dtype uint8"),
    ("sent plain", "only the uint8 entry"), ("no sender", "knows which site"), ("cut frame", "frame ends inside"),
    ("first byte", "index code must be"), ("unsorted metrics", "sorted name order"),
    ("unknown metric key", "names no known metric"), ("bad metric name", "not a short identifier"),
    ("nan metric", "finite number"), ("many metrics", "at most 32"), ("raw name", r"'\\x1b\[2J\\nINFO"),
    ("lossy when asked plain", "asked for at full precision")])
def test_a_compressed_update_frame_is_checked_like_an_update(what, words):
    """The frame carries the round (no replay), the count and the metrics; the receiver supplies the
    sender and the scheme it asked for, and refuses anything else."""
    blob, like = _frame_update()
    start = 8 + int.from_bytes(blob[:8], "little")
    payload = bytes(blob[start:])
    assert json.loads(blob[8:start])[PACKED]["shape"] == [len(payload)]

    arrays = payload[Frame(payload, "s").end:]

    def framed(frame: bytes) -> bytes:  # the same arrays behind another frame
        return save({PACKED: np.frombuffer(frame + arrays, np.uint8)})
    args = {"round_": 3, "compress": "topk:0.1+int8", "sender": "s"}
    body = {"replayed": blob, "asked plain": blob, "sent plain": update_to_bytes(Update("s", ARRAYS, 9), 3),
            "no sender": blob, "cut frame": save({PACKED: np.frombuffer(payload[:3], np.uint8)}),
            "first byte": framed(bytes([7, 3, 9, 0])),
            "unsorted metrics": framed(bytes([1, 3, 9, 2]) + b"\x02\x01b\x02" + b"\x02\x01a\x02"),  # b=1, a=1
            "unknown metric key": framed(bytes([1, 3, 9, 1, 3 << 2]) + bytes(4)),
            "bad metric name": framed(pack("varint", 3, 9, {"no space": 1.0})),
            "nan metric": framed(pack("varint", 3, 9, {"train_loss": float("nan")})),
            "many metrics": framed(bytes([1, 3, 9, 200]) + b"\x02\x01a\x02" * 200),  # refused before reading them
            "raw name": framed(bytes([1, 3, 9, 2]) + b"\x02\x01b\x02" + b"\x02\x0b\x1b[2J\nINFO\x02"),
            "lossy when asked plain": params_to_bytes(ARRAYS, {"site_id": "s", "num_examples": 9, "round": 3},
                                                      parse_scheme("int8"))}[what]
    args |= {"replayed": {"round_": 4}, "asked plain": {"compress": "none"}, "no sender": {"sender": None},
             "lossy when asked plain": {"compress": "none"}}.get(what, {})
    with pytest.raises(ParamsError, match=words):
        update_from_bytes(body, like, **args)
    got = update_from_bytes(blob, like, round_=3, compress="topk:0.1+int8", sender="s")
    assert got.metrics == {"rows.image": 7.0, "train_loss": 0.5} and got.num_examples == 9


def test_epsilon_travels_exactly_in_a_compressed_update():
    """A privacy figure is never rounded down on the way (float32 would round 0.1 + 2⁻²⁹ down)."""
    epsilon = 0.1 + 2 ** -29
    update = Update("s", ARRAYS, 9, {"epsilon": epsilon, "train_loss": 0.1 + 2 ** -29})
    got = update_from_bytes(update_to_bytes(update, 1, parse_scheme("int8")), ARRAYS, 1, "int8", "s")
    assert got.metrics["epsilon"] == epsilon and got.metrics["train_loss"] == float(np.float32(epsilon)) < epsilon


@pytest.mark.parametrize("text, words", [("topk:2", "between 0 and 1"), ("int8+topk:0.1", "sparsifier first"),
                                         ("fp16:3", "block size"), ("zip", "not a scheme")])
def test_bad_schemes_are_refused_in_one_line(text, words):
    with pytest.raises(ConfigError, match=words):
        make_config({"compress_updates": text})


@pytest.mark.parametrize("settings, words", [
    ({"compress_broadcast": "topk:0.1"}, "zero most of its weights"),
    ({"error_feedback": True}, "set compress_updates"),
    ({"compress_updates": "topk:0.01+int8", "secure_aggregation": True}, "common index set"),
    ({"compress_updates": "int8", "secure_aggregation": True}, "needs compress_range"),
    ({"compress_updates": "fp16", "secure_aggregation": True, "compress_range": 1.0}, "one scale common"),
    ({"compress_updates": "int8", "secure_aggregation": True, "compress_range": 1.0, "site_dp_epsilon": 5.0},
     "not built for site-level DP"),
    ({"compress_range": 1.0}, "drop it"),
])
def test_combinations_compression_cannot_honour_are_refused(settings, words):
    with pytest.raises(ConfigError, match=words):
        make_config(settings)
    assert "\n" not in words


def _tampered(grad, codec: str, victim: bytes, tail: bytes = b"", alone: bool = False, cut: int = 0) -> bytes:
    """An update for round 1 whose largest array travels as `victim` (the others as the codec says),
    `tail` appended and the last `cut` bytes left out, built here from the layout the modules
    document, so the test also checks that layout."""
    text, _, code = codec.partition(";")
    scheme = parse_scheme(text)
    chunks = []
    for name in packed_names(grad):
        if name == _largest(grad):
            chunks.append(victim)
            continue
        flat = grad[name].reshape(-1)
        if exact(name, flat.size):
            chunks.append(flat.tobytes())
            continue
        if scheme.topk is not None:
            index = _top(flat, scheme.topk)
            chunks.append(_varint_encode(index) if code == "varint" else _bitmap_encode(index, flat.size))
            flat = flat[index]
        chunks += _quantize(flat, scheme, None)
    parts = {_largest(grad): grad[_largest(grad)]} if alone else {}
    packed = pack(code, 1, 5, {}) + b"".join(chunks) + tail
    parts[PACKED] = np.frombuffer(packed[:len(packed) - cut], np.uint8)
    return save(parts)


def _largest(grad) -> str:
    return max(packed_names(grad), key=lambda name: np.size(grad[name]))


TOPK = "topk:0.2+int8"  # the scheme most corrupt updates are built for (also the networked run's)


def _corrupt_updates(grad) -> dict[str, tuple[bytes, str, str]]:
    """Each corrupt compressed update, the words its refusal must hold and the scheme it answers
    (also used over the network, with the cases built for `TOPK`)."""
    w = grad[_largest(grad)].reshape(-1)
    n, k = w.size, kept(0.2, w.size)
    top = _top(w, 0.2)
    index = _varint_encode(top)
    values, scale = _quantize(w[top], parse_scheme("int8"), None)
    q = np.frombuffer(_quantize(w, parse_scheme("int8"), None)[0], np.int8)
    blocks = _quantize(w, parse_scheme("int8:16"), None)[1]
    over = np.zeros(n, bool)
    over[top] = True
    over[np.flatnonzero(~over)[0]] = True  # one position more than top-k keeps

    with np.errstate(over="ignore"):
        huge = np.full(n, 1e6).astype("<f2").tobytes()

    def with_scale(value: float, count: int = 1) -> bytes:
        return np.full(count, value, "<f4").tobytes()

    def topk(victim: bytes, code: str = "varint", **kw) -> bytes:
        return _tampered(grad, f"{TOPK};{code}", victim, **kw)

    return {
        "index past the end": (topk(_varint_encode(np.append(top[:-1], n + 5)) + values + scale), "below", TOPK),
        "varint too long": (topk(b"\x80" * 5 + index + values + scale), "longer than 5", TOPK),
        "bitmap marks too many": (topk(np.packbits(over, bitorder="little").tobytes() + values + scale, "bitmap"),
                                  f"not {k}", TOPK),
        "negative scale": (topk(index + values + with_scale(-1.0)), "scales", TOPK),
        "huge scale": (topk(index + values + with_scale(1e38)), "scales", TOPK),
        "int8 value -128": (topk(index + b"\x80" + values[1:] + scale), "−127…127", TOPK),
        "one byte short": (topk(index + values + scale, cut=1), "end inside", TOPK),
        "bytes left over": (topk(index + values + scale, tail=b"\x00"), "bytes follow", TOPK),
        "codec without its index code": (topk(b"", code=""), "index code", TOPK),
        "an array packed and on its own": (topk(index + values + scale, alone=True), "only the uint8 entry", TOPK),
        "infinite block scale": (_tampered(grad, "int8:16", q.tobytes() + with_scale(np.inf) + blocks[4:]), "scales",
                                 "int8:16"),
        "int4 value -8": (_tampered(grad, "int4", b"\x08" * (-(-n // 2)) + scale), "−7…7", "int4"),
        "fp16 overflow": (_tampered(grad, "fp16", huge), "65504", "fp16"),
    }


@pytest.mark.parametrize("what", list(_corrupt_updates(ARRAYS)))
def test_corrupt_compressed_updates_are_refused_naming_the_problem(what):
    blob, words, scheme = _corrupt_updates(ARRAYS)[what]
    with pytest.raises(ParamsError, match=words):
        update_from_bytes(blob, ARRAYS, compress=scheme, sender="s")


def test_a_run_counts_the_compressed_bytes_per_direction_and_round(tmp_path):
    run = fedcare.simulate(out=str(tmp_path / "small"), model="mlp", hidden=[64], compress_updates="topk:0.1+int8",
                           error_feedback=True, compress_broadcast="int8", **RUN)
    s, c = run.summary, run.summary["communication"]
    assert [r["round"] for r in c["per_round"]] == [1, 2, 3]
    assert c["upload"] + c["broadcast"] == s["bytes_sent"] == sum(r["upload"] + r["broadcast"] for r in c["per_round"])
    plain = len(params_to_bytes(run.global_params))  # one uncompressed message (a model-sized update is as big)
    for r in c["per_round"]:  # 4 updates, 4 fit and 4 evaluation broadcasts a round
        assert r["upload"] < 4 * plain / 2 and r["broadcast"] < 8 * plain / 2
    assert s["federated"]["mean"]["accuracy"] > 0.6


def test_error_feedback_resumes_from_the_checkpointed_residual(tmp_path):
    """The residual is site state: a run cut after round 2 and resumed equals an uninterrupted one
    (it would not if the residual restarted at zero); and each site sends what it did not before."""
    from fedcare.interfaces.api import resume

    class Crash(Exception):
        pass

    def crash(name, record):
        if name == "federated" and record.round == 2:
            raise Crash()

    settings = dict(RUN, rounds=4, model="mlp", hidden=[64], compress_updates="topk:0.1", error_feedback=True)
    whole = fedcare.simulate(out=str(tmp_path / "whole"), **settings)
    with pytest.raises(Crash):
        fedcare.simulate(out=str(tmp_path / "cut"), progress=crash, **settings)
    from fedcare.federation.checkpoint import load_checked

    saved, _ = load_checked(next((tmp_path / "cut" / "checkpoints" / "sites").glob("cleveland*")))
    assert any(k.startswith("residual/") and np.abs(v).sum() > 0 for k, v in saved.items())
    resumed = resume(tmp_path / "cut")
    for k in whole.global_params:
        np.testing.assert_array_equal(resumed.global_params[k], whole.global_params[k])
    assert resumed.summary["communication"] == whole.summary["communication"]
    without = fedcare.simulate(out=str(tmp_path / "without"), **dict(settings, error_feedback=False))
    assert any(not np.array_equal(without.global_params[k], whole.global_params[k]) for k in whole.global_params)


def test_error_feedback_sends_in_total_what_the_site_computed():
    """Σ decoded messages + last residual = Σ raw updates: compression delays, never drops."""
    from fedcare.core.messages import FitRequest
    from fedcare.learning.site import LocalSite

    class Raw(LocalSite):
        def __init__(self):
            self.site_id, self.residual, self.raw = "s", {}, []

        def _fit(self, params, request):
            grad = {"w": RNG.normal(size=50).astype(np.float32)}
            self.raw.append(grad["w"])
            return Update("s", grad, 5)

    site, sent = Raw(), []
    for rnd in range(1, 6):
        request = FitRequest(rnd, "local_epochs", 1, 0.1, 8, "sgd", seed=rnd, compress="topk:0.1+int8", error_feedback=True)
        blob = fedcare.core.serialization.fit_reply_to_bytes(site.fit({}, request), request)
        sent.append(update_from_bytes(blob, {"w": np.zeros(50, np.float32)}, round_=rnd, compress=request.compress,
                                      sender="s").grad["w"])
    np.testing.assert_allclose(np.sum(sent, axis=0) + site.residual["w"], np.sum(site.raw, axis=0), atol=1e-5)


def test_record_level_dp_the_site_compresses_after_dp_sgd():
    """Compression is post-processing of the DP-SGD update: the same training, the same ε."""
    from conftest import examples

    from fedcare.core.messages import FitRequest
    from fedcare.learning import LocalSite, make_task
    from fedcare.learning.models import LinearModel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 200)).astype(np.float32)
    rows = examples(tabular=x, label=(x[:, 0] > 0).astype(np.float32))
    params = {"weight": np.zeros((1, 200), np.float32), "bias": np.zeros(1, np.float32)}
    got = []
    for scheme in ("none", "topk:0.05+int8"):
        site = LocalSite("s", make_task("binary"), LinearModel(["tabular"], 200, 1), {"train": rows, "test": rows})
        request = FitRequest(1, "local_epochs", 1, 0.1, 8, "sgd", 1, dp_epsilon=3.0, planned_rounds=1,
                             compress=scheme, error_feedback=scheme != "none")
        update = site.fit(params, request)
        got.append((update, fedcare.core.serialization.fit_reply_to_bytes(update, request), site))
    (plain, plain_blob, _), (small, small_blob, site) = got
    assert small.metrics["epsilon"] == plain.metrics["epsilon"] <= 3.0
    np.testing.assert_array_equal(small.grad["weight"], plain.grad["weight"])  # training untouched
    assert len(small_blob) < len(plain_blob) / 1.8 and np.abs(site.residual["weight"]).sum() > 0


def test_the_coordinator_sees_decoded_updates_under_site_dp_and_robust_rules(tmp_path):
    """Site-level DP's clipping and noise, and the robust rules, work on dense decoded updates."""
    for extra in ({"site_dp_epsilon": 20.0}, {"aggregator": "median"}):
        run = fedcare.simulate(out=str(tmp_path / "x"), compress_updates="topk:0.3+int8", model="mlp", hidden=[64],
                               **dict(RUN, rounds=2), **extra)
        updates = [r for r in run.history[-1].anomalies.values()]
        assert updates and all(np.isfinite(u["norm_ratio"]) and u["norm_ratio"] > 0 for u in updates)
    from fedcare.core.messages import FitRequest
    from fedcare.transports.simulation import SimulationTransport

    class Site:
        site_id = "s"

        def fit(self, params, request):
            return Update("s", {k: np.full_like(v, 3) for k, v in params.items()}, 4)

    request = FitRequest(1, "local_epochs", 1, 0.1, 8, "sgd", seed=0, compress="topk:0.1+fp16")
    transport = SimulationTransport([Site()])
    update = transport.fit(ARRAYS, {"s": request}).updates[0]
    assert {k: (v.shape, v.dtype) for k, v in update.grad.items()} == {k: (v.shape, v.dtype) for k, v in ARRAYS.items()}
    assert np.count_nonzero(update.grad["layer.0.weight"]) == 800 and update.grad["layer.0.bias"].tolist().count(3) == 1
    assert update.grad["scalar"] == 3  # packed too, exactly (a single entry)
    assert transport.bytes_upload < len(update_to_bytes(update, 1)) < transport.bytes_sent


def test_over_the_network_the_bytes_on_the_wire_are_what_bytes_sent_says(deployment, tmp_path):
    """Real processes over TLS: compressed broadcasts and updates cross the wire at the sizes the run
    counts (the coordinator's audit logs each update's size on arrival), corrupt compressed updates
    are a 422 with an audit line, and the run equals the simulation."""
    import subprocess

    from conftest import HEART_SITES

    config = dict(RUN, rounds=2, seed=3, model="mlp", hidden=[64], compress_updates=TOPK,
                  error_feedback=True, compress_broadcast="fp16")
    d = deployment(config)
    d.start_coordinator("--start")
    for site in HEART_SITES[:3]:
        d.start_agent(site)
    agent = d.start_agent("va", "--approve", stdin=subprocess.PIPE)  # waits for approval: we speak first
    d.wait_for(lambda s: (s.get("open_task") or {}).get("id") == "1.fit", what="round 1")
    va = d.site_client("va")
    assert va.get("/v1/task", params={"wait": 5}).json()["id"] == "1.fit"
    blob = va.get("/v1/tasks/1.fit/params").content
    simulated = fedcare.simulate(out=str(tmp_path / "simulated"), **config)
    message, _ = params_from_bytes(blob, layout=simulated.global_params)  # read against the model's layout
    assert len(blob) < 0.65 * len(params_to_bytes(message))  # the broadcast crossed as fp16
    corrupt = {what: (body, words) for what, (body, words, scheme)
               in _corrupt_updates(dict(sorted(message.items(), key=lambda kv: -kv[1].size))).items() if scheme == TOPK}
    corrupt["replayed"] = (update_to_bytes(Update("va", message, 5), 2, parse_scheme(TOPK)), "not for round 1")
    for what, (body, words) in corrupt.items():
        response = va.put("/v1/tasks/1.fit/update", content=body)
        assert response.status_code == 422 and words in response.json()["detail"], (what, response.text)
    agent.stdin.write(b"y\n")
    agent.stdin.flush()
    status = d.wait_completed()
    net = json.loads((d.run_dir(status) / "summary.json").read_text())
    sim = simulated.summary
    assert net["federated"] == sim["federated"] and net["communication"] == sim["communication"]
    audit = d.client.get("/v1/audit").json()
    arrived = [int(a["detail"].split()[0]) for a in audit if a["action"].startswith("update") and a["status"] == 200]
    assert len(arrived) == 8 and sum(arrived) == net["communication"]["upload"]
    assert max(arrived) < 0.5 * len(params_to_bytes(message))  # each update crossed at under half a model
    # the other direction: round 1 sent the fp16 model 8 times (4 fit tasks, 4 evaluate tasks), each at
    # the size va downloaded (fp16 of the same layout: the evaluated model's message is as long)
    assert net["communication"]["per_round"][0]["broadcast"] == 8 * len(blob)
    refused = [a["detail"] for a in audit if a["site_id"] == "va" and a["status"] == 422]  # repeats: one line
    assert all(any(words in line for line in refused) for _, words in corrupt.values())


def test_quantized_secure_aggregation_sums_exactly_in_a_small_ring_and_recovers_dropouts():
    """int8 under secure aggregation: each site rounds to the common step, masks in 16-bit words
    (uniform weights, 4 sites: 4 · 127 fits), and the unmasked sum is exactly the sum of what the
    surviving sites quantized, with a dropped site's masks recovered; the masked vector is 4× smaller."""
    from fedcare.algorithms.secagg import SecurePlan
    from fedcare.core.messages import FitRequest
    from fedcare.transports.secure import (
        SecureAggregation,
        SecureSiteRound,
        noise_rng,
        quantize_for_ring,
    )

    grads = {f"s{i}": {"w": RNG.uniform(-0.5, 0.5, size=(40, 5)).astype(np.float32)} for i in range(4)}

    class Site:
        def __init__(self, sid):
            self.site_id = sid

        def fit(self, params, request):
            return Update(self.site_id, grads[self.site_id], 10)

    sites = {sid: Site(sid) for sid in grads}
    requests = {sid: FitRequest(1, "local_epochs", 1, 0.1, 8, "sgd", seed=0) for sid in grads}
    params = {"w": np.zeros((40, 5), np.float32)}
    sizes = {}
    for quantized in (True, False):
        keys = dict(quantizer="int8", quant_range=0.5, word_bits=16) if quantized else {}
        plan = SecurePlan(max_dropouts=1, weighting="uniform", noise_seed=3, **keys)
        runner = SecureAggregation(plan, dropouts=lambda rnd, ids: ["s2"])
        result, _ = runner.fit(sites, lambda p, n: p, params, requests, None)
        total = result.updates[0]
        survivors = [s for s in grads if s != "s2"]
        assert result.refused.keys() == {"s2"} and total.metrics["weight"] == 3.0
        if quantized:
            q = sum(quantize_for_ring(grads[s]["w"].reshape(-1).astype(np.float64), plan, noise_rng(plan, 1, s))
                    for s in survivors)
            np.testing.assert_array_equal(total.grad["w"].reshape(-1), q * (0.5 / 127))  # exact, not close
        plain = sum(grads[s]["w"].astype(np.float64) for s in survivors)
        assert np.abs(total.grad["w"] - plain).max() <= (3 * 0.5 / 127 if quantized else 1e-4)
        masked = next(iter(runner.last_round.masked_inputs.values()))
        sizes[quantized] = masked.nbytes
    assert sizes[False] == 4 * sizes[True] == 8 * 201  # 200 coordinates and the weight, 8 → 2 bytes each
    too_big = Update("s0", {"w": np.full((40, 5), 0.6, np.float32)}, 10)
    with pytest.raises(ParamsError, match="beyond compress_range 0.5"):
        SecureSiteRound("s0", 1, SecurePlan(weighting="uniform", quantizer="int8", quant_range=0.5,
                                            word_bits=16)).prepare(too_big, params)


def test_quantized_secure_aggregation_in_a_run_picks_the_ring_and_keeps_the_accuracy(tmp_path):
    settings = dict(RUN, rounds=3, model="mlp", hidden=[64], secure_aggregation=True)
    runs = {}
    for name, extra in {"plain": {"weighting": "uniform"},
                        "int8, uniform: 16-bit words": {"weighting": "uniform", "compress_updates": "int8",
                                                        "compress_range": 1.0},
                        "int8, by examples: 32-bit words": {"compress_updates": "int8", "compress_range": 1.0}}.items():
        runs[name] = fedcare.simulate(out=str(tmp_path / str(len(runs))), **settings, **extra).summary
    plain, small, examples = runs.values()
    assert small["communication"]["upload"] < 0.45 * plain["communication"]["upload"]
    assert small["communication"]["upload"] < examples["communication"]["upload"] < 0.7 * plain["communication"]["upload"]
    assert abs(small["federated"]["mean"]["accuracy"] - plain["federated"]["mean"]["accuracy"]) < 0.02
    assert examples["federated"]["mean"]["accuracy"] > 0.7  # weighted by rows: another mean, not comparable


def test_quantized_secure_aggregation_over_the_network(deployment, tmp_path):
    """Real agents over TLS mask int8 updates in 16-bit words: the run completes as the simulation
    does, with the same bytes (each masked vector 2 bytes a coordinate), and no plain update
    ever reaches the coordinator. The sites round with OS randomness, so the models differ slightly."""
    config = dict(RUN, rounds=2, model="mlp", hidden=[64], secure_aggregation=True, weighting="uniform",
                  compress_updates="int8", compress_range=1.0)
    d = deployment(config)
    d.start_all()
    status = d.wait_completed()
    net = json.loads((d.run_dir(status) / "summary.json").read_text())
    sim = fedcare.simulate(out=str(tmp_path / "simulated"), **config).summary
    assert net["privacy"] == sim["privacy"] and net["communication"]["broadcast"] == sim["communication"]["broadcast"]
    # the same protocol messages; only the sites' train_loss, sent in the clear beside them, is printed differently
    assert abs(net["communication"]["upload"] - sim["communication"]["upload"]) < 0.005 * sim["communication"]["upload"]
    assert abs(net["federated"]["mean"]["accuracy"] - sim["federated"]["mean"]["accuracy"]) < 0.03
    assert not any(a["action"].startswith("update") for a in d.client.get("/v1/audit").json())
