"""Run a submitted model (a Python factory or a torch.export program) in a separate process.

The parent never imports, unpickles or calls submitted code. It writes the test inputs (the
modality tensors, the data's own presence masks and one keep-mask per missing-modality
condition; no targets, no ids) to a safetensors file in a fresh temporary directory and
starts ``python -m mmbench.evaluation.sandbox.worker job.json`` there with:

- a wall-clock timeout (the whole process group is SIGKILLed when it runs out),
- RLIMIT_AS (address space; CPU only: CUDA needs a large address space), RLIMIT_FSIZE and
  RLIMIT_CORE set by the worker before it imports torch or the submission,
- an environment built from scratch: PATH, HOME and TMPDIR (= the temp dir), LANG,
  PYTHONPATH and thread-count variables; nothing else is inherited (no tokens, no keys),
- that temp dir as its working directory, removed afterwards,
- stdin closed and stdout/stderr written to files in the temp dir (never parsed as data).

The worker applies each condition's mask (mmbench's own code, before the model sees the
inputs: missing slots are zero-filled), runs the model and writes the raw outputs back as
safetensors, which the parent validates (shapes, dtype, finiteness) before scoring.

For a retrieval task (:func:`run_retrieval_model`) the inputs are the rows of each modality
(gallery images, captions) with their presence masks, and the worker calls the submission's
``encode_image`` / ``encode_text`` batch by batch and writes the embeddings back.

By default (``SandboxConfig.isolation == "auto"``) the worker runs under bubblewrap
(mmbench.evaluation.sandbox.isolation): it sees the Python environment and its submission
read-only, its working directory and a private /tmp, and nothing else, with no network and
its own /proc. Where bubblewrap cannot run, ``auto`` warns and runs it as a plain process,
``required`` refuses. See docs/security.md.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.core.errors import SubmissionError

MB = 1 << 20
# the numeric figures kept from a worker's efficiency record; the per-modality ones come from retrieval models
EFFICIENCY_FIELDS = ("params", "flops_per_sample", "latency_ms_per_batch", "batch_size", "peak_gpu_memory_mb",
                     "flops_per_image", "flops_per_text", "latency_ms_per_image_batch", "latency_ms_per_text_batch")


@dataclass
class SandboxConfig:
    timeout_s: float = 600.0
    memory_mb: int | None = 8192  # RLIMIT_AS of the worker (torch alone maps ~3 GB at import)
    file_size_mb: int = 2048  # RLIMIT_FSIZE: largest file the worker may write
    threads: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    batch_size: int = 256
    keep_dir: bool = False  # debugging: leave the temp dir in place
    isolation: str = "auto"  # auto | required | none (mmbench.evaluation.sandbox.isolation)
    # what the worker must not see even inside the submission's folder, {description: path} (data root, leaderboard)
    denied: dict[str, Path] = field(default_factory=dict)


@dataclass
class SandboxOutput:
    outputs: dict[str, np.ndarray]  # condition name -> raw outputs [N, C] or [N]; retrieval: modality -> [N_m, D]
    efficiency: dict[str, Any] | None
    seconds: float
    log_tail: str
    isolation: str = "none"  # the isolation the worker ran under: bubblewrap or none


def clean_env(workdir: Path, threads: int, device: str) -> dict[str, str]:
    """The worker's whole environment: nothing from the parent except PATH, LANG, PYTHONPATH."""
    import mmbench

    pkg_root = str(Path(mmbench.__file__).resolve().parent.parent)
    pythonpath = [pkg_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != pkg_root]
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONPATH": os.pathsep.join(pythonpath),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
        "MALLOC_ARENA_MAX": "2",
    }
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        env[var] = str(threads)
    if device.startswith("cuda") and os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def _write_inputs(path: Path, split, conditions: list, mixed) -> None:
    """Inputs for the worker: tensors of the (clean) split, each condition's keep-masks, the
    seeded mixed order of the (condition, item) rows (`mixed`, mmbench.evaluation.mixing) and
    any segment condition's spans and training-mean fill."""
    import torch

    from mmbench.core.io import atomic_save_safetensors

    tensors: dict[str, torch.Tensor] = {"order": mixed.order.cpu()}
    for m in split.modality_names:
        tensors[f"x.{m}"] = split.modalities[m]
        tensors[f"present.{m}"] = split.present[m].to(torch.uint8)
        tensors[f"keep.{m}"] = mixed.keep[m].cpu().to(torch.uint8)
        if m in split.lengths:
            tensors[f"len.{m}"] = split.lengths[m]
    for m, seg in mixed.segments.items():
        for k in ("start", "length", "fill"):
            tensors[f"seg.{m}.{k}"] = seg[k].cpu().contiguous()
    meta = {"conditions": json.dumps([c.name for c in conditions]), "modalities": json.dumps(split.modality_names),
            "n": str(len(split)), "segments": json.dumps({m: seg["axis"] for m, seg in mixed.segments.items()})}
    atomic_save_safetensors(path, tensors, meta)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _worker_error(stderr_tail: str) -> str | None:
    for line in reversed(stderr_tail.splitlines()):
        if line.startswith("mmbench-sandbox-error: "):
            return line[len("mmbench-sandbox-error: "):].strip()
    return None


