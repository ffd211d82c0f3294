"""Training start-up does not import the libraries needed only for figures, metrics or pretrained
encoders (common/startup_benchmark.py measures what that saves)."""
import subprocess
import sys

from common.startup_benchmark import PROJECTS

HEAVY = ("matplotlib", "torchvision", "sklearn", "sed_eval", "pycocoevalcap", "whisper", "speechbrain",
         "encodec", "lhotse")


def test_train_modules_import_no_heavy_library():
    code = "; ".join([f"import {project}.train" for project in PROJECTS]
                     + [f"import sys; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"])
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert loaded.split() == []
