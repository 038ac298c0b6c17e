"""Settings of every test: no test asserts on wall time, hypothesis' per-example
deadline included (the box is shared; a slow example is noise, not a failure)."""

from hypothesis import settings

settings.register_profile("paystream", deadline=None)
settings.load_profile("paystream")
