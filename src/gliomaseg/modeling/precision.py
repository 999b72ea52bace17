"""``--precision auto``: measure fp32 against bf16-mixed on this machine, for this model and size, and pick the faster.

Machines of one kind differ (one 2-core AVX512_BF16 CPU trained Unet-resnet18 2.7x faster in bf16,
another of the same kind slower), so the choice is measured, not assumed. The probe runs a few
training steps (forward, loss, backward, optimizer step) of the actual architecture and encoder at the
actual image size, both channels_last, in turn (so other load hits both alike), and keeps bf16-mixed only when it is at least
:data:`BF16_MARGIN` faster: bf16 rounds activations, so a tie goes to fp32. The answer is cached per
machine (see :mod:`gliomaseg.core.machine`) with the torch version, model and size, so later runs skip it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

from gliomaseg.core import machine
from gliomaseg.core.errors import ConfigError

AUTO = "auto"
FP32 = "32"
BF16 = "bf16-mixed"
# bf16-mixed must be this much faster (images/s ratio - 1) to be picked over fp32.
BF16_MARGIN = 0.10
# The probe's batch (at most the training batch): small enough to keep the probe to a few seconds.
PROBE_BATCH = 4
PROBE_STEPS = 3
CACHE_KIND = "precision"


@dataclass
class PrecisionChoice:
    """The precision a run uses and why. ``images_per_second`` holds the probe's rates, when one ran."""

    precision: str
    source: str  # "forced" (given), "probe" (measured now), "cache" (measured earlier on this machine), "default"
    images_per_second: dict[str, float] = field(default_factory=dict)
    speedup: float | None = None  # bf16-mixed images/s over fp32 images/s
    reason: str = ""

    def message(self) -> str:
        """One line for the user: which precision, and by how much it won."""
        return f"precision {self.precision} ({self.source}): {self.reason}"


def decide(rates: dict[str, float], margin: float = BF16_MARGIN) -> PrecisionChoice:
    """Pick from probe rates ``{"32": images/s, "bf16-mixed": images/s}``: bf16-mixed only if ``margin`` faster."""
    fp32, bf16 = rates.get(FP32, 0.0), rates.get(BF16, 0.0)
    if fp32 <= 0 and bf16 <= 0:
        raise ConfigError(f"precision probe measured no speed ({rates}); pass --precision 32 or bf16-mixed")
    if fp32 <= 0:
        return PrecisionChoice(BF16, "probe", rates, None, f"fp32 could not be measured; bf16-mixed {bf16:.2f} images/s")
    if bf16 <= 0:
        return PrecisionChoice(FP32, "probe", rates, None, f"fp32 {fp32:.2f} images/s; bf16-mixed not run: {NO_BF16}")
    speedup = bf16 / fp32
    summary = f"bf16-mixed {bf16:.2f} vs fp32 {fp32:.2f} images/s ({speedup:.2f}x)"
    if speedup >= 1.0 + margin:
        return PrecisionChoice(BF16, "probe", rates, round(speedup, 3), f"{summary}: bf16-mixed is {speedup:.2f}x as fast")
    if speedup >= 1.0:
        reason = f"{summary}: bf16-mixed is faster by less than {margin:.0%}, not worth its rounding"
    else:
        reason = f"{summary}: fp32 is {1 / speedup:.2f}x as fast"
    return PrecisionChoice(FP32, "probe", rates, round(speedup, 3), reason)


# Without these instructions oneDNN emulates bf16 on an x86 CPU: 9.4x slower than fp32 on a Zen 3 (AVX2 only),
# and one bf16 step there takes longer than the whole probe may (10 s).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
NO_BF16 = "this CPU has no bf16 instructions (avx512_bf16 / amx_bf16), so bf16 would be emulated, many times slower"


