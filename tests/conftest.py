"""Settings for the whole test session."""

from __future__ import annotations

import sys

# CPython 3.11 before 3.11.8 (gh-106905): when building an AST runs out of recursion depth, the
# interpreter-wide depth counter is left off, and every later ast.parse in the process fails with
# "SystemError: AST constructor recursion depth mismatch". Under xdist, hypothesis reads lambda
# sources (ast.parse of whole modules) deep in the stack while collecting the API fuzz test, which
# can hit that limit. A higher limit keeps those parses from failing in the first place.
if sys.version_info < (3, 11, 8):
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
