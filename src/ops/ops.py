"""The seed's entry point: `streamlit run src/ops/ops.py` from the repository root.

Works even when jobq is not installed: it puts `<repo>/src` first on sys.path, then draws the
app from `jobq.web.ops` (Streamlit reruns this file on every interaction, so the page is a
function call, not an import side effect).
"""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1])
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from jobq.web.ops import main  # noqa: E402 - needs the sys.path entry above

main()
