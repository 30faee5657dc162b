"""`make bench`: genofed's benchmarks (`python -m deploy.bench`, see `deploy.bench.run`).

One module per section of `bench.json` (`utility`, `dp_cost`, `membership_attack`,
`privacy_audit`, `federation`, `data_path`) with its helpers (`evaluation_noise`,
`canary_audit`); `goals` holds every goal's threshold, `readme` renders the README's goals table
and `BENCH.md` from the JSON. Figures live in `bench.json`, `BENCH.md` and the lab notebook
`NOTEBOOK.md`, never in code.
"""
