"""Random-weight nomic MoE checkpoints in the real on-disk layout, for tests.

A module of its own (not conftest) so that test files can import it by a unique name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TINY = Path(__file__).resolve().parent / "data" / "nomic-moe-tiny"


def make_random_moe(
    folder: Path, *, tokenizer: Path | None = None, seed: int = 0, **overrides
) -> Path:
    """Write a random-weight nomic MoE checkpoint (real layout) with the given config overrides."""
    from safetensors.torch import save_file

    from skmoe.encoder.config import NomicMoEConfig
    from skmoe.encoder.nomic_moe import NomicMoEModel, init_random_weights

    raw = json.loads((TINY / "config.json").read_text())
    raw.update(overrides)
    cfg = NomicMoEConfig.from_dict(raw)
    model = init_random_weights(NomicMoEModel(cfg), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(raw, indent=1))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    for side in ("config_sentence_transformers.json", "sentence_bert_config.json", "modules.json"):
        shutil.copy(TINY / side, folder / side)
    shutil.copytree(TINY / "1_Pooling", folder / "1_Pooling", dirs_exist_ok=True)
    if tokenizer is not None:
        for f in tokenizer.iterdir():
            shutil.copy(f, folder / f.name)
    return folder
