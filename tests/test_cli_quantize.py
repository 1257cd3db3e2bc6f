"""``skmoe quantize``: writes a folder that ``--model`` then loads; user mistakes are one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from skmoe.cli import main
from skmoe.engine.int4 import int4_available

pytestmark = pytest.mark.skipif(not int4_available(), reason="this torch lacks the int4 CPU kernel")


def test_quantize_writes_a_folder_that_embed_loads(fast_moe, tmp_path, capsys):
    out = tmp_path / "q4"
    assert main(["quantize", str(fast_moe), "--dtype", "int4", "-o", str(out),
                 "--group-size", "64"]) == 0
    assert f"wrote int4 folder {out}" in capsys.readouterr().err
    q = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (q["precision"], q["group_size"]) == ("int4", 64)
    assert (out / "tokenizer.json").is_file()
    texts = tmp_path / "texts.txt"
    texts.write_text("one sentence\nanother sentence\n")
    vectors = tmp_path / "v.npy"
    assert main(["embed", str(texts), "-o", str(vectors), "--model", str(out), "--no-cache",
                 "-q"]) == 0
    assert np.load(vectors).shape[0] == 2
    capsys.readouterr()
    assert main(["info", str(out)]) == 0  # the folder says what it holds
    assert re.search(r"quantized weights +int4, group size 64", capsys.readouterr().out)
    assert main(["info", str(fast_moe)]) == 0
    assert "quantized" not in capsys.readouterr().out


def test_quantize_mistakes_are_one_line(fast_moe, tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "f").write_text("x")
    assert main(["quantize", str(fast_moe), "--dtype", "int8", "-o", str(tmp_path / "used")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skmoe: error: --output") and "not an empty folder" in err
    assert main(["quantize", str(fast_moe), "--dtype", "bf16", "-o", str(tmp_path / "x")]) == 2
    assert "invalid choice" in capsys.readouterr().err
    # a group wider than the model (64): was "internal error, a bug in skmoe", exit 1
    assert main(["quantize", str(fast_moe), "--dtype", "int4", "--group-size", "128", "-o",
                 str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "multiple of the group size 128" in err and "choose a --group-size" in err
    assert not (tmp_path / "g").exists()


def test_a_dtype_conflicting_with_the_folder_is_one_line(fast_moe, tmp_path, capsys):
    out = tmp_path / "q8"
    assert main(["quantize", str(fast_moe), "--dtype", "int8", "-o", str(out)]) == 0
    texts = tmp_path / "texts.txt"
    texts.write_text("one sentence\n")
    code = main(["embed", str(texts), "-o", str(tmp_path / "v.npy"), "--model", str(out),
                 "--dtype", "float32", "--no-cache", "-q"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "holds int8 weights" in err and "dtype='float32' conflicts" in err
    assert "internal error" not in err


def test_a_killed_quantize_leaves_no_output_and_the_rerun_succeeds(fast_moe, tmp_path, capsys):
    """SIGKILLed once model.safetensors was written (the OOM killer, a closed session), `skmoe
    quantize` left --output holding only that file: the rerun was refused ("not an empty
    folder") and --model OUTPUT failed on the prompt. Now OUTPUT appears only when complete."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "q4"
    script = (
        "import os, signal, sys\n"
        "import safetensors.torch as st\n"
        "real = st.save_file\n"
        "def save_then_die(*args, **kwargs):\n"
        "    real(*args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "st.save_file = save_then_die\n"
        "from skmoe.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, "quantize", str(fast_moe), "--dtype",
                             "int4", "-o", str(out)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = list(tmp_path.iterdir())
    assert not out.exists() and len(left) == 1 and left[0].name.startswith("q4.")
    assert left[0].name.endswith(".partial") and (left[0] / "model.safetensors").is_file()
    assert main(["quantize", str(fast_moe), "--dtype", "int4", "-o", str(out)]) == 0
    assert f"wrote int4 folder {out}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [out]  # the dead run's partial folder is gone
    assert main(["info", str(out)]) == 0 and "int4" in capsys.readouterr().out
