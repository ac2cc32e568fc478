"""The study report: Table 1 from stored runs, tables, figures, checklists, and the bundle.

``snapshot`` freezes what a report needs from the database, ``tables`` and ``figures`` are
pure functions of that snapshot, ``checklists`` maps STARD/CLAIM/TRIPOD+AI items onto the
sections, ``table1`` rebuilds Table 1 of Yi et al. (Sci Rep 2022), and ``bundle`` writes
the reproducible zip.

Import the modules themselves (``from core.report import tables``).
"""

__all__ = ["bundle", "checklists", "figures", "snapshot", "table1", "tables"]
