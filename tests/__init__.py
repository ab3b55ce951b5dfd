"""The test suite. Imported before its conftest and every test module, so that Python and pytest
write their bytecode caches even where PYTHONDONTWRITEBYTECODE is set (see tests/conftest.py)."""

import sys

sys.dont_write_bytecode = False
