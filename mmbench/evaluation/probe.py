"""A quick check of a submitted model (`mmbench evaluate --limit N`): its raw outputs on the
first N items of a split under every condition of the task, run exactly as a full evaluation
runs it (the same worker, isolation and checks), scored by nothing and written nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Probe:
    outputs: dict[str, np.ndarray]  # condition (retrieval: modality) -> raw outputs
    items: int
    isolation: str


def probe_model(spec: Any, model_spec: str, weights: Any, n: int, device: str = "cpu", data_dir: Any = None,
                conditions: Any = None, sandbox_config: Any = None, limits: Any = None,
                split_role: str = "test") -> Probe:
    """Raw outputs of the model on the first `n` items of the split playing `split_role`, under
    each condition; for a retrieval task the embeddings of the first `n` images and captions."""
    import torch

    from mmbench.core.errors import MMBenchError
    from mmbench.data.splits import load_task_split, task_dataset
    from mmbench.evaluation.evaluator import predict, retrieval_inputs
    from mmbench.evaluation.retrieval_scoring import retrieval_gallery
    from mmbench.evaluation.sandbox.runner import SandboxConfig, run_model, run_retrieval_model
    from mmbench.evaluation.scoring import select_conditions
    from mmbench.evaluation.submissions.checks import Limits
    from mmbench.evaluation.submissions.models import parse_model_spec
    from mmbench.models.checkpoint import load_model, resolve_device

    if n <= 0:
        raise MMBenchError("--limit must be a positive number of items")
    limits = limits or Limits.from_env()
    cfg = sandbox_config or SandboxConfig()
    ms = parse_model_spec(model_spec, weights, limits)
    dev = resolve_device(device)
    dataset = task_dataset(spec, data_dir)
    split = load_task_split(spec, split_role, data_dir, dataset)
    if spec.target.type == "retrieval":
        if ms.kind == "baseline":
            model, _ = load_model(ms.weights, dev)
            first = split.subset(range(min(n, len(split))))
            with torch.no_grad():
                outputs = {"image": model.encode_image(first.modalities["image"].to(dev), first.present["image"].to(dev)),
                           "text": model.encode_text(first.modalities["text"].to(dev), first.present["text"].to(dev))}
            return Probe({m: v.float().cpu().numpy() for m, v in outputs.items()}, len(first), "none (mmbench's own model)")
        image_ids, _, cap_index, _ = retrieval_gallery(spec, data_dir, dataset)
        inputs = retrieval_inputs(split, cap_index, len(image_ids))
        head = {m: {k: (v[:n] if v is not None else None) for k, v in part.items()} for m, part in inputs.items()}
        out = run_retrieval_model(ms, spec, head, str(dev), cfg, max_dim=limits.max_embedding_dim, efficiency=False)
        return Probe(out.outputs, min(n, len(split)), out.isolation)
    from mmbench.data.splits import TRAINING_MEANS, with_training_means
    from mmbench.evaluation.mixing import mix_conditions

    first = with_training_means(spec, split, data_dir, dataset).subset(range(min(n, len(split))))
    conds = select_conditions(spec, conditions)
    if ms.kind == "baseline":  # the rows of every condition mixed, as the evaluation runs them
        model, _ = load_model(ms.weights, dev)
        mixed = mix_conditions(first, conds, spec.missing.seed, first.info.get(TRAINING_MEANS))
        outputs = mixed.unmix(predict(model, mixed, dev).numpy())
        return Probe(outputs, len(first), "none (mmbench's own model)")
    out = run_model(ms, spec, first, conds, str(dev), cfg, efficiency=False)
    return Probe(out.outputs, len(first), out.isolation)


def describe_outputs(probe: Probe, values: int = 3) -> list[str]:
    """One line per condition: the outputs' shape and dtype, and the first rows' values."""
    lines = []
    for cond, arr in probe.outputs.items():
        rows = np.asarray(arr)[:values]
        shown = np.array2string(rows, precision=4, suppress_small=True, max_line_width=10_000, threshold=60,
                                edgeitems=3).replace("\n", "")
        lines.append(f"  {cond}: shape {list(np.shape(arr))} {np.asarray(arr).dtype}  first {len(rows)}: {shown}")
    return lines
