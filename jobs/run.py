"""The whole MoAA pipeline: MoA SFT data -> SFT -> rounds of sample/judge/DPO -> evaluation.

Run as:
    python jobs/run.py --config configs/demo.yaml [--run-dir DIR] [key=value ...]
    ray job submit --working-dir . -- python jobs/run.py --config configs/paper-llama31-8b.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from moaa_ray.cli import RUN, main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main([RUN, *sys.argv[1:]]))