def _printable(text: str, limit: int = 300) -> str:
    s = "".join(ch if ch.isprintable() else " " for ch in text)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def run_model(model_spec, spec, split, conditions: list, device: str, config: SandboxConfig | None = None,
              efficiency: bool = True, seed: int | None = None) -> SandboxOutput:
    """Run a factory/exported submission over `split` under each condition, in a worker process."""
    from mmbench.models.model import describe_inputs, num_outputs

    seed = spec.missing.seed if seed is None else seed
    task_info = {"task": spec.name, "target_type": spec.target.type, "num_classes": spec.target.num_classes,
                 "modalities": list(spec.modalities), "inputs": describe_inputs(split),
                 "outputs": num_outputs(spec.target.type, spec.target.num_classes),
                 "range": list(spec.target.range) if spec.target.range is not None else None}
    from mmbench.data.splits import TRAINING_MEANS
    from mmbench.evaluation.mixing import mix_conditions

    mixed = mix_conditions(split, conditions, seed, (split.info or {}).get(TRAINING_MEANS))
    order = mixed.order.cpu().numpy()
    return _execute(model_spec, task_info, device, config or SandboxConfig(), efficiency,
                    lambda path: _write_inputs(path, split, conditions, mixed),
                    lambda path: _read_outputs(path, conditions, len(split), spec, model_spec.source, order))


def run_retrieval_model(model_spec, spec, inputs: dict[str, dict[str, Any]], device: str,
                        config: SandboxConfig | None = None, max_dim: int = 8192, efficiency: bool = True) -> SandboxOutput:
    """Embed each modality's rows with the submission's ``encode_<modality>`` in a worker process.

    `inputs[m]` holds ``x`` ``[N_m, ...]``, ``present`` bool ``[N_m]`` and, for a sequence
    modality, ``lengths``: the rows exactly as the model gets them (the caller decides their
    order). `outputs` of the result maps each modality to float32 ``[N_m, D]``; only its
    entries, dtype, rank and row count are checked here (the caller checks the values)."""
    from mmbench.models.model import describe_inputs

    info_split = _InputsView(inputs)
    task_info = {"task": spec.name, "target_type": spec.target.type, "modalities": list(inputs),
                 "inputs": describe_inputs(info_split), "max_embedding_dim": int(max_dim)}
    rows = {m: int(v["x"].shape[0]) for m, v in inputs.items()}
    return _execute(model_spec, task_info, device, config or SandboxConfig(), efficiency,
                    lambda path: _write_retrieval_inputs(path, inputs),
                    lambda path: _read_embeddings(path, rows, max_dim, model_spec.source), mode="retrieval")


class _InputsView:
    """Just enough of a Split for describe_inputs."""

    def __init__(self, inputs: dict[str, dict[str, Any]]) -> None:
        self.modalities = {m: v["x"] for m, v in inputs.items()}
        self.lengths = {m: v["lengths"] for m, v in inputs.items() if v.get("lengths") is not None}
        self.modality_names = sorted(inputs)


def _write_retrieval_inputs(path: Path, inputs: dict[str, dict[str, Any]]) -> None:
    import torch

    from mmbench.core.io import atomic_save_safetensors

    tensors: dict[str, torch.Tensor] = {}
    for m, v in inputs.items():
        tensors[f"x.{m}"] = v["x"]
        tensors[f"present.{m}"] = v["present"].to(torch.uint8)
        if v.get("lengths") is not None:
            tensors[f"len.{m}"] = v["lengths"]
    atomic_save_safetensors(path, tensors, {"modalities": json.dumps(list(inputs))})


