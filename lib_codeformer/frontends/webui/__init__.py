"""What the WebUI extension does, testable without a WebUI (``scripts/codeformer_postprocess.py`` is the host glue)."""
