"""Broken on purpose: stack3d must report it (name, distribution, error) and load the rest."""

import stack3d_no_such_dependency  # noqa: F401
