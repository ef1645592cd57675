"""Step 3, the analysis: every run folder read back and the report dict (``analysis``), built from
pure parts: paired statistics and Holm (``stats``), no-learning floors (``floors``), calibration,
the comparison families (``comparisons``), the trend with length (``trend``), rankings and
sensitivity (``rankings``), the verdict sentences (``verdict``), and the final models on the
real photos (``real_photos``, cached by what changes the result).

Imports the plan; never the execution or the rendering."""
