"""caption subpackage."""
