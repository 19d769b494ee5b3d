"""test_long_kill9.py: reliability scenario 8 with 1,000 kills (make
test-long); the same run as test_rel_kill9.py, ground truth compared every
100 kills and at the end."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_rel_kill9  # noqa: E402  (puts tests/integration on sys.path)
import harness  # noqa: E402


def test_8_kill9_1000():
    test_rel_kill9.run_kills(1000, 100, seed=1000)


if __name__ == "__main__":
    harness.main([test_8_kill9_1000])
