"""Zero-shot (Base): the base checkpoint answers with the persona description only
(``model_role: base`` in conf/condition/zero_shot_base.yaml)."""

from __future__ import annotations

from plural_icm.conditions.registry import register
from plural_icm.conditions.zero_shot import ZeroShot


@register
class ZeroShotBase(ZeroShot):
    name = "zero_shot_base"
