"""What every genofed party runs: genomic I/O, cohort simulation, tokenization, the model,
privacy accounting, fairness metrics and the signed round ledger.

This package never imports `client`, `server` or `deploy`: dependencies point inward.
"""
