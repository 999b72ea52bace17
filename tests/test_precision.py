"""--precision auto: the decision rule, the probe with a fake clock, and the per-machine cache."""

from __future__ import annotations

import json

import pytest

from gliomaseg.core import machine
from gliomaseg.core.errors import ConfigError
from gliomaseg.modeling.precision import BF16, FP32, choose_precision, decide, probe_rates


def test_decide_picks_bf16_only_when_clearly_faster():
    fast = decide({FP32: 3.4, BF16: 9.2})  # this machine's measured training step, Unet-resnet18 at 256 px
    assert fast.precision == BF16 and fast.speedup == pytest.approx(9.2 / 3.4, rel=1e-3)
    assert "2.71x" in fast.message()
    slow = decide({FP32: 5.88, BF16: 4.42})  # another machine of the same kind (docs/benchmarks.md)
    assert slow.precision == FP32 and "fp32 is 1.33x as fast" in slow.reason
    tie = decide({FP32: 5.0, BF16: 5.2})  # 4% faster: not worth bf16's rounding
    assert tie.precision == FP32 and "less than 10%" in tie.reason
    with pytest.raises(ConfigError):
        decide({FP32: 0.0, BF16: 0.0})


def test_probe_alternates_precisions_and_keeps_each_ones_fastest_step():
    # Clock readings around each timed step, in turn fp32, bf16, fp32, bf16: fp32 steps take 2.0 s and 1.5 s
    # (the slower one disturbed), bf16-mixed steps 0.5 s and 0.6 s; batch of 2 images.
    readings = iter([0.0, 2.0, 10.0, 10.5, 20.0, 21.5, 30.0, 30.6])
    rates = probe_rates("unet", "resnet18", 32, batch=2, steps=2, clock=lambda: next(readings))
    assert rates == {FP32: pytest.approx(2 / 1.5, abs=1e-3), BF16: pytest.approx(4.0)}
    assert decide(rates).precision == BF16
    assert next(readings, None) is None  # read exactly twice per timed step


def test_auto_is_cached_per_machine_model_and_size(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIOMASEG_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def fake_probe(arch, encoder, image_size, batch, device):
        calls.append((arch, encoder, image_size, batch, device))
        return {FP32: 2.0, BF16: 5.0}

    first = choose_precision("auto", "unet", "resnet18", 64, batch_size=16, probe=fake_probe)
    assert first.precision == BF16 and first.source == "probe" and first.images_per_second == {FP32: 2.0, BF16: 5.0}
    assert calls == [("Unet", "resnet18", 64, 4, "cpu")]
    again = choose_precision("auto", "Unet", "resnet18", 64, probe=fake_probe)  # same key: no second probe
    assert again.precision == BF16 and again.source == "cache" and len(calls) == 1
    choose_precision("auto", "unet", "resnet18", 128, probe=fake_probe)  # another size: probed again
    choose_precision("auto", "unet", "resnet34", 64, probe=fake_probe)  # another encoder: probed again
    assert [c[2] for c in calls] == [64, 128, 64]
    light = []
    choice = choose_precision("auto", "unet", "resnet18", 64, decoder_channels=[32, 16, 8],
                              probe=lambda *a, **k: light.append(k["decoder_channels"]) or {FP32: 4.0, BF16: 1.0})
    assert light == [[32, 16, 8]] and choice.precision == FP32  # a lighter decoder is probed as itself, cached apart
    stored = json.loads((tmp_path / "cache" / "precision.json").read_text())
    keys = [entry["key"] for entry in stored.values()]
    assert len(keys) == 4 and all({"cpu", "flags", "cpus", "torch", "arch", "encoder", "image_size"} <= set(k) for k in keys)
    # A forced precision neither probes nor reads the cache.
    assert choose_precision("32", "unet", "resnet18", 64, probe=fake_probe).source == "forced" and len(calls) == 3


def test_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("GLIOMASEG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert machine.cache_dir() == tmp_path / "xdg" / "gliomaseg"
    monkeypatch.setenv("GLIOMASEG_CACHE_DIR", str(tmp_path / "own"))
    assert machine.cache_dir() == tmp_path / "own"


def test_corrupt_cache_is_measured_again(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIOMASEG_CACHE_DIR", str(tmp_path))
    (tmp_path / "precision.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable cache"):
        choice = choose_precision("auto", "unet", "resnet18", 64, probe=lambda *a, **k: {FP32: 3.0, BF16: 1.0})
    assert choice.precision == FP32 and choice.source == "probe"
    assert json.loads((tmp_path / "precision.json").read_text())  # rewritten, valid


def test_training_records_the_chosen_precision(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())  # trained with the default, --precision auto
    choice = summary["precision_choice"]
    assert summary["precision"] in (FP32, BF16) and choice["precision"] == summary["precision"]
    assert choice["source"] in ("probe", "cache") and set(choice["images_per_second"]) == {FP32, BF16}
    assert json.loads((trained_run / "config.json").read_text())["precision"] == "auto"


def test_a_cpu_without_bf16_instructions_probes_fp32_only(monkeypatch):
    """On an AVX2-only x86 CPU bf16 is emulated (9x slower measured): the probe does not spend its time on it."""
    import platform

    from gliomaseg.modeling import precision

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(machine, "cpu_has", lambda flag: flag not in precision.BF16_CPU_FLAGS)
    assert not precision.cpu_runs_bf16()
    readings = iter(float(i) for i in range(100))
    rates = probe_rates("unet", "resnet18", 32, batch=2, steps=2, clock=lambda: next(readings))
    assert rates[BF16] == 0.0 and rates[FP32] == 2.0  # only fp32 steps were timed: 1 s each on the fake clock
    choice = decide(rates)
    assert choice.precision == FP32 and "no bf16 instructions" in choice.reason
    monkeypatch.setattr(machine, "cpu_has", lambda flag: flag == "amx_bf16")
    assert precision.cpu_runs_bf16()
