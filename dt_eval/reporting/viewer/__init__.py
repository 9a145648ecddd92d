"""`dt-eval view`: a trace viewer for finished runs, as one self-contained HTML page.

load.py reads run directories (the one place that knows the run layout); rows.py turns sample
records into the page's rows; page.py writes the page (inline CSS/JS, no network); server.py
serves it on 127.0.0.1 with the runs' audio files.
"""

from dt_eval.reporting.viewer.load import ViewerError, ViewRun, load_runs_for_view
from dt_eval.reporting.viewer.page import build_page

__all__ = ["ViewRun", "ViewerError", "build_page", "load_runs_for_view"]
