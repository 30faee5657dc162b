"""The coordinator: Flower ServerApp, aggregation strategy, checkpoints, results.

Imports only `shared`.
"""