def _execute(model_spec, task_info: dict[str, Any], device: str, config: SandboxConfig, efficiency: bool,
             write_inputs, read_outputs, mode: str = "predict") -> SandboxOutput:
    """Start the worker on a fresh temp dir, wait (timeout), turn failures into SubmissionError."""
    from mmbench.evaluation.sandbox import isolation

    iso = isolation.resolve(config.isolation)
    if iso.warning and config.isolation == "auto":
        import warnings

        warnings.warn(iso.warning, stacklevel=3)
    readable = _submission_paths(model_spec) if iso.used == isolation.BUBBLEWRAP else []
    workdir = Path(tempfile.mkdtemp(prefix="mmbench-sandbox-"))
    started = time.perf_counter()
    try:
        write_inputs(workdir / "inputs.safetensors")
        job = {
            "mode": mode,
            "kind": model_spec.kind,
            "source": str(Path(model_spec.source).resolve()),
            "attr": model_spec.attr,
            "weights": str(Path(model_spec.weights).resolve()) if model_spec.weights else None,
            "inputs": "inputs.safetensors",
            "output": "outputs.safetensors",
            "device": device,
            "batch_size": config.batch_size,
            "threads": config.threads,
            "efficiency": efficiency,
            "task_info": task_info,
            "memory_mb": config.memory_mb if not device.startswith("cuda") else None,
            "file_size_mb": config.file_size_mb,
        }
        (workdir / "job.json").write_text(json.dumps(job))
        env = clean_env(workdir, config.threads, device)
        argv = [sys.executable, "-s", "-m", "mmbench.evaluation.sandbox.worker", "job.json"]
        if iso.used == isolation.BUBBLEWRAP:
            argv = isolation.bwrap_command(argv, workdir, readable, device,
                                           hidden=isolation.hidden_inside(readable, config.denied))
        with open(workdir / "stdout.log", "wb") as out, open(workdir / "stderr.log", "wb") as err:
            proc = subprocess.Popen(
                argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, close_fds=True,
            )
            try:
                rc = proc.wait(timeout=config.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
                raise _failure(f"model timed out after {config.timeout_s:g} s and was stopped (--timeout)",
                               model_spec.source, workdir) from None
            except BaseException:
                _kill_group(proc)
                proc.wait()
                raise
            finally:
                _kill_group(proc)  # anything the submission left running in its process group
        seconds = time.perf_counter() - started
        if iso.used == isolation.BUBBLEWRAP and 128 < rc < 128 + 65:  # bwrap exits 128 + N for a child killed by signal N
            rc = 128 - rc
        stderr_tail = _tail(workdir / "stderr.log", ERROR_BYTES)
        if rc != 0:
            raise _failure(_failure_message(rc, stderr_tail, config), model_spec.source, workdir)
        try:
            outputs, eff = read_outputs(workdir / "outputs.safetensors")
        except SubmissionError as exc:
            exc.details = _model_output(workdir) or None
            raise
        return SandboxOutput(outputs, eff, seconds, _printable(stderr_tail[-1000:], 1000), iso.used)
    finally:
        if not config.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _submission_paths(model_spec) -> list[Path]:
    """What the isolated worker may read of the submission: a factory's folder (it may import its
    own modules), a .pt2 file, a weights file."""
    from mmbench.evaluation.sandbox.isolation import check_submission_folder

    paths = []
    if model_spec.source is not None:
        source = Path(model_spec.source).resolve()
        if model_spec.kind == "factory":
            check_submission_folder(source.parent)
            paths.append(source.parent)
        else:
            paths.append(source)
    if model_spec.weights is not None:
        paths.append(Path(model_spec.weights).resolve())
    return paths


OUTPUT_LINES = 60  # lines of the model's own stdout and stderr shown when it fails
ERROR_BYTES = 1 << 16


def _model_output(workdir: Path) -> str:
    """The end of what the model printed (stdout, then stderr without the worker's error line)."""
    parts = []
    for stream in ("stdout", "stderr"):
        lines = [ln for ln in _tail(workdir / f"{stream}.log", ERROR_BYTES).splitlines()
                 if not ln.startswith("mmbench-sandbox-error: ")]
        lines = [ln.rstrip() for ln in lines if ln.strip()]
        if lines:
            shown = lines[-OUTPUT_LINES:]
            head = f"model {stream}" + (f" (last {len(shown)} of its lines)" if len(shown) < len(lines) else "") + ":"
            parts.append("\n".join([head, *("  " + "".join(ch if ch.isprintable() else " " for ch in ln[:2000]) for ln in shown)]))
    return "\n".join(parts)


def _failure(message: str, source, workdir: Path) -> SubmissionError:
    exc = SubmissionError(message, source)
    exc.details = _model_output(workdir) or None
    return exc


def _failure_message(rc: int, stderr_tail: str, config: SandboxConfig) -> str:
    reported = _worker_error(stderr_tail)
    memory = f" (limit {config.memory_mb} MB, --memory-mb)" if config.memory_mb else ""
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (out of memory?)" if -rc == signal.SIGKILL else ""
        return f"model process was killed by {name}{hint}"
    memory_words = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "failed to map segment")
    if rc == 3 or (reported and any(w in reported for w in memory_words)):
        return f"model ran out of memory{memory} and was stopped: {_printable(reported or 'MemoryError', 20_000)}"
    if reported:
        return f"model failed: {_printable(reported, 20_000)}"
    last = [ln for ln in stderr_tail.splitlines() if ln.strip()]
    return f"model process exited with status {rc}: {_printable(last[-1] if last else 'no message', 20_000)}"


