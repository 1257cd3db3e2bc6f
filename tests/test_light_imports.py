"""Importing the evaluation reports and the plots loads no torch: they need numpy, pandas,
scikit-learn and matplotlib only (routing_stats imports the encoder when it runs)."""

from __future__ import annotations

import subprocess
import sys


def test_evaluation_and_plotting_import_without_torch():
    code = ("import sys, skmoe.evaluation, skmoe.plotting; "
            "from skmoe.evaluation import RoutingStats, routing_stats; "
            "heavy = [m for m in ('torch', 'safetensors', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
