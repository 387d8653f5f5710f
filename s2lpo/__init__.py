"""s2lpo: Small-to-Large Policy Optimization (S2L-PO) for GRPO training of LLMs."""

__version__ = "0.1.0"

import os as _os

# offline by construction: nothing is fetched from a hub, and no progress bars from transformers
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
_os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
