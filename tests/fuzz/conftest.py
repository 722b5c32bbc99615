"""The fuzz groups run in a subprocess each (tests/test_fuzz.py); this sets hypothesis up for
them: derandomized (the same examples on every run), no example database, no deadline."""
import os
import sys

from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

settings.register_profile("fuzz", derandomize=True, database=None, deadline=None,
                          print_blob=False, suppress_health_check=list(HealthCheck))
settings.load_profile("fuzz")
