"""Benchmarks, each a script: ``python bench/<name>.py`` (the README quotes their figures).

A package so that a test can share a benchmark's input (`widget_updates.answer_pieces`)
with a plain import; pytest puts the repository root on the path (`pythonpath` in
pyproject.toml).
"""
