"""Names of the component breakdown columns of a study's results (``area_<c>_mm2``, ``energy_<c>_uj``).

Defined by the cost model (``hwsim/cost_models/breakdown.py``); re-exported here for readers of results.
"""

from hwsim.cost_models.breakdown import AREA_COMPONENTS, ENERGY_COMPONENTS

__all__ = ["AREA_COMPONENTS", "ENERGY_COMPONENTS"]
