"""The lab: everything the notebooks, ``make demo`` and the batch grid use (runs, settings, tables,
figures, widgets). Nothing outside ``cagelib.lab`` imports from it."""
