"""The child side of mmbench.evaluation.sandbox.runner: `python -m mmbench.evaluation.sandbox.worker job.json`.

Runs in its own temporary working directory with a scrubbed environment. It sets its
resource limits first (before torch or the submission is imported), builds the submitted
model (a factory from a .py file, or a torch.export .pt2 program), runs it over the test
inputs under each condition and writes the raw outputs to a safetensors file. For a
retrieval task (job mode ``retrieval``) it calls the model's ``encode_<modality>`` encoders
(methods of a factory's model, or programs of that name in a .pt2) on each modality's rows
and writes the embeddings. Errors go to stderr as one line starting with
``mmbench-sandbox-error:``; exit status 2 = error, 3 = out of memory.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from typing import Any

PREFIX = "mmbench-sandbox-error: "


class _Failure(Exception):
    pass


_SUBMISSION = {"folder": None}  # the factory's folder: frames there are the submission's own


def _own_frame(exc: BaseException) -> str:
    """' (at file.py, line N, in fn)' for the innermost frame of the submission's own files."""
    import os

    folder = _SUBMISSION["folder"]
    if not folder:
        return ""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.realpath(frame.filename).startswith(folder + os.sep):
            where = f" (at {frame.filename}, line {frame.lineno}, in {frame.name})"
    return where


def _guarded(what: str, fn: Any, *args: Any) -> Any:
    """Call submitted code; anything it raises becomes one `_Failure` line starting with `what`
    and naming the submission's own file and line, its traceback goes to stderr (MemoryError
    passes through: `main` reports it with its own exit code)."""
    try:
        return fn(*args)
    except MemoryError:
        raise
    except BaseException as exc:  # noqa: BLE001 - the submission may raise anything, SystemExit included
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next, file=sys.stderr)  # from the submission's call
        raise _Failure(f"{what} {type(exc).__name__}: {exc}{_own_frame(exc)}") from None


def _set_limits(job: dict[str, Any]) -> None:
    import resource

    def cap(which: int, value: int) -> None:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    if job.get("memory_mb"):
        cap(resource.RLIMIT_AS, int(job["memory_mb"]) << 20)
    if job.get("file_size_mb"):
        cap(resource.RLIMIT_FSIZE, int(job["file_size_mb"]) << 20)
    cap(resource.RLIMIT_CORE, 0)


