"""A torch-free predictor on ONNX Runtime, reading normalization and threshold from the model's metadata.

Execution settings are chosen for the machine: ``threads`` defaults to the CPUs this process may use (on
4 or more CPUs, half of them, one per physical core on most machines, is measured as well), and the
micro-batch (how many slices go through the session at once) is measured: :data:`MICRO_BATCHES` are timed
on :data:`PROBE_SLICES` random slices and the fastest is kept. On 2 cores, batches of 1-4 ran about 1.5x
faster per slice than 16 (cache-bound; docs/benchmarks.md). The measurement takes a second or two and is
cached per machine, ONNX Runtime version, model file and threads (see :mod:`gliomaseg.core.machine`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gliomaseg.core import machine
from gliomaseg.core.errors import CheckpointError, first_line
from gliomaseg.modeling.spec import onnx_card, onnx_model_info

MICRO_BATCHES = (1, 2, 4, 8)
PROBE_SLICES = 8
CACHE_KIND = "onnxruntime"


@dataclass
class RuntimeSettings:
    """How the session runs: intra-op ``threads`` and ``micro_batch``, and where the choice came from."""

    threads: int
    micro_batch: int
    source: str  # "given", "measured", "cache"
    slices_per_second: dict[str, float] = field(default_factory=dict)  # "threads x micro-batch" -> slices/s of the probe

    def message(self) -> str:
        line = f"onnxruntime: {self.threads} thread(s), micro-batch {self.micro_batch} ({self.source}"
        if self.slices_per_second:
            best = max(self.slices_per_second.values())
            line += "; probe slices/s " + ", ".join(f"{k}: {v:.1f}" for k, v in self.slices_per_second.items())
            line += f"; best {best:.1f}"
        return line + ")"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]


def _model_source(path: Path) -> str | bytes:
    """What ONNX Runtime loads for ``path``: the file itself, or its bytes with any denormal weight flushed to zero
    (the file is not changed: :mod:`gliomaseg.modeling.denormals` says why, and an older export may hold some).
    Read once per predictor, however many sessions its thread probe opens."""
    import onnx

    from gliomaseg.modeling.denormals import flush_onnx

    try:  # a damaged initializer fails in the flush, not in the load: both are one line naming the file
        model = onnx.load(str(path))
        return model.SerializeToString() if flush_onnx(model) else str(path)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable ONNX model ({first_line(exc)})") from exc


def _session(path: Path, threads: int, source: str | bytes):
    """An ONNX Runtime session of ``source`` (:func:`_model_source` of ``path``) with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(source, options, providers=ort.get_available_providers())
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable ONNX model ({first_line(exc)})") from exc


def _run(session, path: Path, input_name: str, x: np.ndarray, size: int) -> np.ndarray:
    """The model's logits for ``x`` (N, 3, S, S), checked: (N, 1, S, S) and finite; an ONNX Runtime error or any
    other output becomes one :class:`CheckpointError` naming the model."""
    try:
        out = session.run(None, {input_name: x})[0]
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidArgument, RuntimeException)
        raise CheckpointError(f"{path}: ONNX Runtime could not run the model on {x.shape[0]} slice(s) ({first_line(exc)})") from exc
    out = np.asarray(out)
    if out.shape != (x.shape[0], 1, size, size):
        raise CheckpointError(f"{path}: model output of shape {out.shape}; gliomaseg needs logits of shape "
                              f"({x.shape[0]}, 1, {size}, {size}) for this input")
    if not np.isfinite(out).all():
        raise CheckpointError(f"{path}: the model gives non-finite logits (NaN or infinite); its weights are broken, "
                              "a mask from it would be meaningless")
    return out


