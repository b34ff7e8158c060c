"""Pick AV-MNIST's degradation from a calibration sweep (issue #19).

The sweep (``benchmarks/gpu_session.sh avmnist``) trains the unimodal rows of the task
``avmnist`` once per setting: ``unimodal:image`` for each ``image_pca_remove`` and
``unimodal:audio`` for each ``audio_snr_db``, several seeds each, into
``SWEEP/image_<components>/`` and ``SWEEP/audio_<dB>/`` (``reproduce`` run folders). This
reads their result.json files and prints, as a Markdown table, every run's clean test
accuracy, then picks per modality the setting whose mean over seeds is closest to
MultiBench's regime (image-only about 65%, audio-only about 43%; MFAS issue #17), among
the settings where every seed learnt (no seed below 20%, twice chance).

    python benchmarks/avmnist_calibration.py SWEEP            # the table, then "pick: PCA DB"
    python benchmarks/avmnist_calibration.py SWEEP --apply tasks/avmnist.yaml
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

TARGETS = {"image": 0.65, "audio": 0.43}
OPTION = {"image": "image_pca_remove", "audio": "audio_snr_db"}
CHANCE_MARGIN = 0.2  # twice chance: below it a seed did not learn


def sweep_results(sweep: Path) -> dict[str, dict[float, dict[int, float]]]:
    """{modality: {setting: {seed: clean test accuracy}}} from the sweep's run folders."""
    found: dict[str, dict[float, dict[int, float]]] = {"image": {}, "audio": {}}
    for folder in sorted(sweep.iterdir()):
        m = re.fullmatch(r"(image|audio)_(-?[0-9.]+)", folder.name)
        if not m or not folder.is_dir():
            continue
        modality, setting = m.group(1), float(m.group(2))
        for result_file in folder.glob(f"avmnist/unimodal-{modality}/seed*/result.json"):
            result = json.loads(result_file.read_text())
            found[modality].setdefault(setting, {})[int(result["seed"])] = float(result["metrics"]["clean"]["accuracy"])
    return found


def pick(found: dict[str, dict[float, dict[int, float]]]) -> dict[str, float]:
    """Per modality, the setting whose mean accuracy over its seeds is closest to the target."""
    chosen = {}
    for modality, settings in found.items():
        # a setting where a seed stayed near chance (10 classes) is not a difficulty, it is a coin toss
        learnt = {s: accs for s, accs in settings.items() if min(accs.values()) >= CHANCE_MARGIN}
        if not learnt:
            raise SystemExit(f"no {modality} setting of the sweep where every seed learnt (found: {sorted(settings)})")
        chosen[modality] = min(learnt, key=lambda s: abs(statistics.mean(learnt[s].values()) - TARGETS[modality]))
    return chosen


def table(found: dict[str, dict[float, dict[int, float]]], chosen: dict[str, float]) -> str:
    lines = ["| modality | setting | seeds | test accuracy per seed (%) | mean ± sd (%) |", "| --- | --- | --- | --- | --- |"]
    for modality, settings in found.items():
        for setting in sorted(settings, reverse=modality == "audio"):
            accs = [settings[setting][s] * 100 for s in sorted(settings[setting])]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            label = f"`{OPTION[modality]}` {setting:g}"
            if setting == chosen[modality]:
                label = f"**{label} (chosen)**"
            lines.append(f"| {modality} | {label} | {','.join(map(str, sorted(settings[setting])))} | "
                         f"{' / '.join(f'{a:.1f}' for a in accs)} | {statistics.mean(accs):.1f} ± {sd:.1f} |")
    return "\n".join(lines)


def apply(task_yaml: Path, chosen: dict[str, float]) -> None:
    """Write the chosen settings into the task's dataset options (in place, the rest untouched)."""
    text = task_yaml.read_text()
    for modality, option in OPTION.items():
        value = f"{int(chosen[modality])}" if modality == "image" else f"{chosen[modality]:g}"
        text, n = re.subn(rf"({option}: )[-0-9.]+", rf"\g<1>{value}", text)
        if n != 1:
            raise SystemExit(f"{task_yaml}: expected one '{option}:' in the dataset options, found {n}")
    task_yaml.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--apply", type=Path, help="task YAML to write the chosen settings into")
    args = parser.parse_args()
    found = sweep_results(args.sweep)
    chosen = pick(found)
    print(table(found, chosen))
    print(f"pick: {OPTION['image']}={int(chosen['image'])} {OPTION['audio']}={chosen['audio']:g}")
    if args.apply:
        apply(args.apply, chosen)


if __name__ == "__main__":
    main()
