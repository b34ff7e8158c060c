"""The child side of mmbench.sandbox: `python -m mmbench.sandbox_worker job.json`.

Runs in its own temporary working directory with a scrubbed environment. It sets its
resource limits first (before torch or the submission is imported), builds the submitted
model (a factory from a .py file, or a torch.export .pt2 program), runs it over the test
inputs under each condition and writes the raw outputs to a safetensors file. Errors go to
stderr as one line starting with ``mmbench-sandbox-error:``; exit status 2 = error,
3 = out of memory.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

PREFIX = "mmbench-sandbox-error: "


class _Failure(Exception):
    pass


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


def _one_line(text: Any, limit: int = 400) -> str:
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
    spec = importlib.util.spec_from_file_location("mmbench_submission", source)
    if spec is None or spec.loader is None:
        raise _Failure(f"cannot import factory file {source}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mmbench_submission"] = module
    try:
        spec.loader.exec_module(module)
    except MemoryError:
        raise
    except BaseException as exc:
        raise _Failure(f"importing the factory file raised {type(exc).__name__}: {exc}") from None
    fn = getattr(module, job["attr"], None)
    if fn is None or not callable(fn):
        raise _Failure(f"factory file has no function {job['attr']!r}")
    try:
        model = fn(job["task_info"]) if _accepts_argument(fn) else fn()
    except MemoryError:
        raise
    except BaseException as exc:
        raise _Failure(f"factory {job['attr']}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise _Failure(f"factory {job['attr']}() returned {type(model).__name__}, not a torch.nn.Module")
    if job.get("weights"):
        from mmbench.io import load_safetensors

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


def _build_exported(job: dict[str, Any]):
    import torch
    from torch import nn

    # torch.export.load falls back to torch.load(weights_only=False) for some payloads; force
    # the restricted unpickler (the parent already refused archives with pickled payloads).
    original_load = torch.load

    def restricted_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _Failure("the program holds pickled custom objects; refused")

    torch.load = restricted_load
    torch._C._pickle_load_obj = refuse  # type: ignore[attr-defined]
    try:
        ep = torch.export.load(job["source"])
    except _Failure:
        raise
    except Exception as exc:
        raise _Failure(f"cannot load the exported program: {type(exc).__name__}: {exc}") from None
    finally:
        torch.load = original_load
    gm = ep.module()

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            object.__setattr__(self, "gm", gm)  # not a registered child: .eval() must not reach it

        def parameters(self, recurse: bool = True):  # type: ignore[override]
            return gm.parameters()

        def forward(self, *args: Any) -> Any:
            return gm(*args)

    return Wrapper()


def _run(job: dict[str, Any]) -> None:
    import torch

    from mmbench.data import Split
    from mmbench.io import atomic_save_safetensors, load_safetensors

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
    if job["kind"] == "factory":
        model = model.to(device)
    data = split.to(device)
    batch_size = int(job.get("batch_size") or 256)
    outputs: dict[str, torch.Tensor] = {}
    for i, cond in enumerate(conditions):
        view = data.with_present({m: tensors[f"keep.{i}.{m}"].bool() for m in modalities})
        chunks = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                b = view.batch(torch.arange(start, min(start + batch_size, n), device=device))
                try:
                    out = model(b.modalities, b.present, b.lengths)
                except MemoryError:
                    raise
                except Exception as exc:
                    raise _Failure(f"model forward failed under condition {cond!r}: {type(exc).__name__}: {exc}") from None
                if not isinstance(out, torch.Tensor):
                    raise _Failure(f"model returned {type(out).__name__} under condition {cond!r}, expected a Tensor")
                chunks.append(out.detach().float().cpu())
        try:
            outputs[f"out.{i}"] = torch.cat(chunks) if chunks else torch.empty(0)
        except RuntimeError as exc:
            raise _Failure(f"model outputs of different batches do not stack: {exc}") from None
    extra = {}
    if job.get("efficiency"):
        try:
            from mmbench.evaluate import measure_efficiency

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
        _run(job)
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
