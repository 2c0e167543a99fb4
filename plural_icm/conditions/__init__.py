"""The few-shot conditions: which examples, with which labels, the in-context model sees.

One module per condition (``<name>.py``, registered under its name with
:func:`plural_icm.conditions.registry.register`) and one YAML per condition under
``conf/condition/``. The pipeline asks a condition through :class:`~.base.Condition` only and
never names one. ``labels.py`` holds the labelling functions the conditions share.
"""