def _one_line(text: Any, limit: int = 20_000) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _accepts_argument(fn: Any) -> bool:
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def _build_factory(job: dict[str, Any]):
    import importlib.util
    import os

    import torch
    from torch import nn

    source = job["source"]
    sys.path.insert(0, os.path.dirname(source))
    _SUBMISSION["folder"] = os.path.realpath(os.path.dirname(source))
    spec = importlib.util.spec_from_file_location("mmbench_submission", source)
    if spec is None or spec.loader is None:
        raise _Failure(f"cannot import factory file {source}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mmbench_submission"] = module
    _guarded("importing the factory file raised", spec.loader.exec_module, module)
    fn = getattr(module, job["attr"], None)
    if fn is None or not callable(fn):
        raise _Failure(f"factory file has no function {job['attr']!r}")
    model = _guarded(f"factory {job['attr']}() raised", fn, *([job["task_info"]] if _accepts_argument(fn) else []))
    if not isinstance(model, nn.Module):
        raise _Failure(f"factory {job['attr']}() returned {type(model).__name__}, not a torch.nn.Module")
    if job.get("weights"):
        from mmbench.core.io import load_safetensors

        tensors, _ = load_safetensors(job["weights"])
        try:
            missing, unexpected = model.load_state_dict(tensors, strict=False)
        except RuntimeError as exc:
            raise _Failure(f"weights do not fit the model: {exc}") from None
        if missing or unexpected:
            raise _Failure(f"weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    del torch
    return model


@contextlib.contextmanager
def _restricted_unpickling():
    """torch.export loading falls back to torch.load(weights_only=False) for some payloads; force
    the restricted unpickler (the parent already refused archives with pickled payloads)."""
    import torch

    original_load = torch.load

    def restricted_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _Failure("the program holds pickled custom objects; refused")

    torch.load = restricted_load
    torch._C._pickle_load_obj = refuse  # type: ignore[attr-defined]
    try:
        yield
    except _Failure:
        raise
    except Exception as exc:
        raise _Failure(f"cannot load the exported program: {type(exc).__name__}: {exc}") from None
    finally:
        torch.load = original_load


def _build_exported(job: dict[str, Any]):
    import torch
    from torch import nn

    with _restricted_unpickling():
        ep = torch.export.load(job["source"])
    gm = ep.module()

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            object.__setattr__(self, "gm", gm)  # not a registered child: .eval() must not reach it

        def parameters(self, recurse: bool = True):  # type: ignore[override]
            return gm.parameters()

        def forward(self, *args: Any) -> Any:
            return gm(*args)

    wrapper = Wrapper()
    object.__setattr__(wrapper, "call_target", gm.forward)  # the signature to check: the program's own
    return wrapper


def _check_call(fn: Any, task_info: dict[str, Any]) -> None:
    """Before any data: the model must take the three arguments mmbench passes (one line if not)."""
    import inspect

    from mmbench.evaluation.submissions.contract import expected_call

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in params if p.default is p.empty and p.kind != p.VAR_KEYWORD]
    if len(positional) < 3 or len(required) > 3:
        taken = ", ".join(p.name for p in params)
        raise _Failure(f"the model must take the call {expected_call(task_info)}; its forward takes ({taken})")


# --------------------------------------------------------------------------------------------
# retrieval: one encoder per modality
# --------------------------------------------------------------------------------------------

EXTRA_ARGUMENTS = ("present", "lengths")


def _build_encoders(job: dict[str, Any], modalities: list[str]) -> tuple[dict[str, Any], int]:
    """({modality: callable encoder}, parameter count). A factory's model provides methods
    ``encode_<modality>``; a .pt2 archive one program per modality, named the same."""
    import torch

    device = torch.device(job.get("device") or "cpu")
    if job["kind"] == "factory":
        model = _build_factory(job).to(device)
        encoders = {}
        for m in modalities:
            fn = getattr(model, f"encode_{m}", None)
            if fn is None or not callable(fn):
                raise _Failure(f"the model has no method encode_{m}(); a retrieval model needs "
                               + " and ".join(f"encode_{k}(...)" for k in modalities))
            encoders[m] = fn
        return encoders, int(sum(p.numel() for p in model.parameters()))
    from torch.export.pt2_archive._package import load_pt2

    with _restricted_unpickling():
        programs = load_pt2(job["source"]).exported_programs
    missing = [f"encode_{m}" for m in modalities if f"encode_{m}" not in programs]
    if missing:
        raise _Failure(f"the archive holds no program named {missing[0]!r} (it has {', '.join(sorted(programs)) or 'none'})")
    encoders = {m: programs[f"encode_{m}"].module() for m in modalities}
    params: dict[str, int] = {}
    for gm in encoders.values():  # both programs usually carry the whole model: count each name once
        params.update({name: p.numel() for name, p in gm.named_parameters()})
    return encoders, int(sum(params.values()))


