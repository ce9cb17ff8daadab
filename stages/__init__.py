"""Crucible's built-in stages, registered through the ``crucible.stages`` entry points."""
