"""Step 1 of a study, the plan: the study file (``spec``), the planned runs' configs and the scale
beside the user's setting (``scale``), and each planned run's folder read back (``runs``).

Imports nothing else of the study."""
