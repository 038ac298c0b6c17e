"""The stateful hop of `paystream bench`'s peers, one script per runtime.

The Faust and quixstreams scripts run in venvs of their own (their pins clash with
ours: quixstreams 3.28 wants confluent-kafka < 2.13), with the venv's python, as
plain scripts: nothing of paystream is importable there, and nothing here imports
them. streams/harness/bench_peers.py makes the venvs, fills the topics and times the runs.
"""
