"""What every layer shares about where and how it runs, each concept defined once:

- ``device.py``: the device choice and the autocast policy (``select_device``, ``amp_policy``,
  ``configure_backends``);
- ``checkpoint.py``: the checkpoint schema (training state, format version, restore), atomic file
  writes (``write_json``, ``save_checkpoint``) and ``load_checkpoint`` (``weights_only=True``);
- ``perf.py``: the CPU allocator tuning of the command-line tools.

May import: ``configs``, torch, numpy. Nothing else of ``hrnet``.
"""
