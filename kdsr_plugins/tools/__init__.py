"""Command-line tools of kdsr_plugins (run as ``python -m kdsr_plugins.tools.<tool> ...``)."""
