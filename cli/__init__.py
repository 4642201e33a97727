"""tuneplan.cli — the `tuneplan` command: the top layer, which nothing else imports.

- ``main``: the root parser (every subcommand, in `--help` order), dispatch and exit codes.
- one module per command group: ``advise`` (advise, validate), ``reference`` (schema, explain,
  rules, models, gpus), ``run`` (run, export, merge), ``experiments`` (compare, sweep), ``runs``
  (runs, runs ingest, sql), ``checks`` (check, calibrate, report), ``measure`` (measure), ``tui``.
- ``options`` (argument types and shared option sets) and ``output`` (error printing, the rich
  console, number and JSON formats, the exit-code guard): written once, used by every group.

Every module here imports only argparse and the standard library at load time; what a command
needs (the advisor, the executor, DuckDB, rich, Textual) loads when that command runs.
"""
