"""network subpackage."""