def check_graph(session, path: Path, size: int) -> str:
    """The name of the model's image input, once its graph fits gliomaseg: one float input (batch, 3, S, S)
    with a free batch dimension, and a first output (batch, 1, S, S); S may be free or the model's ``size``.

    A model that does not fit gets one :class:`CheckpointError` when it is opened, not a traceback when it runs.
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()

    def fixed(dim) -> bool:
        return isinstance(dim, int)

    def describe(shape) -> str:
        return "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")" if shape is not None else "unknown"

    if len(inputs) != 1:
        raise CheckpointError(f"{path}: the model has {len(inputs)} inputs; gliomaseg feeds one, images (batch, 3, {size}, {size})")
    shape = inputs[0].shape
    if inputs[0].type != "tensor(float)":
        raise CheckpointError(f"{path}: the model's input is {inputs[0].type}; gliomaseg feeds float32 images")
    if (shape is None or len(shape) != 4 or shape[1] != 3 or fixed(shape[0])
            or any(fixed(d) and d != size for d in shape[2:])):
        raise CheckpointError(f"{path}: the model's input has shape {describe(shape)}; gliomaseg feeds (batch, 3, {size}, {size}) "
                              "with a free batch dimension (export it with `gliomaseg export`)")
    if not outputs:
        raise CheckpointError(f"{path}: the model has no output")
    shape = outputs[0].shape
    if shape is None or len(shape) != 4 or (fixed(shape[1]) and shape[1] != 1) or any(fixed(d) and d != size for d in shape[2:]):
        raise CheckpointError(f"{path}: the model's output has shape {describe(shape)}; gliomaseg needs one logit map per slice, "
                              f"(batch, 1, {size}, {size})")
    return inputs[0].name


def _probe(session, path: Path, input_name: str, size: int) -> dict[int, float]:
    """Slices/s of ``session`` for each micro-batch of :data:`MICRO_BATCHES`, on random input."""
    x = np.random.default_rng(0).standard_normal((max(MICRO_BATCHES), 3, size, size)).astype(np.float32)
    rates = {}
    for batch in MICRO_BATCHES:
        _run(session, path, input_name, x[:batch], size)  # warm-up, and the output checked once
        runs = -(-PROBE_SLICES // batch)
        started = time.perf_counter()
        for _ in range(runs):
            session.run(None, {input_name: x[:batch]})
        rates[batch] = runs * batch / (time.perf_counter() - started)
    return rates


class OnnxPredictor:
    """Runs a model written by ``gliomaseg export``; needs onnxruntime and numpy only.

    ``threads`` / ``micro_batch`` force a setting; left out, they are chosen for this machine (see the module).
    """

    backend = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None, micro_batch: int | None = None, use_cache: bool = True) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: ONNX model does not exist")
        self.path = path
        if threads is not None and threads < 1:
            raise CheckpointError(f"{path}: --threads must be at least 1, got {threads}")
        cpus = machine.available_cpus()
        thread_options = [threads] if threads else sorted({cpus, max(1, cpus // 2)} if cpus >= 4 else {cpus}, reverse=True)
        source = _model_source(path)
        self.session = _session(path, thread_options[0], source)
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta, self.info = onnx_model_info(props, path)
        self.card = onnx_card(props)  # the model card export wrote beside the description, if any
        self.image_size = self.info.image_size
        self.threshold = self.info.threshold
        self.path = path
        self.input_name = check_graph(self.session, path, self.image_size)
        if micro_batch is not None:
            if micro_batch < 1:
                raise CheckpointError(f"{path}: micro-batch must be at least 1, got {micro_batch}")
            self.settings = RuntimeSettings(thread_options[0], micro_batch, "given")
        else:
            self.settings = self._choose(path, source, thread_options, use_cache, ort.__version__)
            if self.settings.threads != thread_options[0]:
                self.session = _session(path, self.settings.threads, source)
        self.micro_batch = self.settings.micro_batch

    def _choose(self, path: Path, source: str | bytes, thread_options: list[int], use_cache: bool, version: str) -> RuntimeSettings:
        # "weights": rates cached before the flush (gliomaseg.modeling.denormals) were measured on slower weights
        key = machine.machine_key(onnxruntime=version, model=file_digest(path), threads=thread_options,
                                  weights="denormals flushed")
        if use_cache:
            hit = machine.cached(CACHE_KIND, key)
            if hit and isinstance(hit.get("threads"), int) and isinstance(hit.get("micro_batch"), int):
                return RuntimeSettings(hit["threads"], hit["micro_batch"], "cached: measured earlier on this machine",
                                       hit.get("slices_per_second", {}))
        rates: dict[tuple[int, int], float] = {}
        for threads in thread_options:
            session = self.session if threads == thread_options[0] else _session(path, threads, source)
            rates.update({(threads, batch): rate for batch, rate in _probe(session, path, self.input_name, self.image_size).items()})
        threads, batch = max(rates, key=rates.get)
        settings = RuntimeSettings(threads, batch, "measured now",
                                   {f"{t}x{b}": round(r, 2) for (t, b), r in rates.items()})
        if use_cache:
            machine.store(CACHE_KIND, key, asdict(settings))
        return settings

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (N, 1, S, S) float32 logits, in micro-batches."""
        x = self.info.normalize(images)
        step = self.micro_batch
        return np.concatenate([_run(self.session, self.path, self.input_name, x[i : i + step], self.image_size)
                               for i in range(0, len(x), step)])

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        logits = self.logits(images)[:, 0]
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