def _read_outputs(path: Path, conditions: list, n: int, spec, source,
                  order: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    from mmbench.core.errors import DataError
    from mmbench.core.io import load_safetensors
    from mmbench.models.model import num_outputs

    if not path.is_file():
        raise SubmissionError("model process exited without writing its outputs", source)
    k = num_outputs(spec.target.type, spec.target.num_classes)
    expected_bytes = len(conditions) * n * max(k, 1) * 8 + (1 << 20)
    if path.stat().st_size > 2 * expected_bytes:
        raise SubmissionError(f"model outputs file is {path.stat().st_size:,} bytes, far more than expected", source)
    try:
        tensors, meta = load_safetensors(path)
    except DataError as exc:
        raise SubmissionError(f"model outputs are unreadable (garbage output): {_printable(str(exc), 200)}", source) from None
    if set(tensors) != {"out"}:
        raise SubmissionError(f"model outputs hold unexpected entries ({_printable(', '.join(sorted(tensors))[:80])})", source)
    t = tensors["out"]
    if not t.is_floating_point():
        raise SubmissionError(f"model output has dtype {t.dtype}; expected floating point", source)
    arr = t.float().numpy()
    rows = len(conditions) * n
    if spec.target.type == "regression":
        ok, want = arr.shape in ((rows,), (rows, 1)), f"[{rows}] or [{rows}, 1]"
    else:
        ok, want = arr.shape == (rows, k), f"[{rows}, {k}]"
    if not ok:
        raise SubmissionError(f"model output has shape {list(arr.shape)} over the {len(conditions)} conditions x {n} "
                              f"items; expected {want}", source)
    # back from the mixed order to one array per condition, in item order
    unmixed = np.empty_like(arr)
    unmixed[order] = arr
    outputs = {}
    for i, cond in enumerate(conditions):
        part = unmixed[i * n:(i + 1) * n]
        if not np.isfinite(part).all():
            raise SubmissionError(f"model output under {cond.name!r} contains NaN or infinity", source)
        outputs[cond.name] = part
    eff = _sanitize_efficiency(meta.get("efficiency"))
    return outputs, eff


def _read_embeddings(path: Path, rows: dict[str, int], max_dim: int, source) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    from mmbench.core.errors import DataError
    from mmbench.core.io import load_safetensors

    if not path.is_file():
        raise SubmissionError("model process exited without writing its outputs", source)
    if path.stat().st_size > sum(rows.values()) * max_dim * 4 + (1 << 20):  # float32 at the largest allowed dimension
        raise SubmissionError(f"model outputs file is {path.stat().st_size:,} bytes, more than {len(rows)} sets of "
                              f"embeddings of dimension <= {max_dim:,} can hold (MMBENCH_MAX_EMBED_DIM)", source)
    try:
        tensors, meta = load_safetensors(path)
    except DataError as exc:
        raise SubmissionError(f"model outputs are unreadable (garbage output): {_printable(str(exc), 200)}", source) from None
    if set(tensors) != {f"emb.{m}" for m in rows}:
        raise SubmissionError(f"model outputs hold unexpected entries ({_printable(', '.join(sorted(tensors))[:80])})", source)
    outputs = {}
    for m, n in rows.items():
        t = tensors[f"emb.{m}"]
        if not t.is_floating_point():
            raise SubmissionError(f"model's {m} embeddings have dtype {t.dtype}; expected floating point", source)
        if t.dim() != 2 or t.shape[0] != n:
            raise SubmissionError(f"model's {m} embeddings have shape {list(t.shape)}; expected [{n}, D]", source)
        outputs[m] = t.float().numpy()
    return outputs, _sanitize_efficiency(meta.get("efficiency"))


def _sanitize_efficiency(raw: str | None) -> dict[str, Any] | None:
    """Keep only the known numeric fields of the worker's (self-reported) efficiency record."""
    if not raw or len(raw) > 10_000:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    out: dict[str, Any] = {}
    for key in EFFICIENCY_FIELDS:
        v = data.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
            out[key] = int(v) if key in ("params", "batch_size") else float(v)
    if isinstance(data.get("device"), str):
        out["device"] = _printable(data["device"], 40)
    if not out:
        return None
    out["measured_in"] = "sandbox worker (self-reported)"
    return out
