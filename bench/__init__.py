"""KeyVault benchmarks: ``.venv/bin/python -m bench [--quick] [--out FILE]``.

Each benchmark is one module (:mod:`bench.read_tls`, :mod:`bench.writes`, :mod:`bench.kdf`,
:mod:`bench.rss`); :mod:`bench.harness` holds the shared process, ab and table machinery. Every
figure is measured on this machine in the same run as its baseline, and printed next to its
target as met / missed. Nothing here is a pass/fail test. See docs/performance.md.
"""
