"""Step 4, the rendering: ``report.md`` and ``report.json`` (``report``) and the figures
(``figures``), from the analysis' report dict. Imports the analysis and the plan."""