def _call_plan(fn: Any, modality: str, has_lengths: bool) -> list[str]:
    """What follows the input tensor in a call of `fn`: its parameters after the first, which
    must be named present or lengths (passed positionally, in the encoder's order)."""
    import inspect

    from torch import nn

    name = f"encode_{modality}"
    try:  # a module's own signature is __call__(*args, **kwargs): look at its forward
        params = list(inspect.signature(fn.forward if isinstance(fn, nn.Module) else fn).parameters.values())
    except (TypeError, ValueError):
        return []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional and not any(p.kind == p.VAR_POSITIONAL for p in params):
        raise _Failure(f"{name}() takes no input argument")
    extras = []
    for p in positional[1:]:
        if p.name not in EXTRA_ARGUMENTS:
            if p.default is p.empty:
                raise _Failure(f"{name}() has a parameter {p.name!r}; after the input, an encoder may only take "
                               "'present' (bool [B]) and 'lengths' (int64 [B], sequence modalities)")
            break
        if p.name == "lengths" and not has_lengths:
            raise _Failure(f"{name}() takes 'lengths' but modality {modality!r} is not a sequence (it has no lengths)")
        extras.append(p.name)
    return extras


def _measure(fn: Any, args: list[Any], device: Any, repeats: int = 5) -> tuple[float, float]:
    """(FLOPs per row, median latency in ms) of one call on a batch."""
    import time

    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:  # the counter's module tracker needs autograd on
        fn(*args)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn(*args)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    return counter.get_total_flops() / len(args[0]), float(np.median(times[1:]) * 1000)


