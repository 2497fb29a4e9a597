"""The functional core: load → select → merge → image plan → identity. Values in, values
out: no Git, network, clock or subprocess (enforced by import-linter, see pyproject)."""
