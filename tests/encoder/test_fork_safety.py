"""Fork safety (issue 19, item 5): a fork pool works after the parent ran the model.

Without the fork guard the children wait forever at a libgomp barrier, so each scenario runs in
a subprocess with a timeout: a deadlock fails the test instead of hanging the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

FORK_POOL = textwrap.dedent("""
    import multiprocessing as mp, sys
    import numpy as np
    import torch
    torch.set_num_threads(2)  # the parent's OpenMP pool exists once it has run the model
    import skmoe.encoder.loading as loading
    assert not loading._FORK_GUARD, "registered at import"
    from skmoe import MoEEmbeddingTransformer
    est = MoEEmbeddingTransformer(sys.argv[1], device="cpu").fit([])
    texts = [f"sentence number {i} about something" for i in range(64)]
    parent = est.transform(texts)
    assert loading._FORK_GUARD

    def work(chunk):
        return est.transform(chunk), torch.get_num_threads()

    with mp.get_context("fork").Pool(2) as pool:
        parts = pool.map(work, [texts[:32], texts[32:]])
    got = np.vstack([p[0] for p in parts])
    assert np.abs(got - parent).max() < 1e-5
    assert [p[1] for p in parts] == [1, 1] and torch.get_num_threads() == 2
    print("ok")
""")


def test_fork_pool_after_the_parent_ran_the_model(fast_moe, tmp_path):
    script = tmp_path / "fork_pool.py"
    script.write_text(FORK_POOL)
    try:
        run = subprocess.run([sys.executable, str(script), str(fast_moe)], capture_output=True,
                             text=True, timeout=120, cwd=Path(__file__).parents[2])
    except subprocess.TimeoutExpired:
        raise AssertionError("the fork pool deadlocked (no result within 120 s)") from None
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")