def cpu_runs_bf16() -> bool:
    """False on an x86 CPU without bf16 instructions (the probe then times fp32 only); True elsewhere, where it measures."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return True
    return any(machine.cpu_has(flag) for flag in BF16_CPU_FLAGS)


def probe_rates(
    arch: str,
    encoder: str,
    image_size: int,
    batch: int = PROBE_BATCH,
    steps: int = PROBE_STEPS,
    device: str = "cpu",
    clock: Callable[[], float] = time.perf_counter,
    decoder_channels: list[int] | None = None,
) -> dict[str, float]:
    """Training images/s of ``arch``-``encoder`` on (batch, 3, image_size, image_size) random images, fp32 and bf16-mixed.

    One model per precision (same initial weights, channels_last, SGD, dice loss) takes one warm-up step;
    then the two take ``steps`` timed steps in turn (fp32, bf16, fp32, ...), so a burst of load from other
    processes hits both alike. Each rate uses its fastest step: other work only ever adds time.
    ``clock`` is read before and after every timed step. On an x86 CPU without bf16 instructions bf16-mixed
    is not run (rate 0.0), which keeps the probe short there (:func:`cpu_runs_bf16`).
    """
    import torch

    from gliomaseg.modeling.losses import build_loss
    from gliomaseg.modeling.models import build_model

    dev = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, image_size, image_size, generator=generator).to(dev).contiguous(memory_format=torch.channels_last)
    masks = (torch.rand(batch, 1, image_size, image_size, generator=generator) > 0.8).float().to(dev)
    loss_fn = build_loss("dice")
    if dev.type == "cuda":
        precisions = [FP32] + ([BF16] if torch.cuda.is_bf16_supported() else [])
    else:
        precisions = [FP32] + ([BF16] if cpu_runs_bf16() else [])
    setups = {}
    for precision in precisions:
        torch.manual_seed(0)
        model = build_model(arch, encoder, decoder_channels=decoder_channels).to(dev).train().to(memory_format=torch.channels_last)
        setups[precision] = (model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))

    def step(precision: str) -> None:
        model, optimizer = setups[precision]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == BF16):
            loss = loss_fn(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for precision in precisions:
        step(precision)  # warm-up: oneDNN / cuDNN pick their kernels on the first step
    seconds: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(steps):
        for precision in precisions:
            started = clock()
            step(precision)
            seconds[precision].append(clock() - started)
    rates = {p: round(batch / min(s), 3) if min(s) > 0 else 0.0 for p, s in seconds.items()}
    return {FP32: rates[FP32], BF16: rates.get(BF16, 0.0)}


def probe_key(arch: str, encoder: str, image_size: int, device: str = "cpu", decoder_channels: list[int] | None = None) -> dict:
    """The cache key of a probe: this machine (CPU model and flags, usable CPUs), torch version, device, model
    (with its decoder widths when they are not smp's default), size."""
    import torch

    extra = {"torch": torch.__version__, "device": device, "arch": arch, "encoder": encoder, "image_size": int(image_size)}
    if decoder_channels:
        extra["decoder_channels"] = [int(c) for c in decoder_channels]
    if device.startswith("cuda"):
        extra["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return machine.machine_key(**extra)


def probe_device(accelerator: str = "auto") -> str:
    """The device Lightning will train on: ``cuda`` when a GPU is there and not ruled out, else ``cpu``."""
    import torch

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def choose_precision(
    precision: str,
    arch: str,
    encoder: str,
    image_size: int,
    *,
    batch_size: int = 16,
    accelerator: str = "auto",
    use_cache: bool = True,
    probe: Callable[..., dict[str, float]] = probe_rates,
    decoder_channels: list[int] | None = None,
) -> PrecisionChoice:
    """The precision to train with: ``precision`` itself unless it is ``"auto"``, else the cached or measured faster one."""
    if precision != AUTO:
        return PrecisionChoice(precision, "forced", reason="given with --precision")
    from gliomaseg.modeling.models import canonical_architecture

    arch = canonical_architecture(arch)
    device = probe_device(accelerator)
    key = probe_key(arch, encoder, image_size, device, decoder_channels)
    if use_cache:
        hit = machine.cached(CACHE_KIND, key)
        if hit and hit.get("precision") in (FP32, BF16):
            known = {f.name for f in fields(PrecisionChoice)}
            choice = PrecisionChoice(**{k: v for k, v in hit.items() if k in known and k != "source"}, source="cache")
            choice.reason += f" (measured earlier on this machine; cache {machine.cache_file(CACHE_KIND)})"
            return choice
    started = time.perf_counter()
    # A lighter decoder trains at its own speed: it is probed as itself (smp's default decoder: no extra argument).
    extra = {"decoder_channels": decoder_channels} if decoder_channels else {}
    rates = probe(arch, encoder, image_size, batch=min(batch_size, PROBE_BATCH), device=device, **extra)
    choice = decide(rates)
    choice.reason += f"; probe of {arch}-{encoder} at {image_size} px took {time.perf_counter() - started:.1f} s"
    if use_cache:
        machine.store(CACHE_KIND, key, asdict(choice))
    return choice
