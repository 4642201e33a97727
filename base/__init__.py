"""tuneplan's base layer: what every other package may import, and which imports nothing above it.

- ``errors``: ``Problem`` / ``InputError`` (every problem at once, each naming its field or flag and
  a fix) and the process exit codes every command uses.
- ``fileio``: atomic text writes and the one guarded JSON file reader.
- ``planio``: plan.json's one reader and one writer, the plan hash and run ids.

Stdlib + pydantic (through ``tuneplan.schemas``) only; import-linter and tests/test_layering.py
hold it to that.
"""