def _run_retrieval(job: dict[str, Any]) -> None:
    import torch

    from mmbench.core.io import atomic_save_safetensors, load_safetensors

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    tensors, meta = load_safetensors(job["inputs"])
    modalities = json.loads(meta["modalities"])
    device = torch.device(job.get("device") or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _Failure("CUDA is not available in the worker")
    encoders, params = _build_encoders(job, modalities)
    batch_size = int(job.get("batch_size") or 256)
    outputs: dict[str, torch.Tensor] = {}
    plans = {}
    for m in modalities:
        fn, name = encoders[m], f"encode_{m}"
        plans[m] = _call_plan(fn, m, f"len.{m}" in tensors)
        columns = {"x": tensors[f"x.{m}"], "present": tensors[f"present.{m}"].bool(), "lengths": tensors.get(f"len.{m}")}
        n, dim, chunks = columns["x"].shape[0], None, []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                args = [columns[k][start:start + batch_size].to(device) for k in ["x", *plans[m]]]
                out = _guarded(f"{name}() failed:", fn, *args)
                if not isinstance(out, torch.Tensor):
                    raise _Failure(f"{name}() returned {type(out).__name__}, expected a Tensor [B, D]")
                b = len(args[0])
                if out.dim() != 2 or out.shape[0] != b or (dim is not None and out.shape[1] != dim):
                    want = f"[{b}, {dim if dim is not None else 'D'}]"
                    raise _Failure(f"{name}() returned shape {list(out.shape)} for a batch of {b}; expected {want}")
                if not out.is_floating_point():
                    raise _Failure(f"{name}() returned dtype {out.dtype}; expected floating point embeddings")
                dim = out.shape[1]
                chunks.append(out.detach().float().cpu())
        outputs[f"emb.{m}"] = torch.cat(chunks) if chunks else torch.empty(0, 0)
    extra = {}
    if job.get("efficiency"):
        try:
            eff: dict[str, Any] = {"params": params, "device": str(device)}
            b = min(64, *(tensors[f"x.{m}"].shape[0] for m in modalities))
            for m in modalities:
                cols = {"x": tensors[f"x.{m}"], "present": tensors[f"present.{m}"].bool(), "lengths": tensors.get(f"len.{m}")}
                flops, ms = _measure(encoders[m], [cols[k][:b].to(device) for k in ["x", *plans[m]]], device)
                eff[f"flops_per_{m}"], eff[f"latency_ms_per_{m}_batch"] = flops, ms
            # one sample = one row of each modality (an image and a caption)
            eff["flops_per_sample"] = sum(eff[f"flops_per_{m}"] for m in modalities)
            eff["latency_ms_per_batch"] = sum(eff[f"latency_ms_per_{m}_batch"] for m in modalities)
            eff["batch_size"] = b
            extra["efficiency"] = json.dumps(eff)
        except MemoryError:
            raise
        except Exception as exc:  # efficiency is informative: report, do not fail the evaluation
            print(f"efficiency measurement failed: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
    atomic_save_safetensors(job["output"], outputs, extra)


def _run(job: dict[str, Any]) -> None:
    import torch

    from mmbench.data.samples import Split
    from mmbench.core.io import atomic_save_safetensors, load_safetensors

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    tensors, meta = load_safetensors(job["inputs"])
    conditions = json.loads(meta["conditions"])
    modalities = json.loads(meta["modalities"])
    n = int(meta["n"])
    split = Split(
        "test", [str(i) for i in range(n)],
        {m: tensors[f"x.{m}"] for m in modalities},
        {m: tensors[f"present.{m}"].bool() for m in modalities},
        torch.zeros(n, dtype=torch.long),
        {m: tensors[f"len.{m}"] for m in modalities if f"len.{m}" in tensors},
    )
    device = torch.device(job.get("device") or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _Failure("CUDA is not available in the worker")
    model = _build_factory(job) if job["kind"] == "factory" else _build_exported(job)
    _check_call(getattr(model, "call_target", model.forward), job["task_info"])
    if job["kind"] == "factory":
        model = model.to(device)
    from mmbench.evaluation.mixing import MixedConditions, takes_steps

    segments = {m: {"axis": int(axis), **{k: tensors[f"seg.{m}.{k}"] for k in ("start", "length", "fill")}}
                for m, axis in json.loads(meta.get("segments") or "{}").items()}
    mixed = MixedConditions(split, conditions, {m: tensors[f"keep.{m}"].bool() for m in modalities}, tensors["order"],
                            segments).to(device)
    with_steps = bool(segments) and takes_steps(model)
    batch_size = int(job.get("batch_size") or 256)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(mixed), batch_size):
            index = torch.arange(start, min(start + batch_size, len(mixed)), device=device)
            b = mixed.batch(index)
            names = sorted({conditions[int(c)] for c in (mixed.order[index] // max(n, 1)).tolist()})
            what = f"model forward failed on a batch of condition(s) {', '.join(map(repr, names[:3]))}" + \
                ("..." if len(names) > 3 else "") + ":"
            call = (lambda *a, steps=b.steps: model(*a, steps=steps)) if with_steps else model
            out = _guarded(what, call, b.modalities, b.present, b.lengths)
            if not isinstance(out, torch.Tensor):
                raise _Failure(f"model returned {type(out).__name__}, expected a Tensor")
            chunks.append(out.detach().float().cpu())
    try:
        outputs = {"out": torch.cat(chunks) if chunks else torch.empty(0)}
    except RuntimeError as exc:
        raise _Failure(f"model outputs of different batches do not stack: {exc}") from None
    extra = {}
    if job.get("efficiency"):
        try:
            from mmbench.evaluation.evaluator import measure_efficiency

            extra["efficiency"] = json.dumps(measure_efficiency(model, split, device, batch_size=min(64, n)))
        except MemoryError:
            raise
        except Exception as exc:  # efficiency is informative: report, do not fail the evaluation
            print(f"efficiency measurement failed: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
    atomic_save_safetensors(job["output"], outputs, extra)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with open(argv[0], encoding="utf-8") as fh:
            job = json.load(fh)
        _set_limits(job)
        (_run_retrieval if job.get("mode") == "retrieval" else _run)(job)
    except MemoryError as exc:
        print(PREFIX + _one_line(f"MemoryError: {exc}"), file=sys.stderr, flush=True)
        return 3
    except _Failure as exc:
        print(PREFIX + _one_line(exc), file=sys.stderr, flush=True)
        return 2
    except BaseException as exc:  # noqa: BLE001 - the submission may raise anything, SystemExit included
        traceback.print_exc(file=sys.stderr)
        msg = f"{type(exc).__name__}: {exc}"
        print(PREFIX + _one_line(msg), file=sys.stderr, flush=True)
        return 3 if "can't allocate memory" in msg else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
