"""Judge the model against a baseline: win/tie/loss, LC win rate, BT score with CI, MT-Bench grades.

Run as:
    python jobs/evaluate.py --config configs/demo.yaml [--run-dir DIR] [key=value ...]
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/demo.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from moaa_ray.cli import main  # noqa: E402
from moaa_ray.stages.layout import EVALUATE  # noqa: E402

if __name__ == "__main__":
    sys.exit(main([EVALUATE, *sys.argv[1:]]))
