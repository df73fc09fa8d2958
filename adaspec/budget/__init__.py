"""Hardware-aware draft budget: size each step's tree from measured cost and predicted acceptance.

A tree is worth verifying only while the tokens it is expected to add pay for the extra
forward-pass time it costs. Three parts:

* ``profile``: verify-step milliseconds as a function of tree size, measured once per
  backend (runtime, model, device, dtype, threads, build) and cached as JSON.
* ``calibration``: maps a drafter's node scores to the probability that the node is
  accepted, learned online from what the verifier accepted (per depth and score bin).
* ``chooser``: takes nodes in decreasing calibrated acceptance (DySpec's greedy expansion)
  and keeps the prefix that maximises expected tokens per millisecond, its expected tokens
  taken one standard deviation low (sceptical while the calibration is cold); when no prefix
  beats the root alone, the step is plain decoding. Explorations and looks for a match in
  a plain streak are priced by the cost curve and the drafter's measured time.
"""

from adaspec.budget.calibration import AcceptanceCalibrator, Reliability
from adaspec.budget.chooser import RequestSizer, TreeSizer, choose_nodes
from adaspec.budget.profile import (
    PROFILE_SIZES,
    LatencyProfile,
    default_profile_path,
    load_or_measure_profile,
    measure_profile,
)

__all__ = [
    "PROFILE_SIZES", "AcceptanceCalibrator", "LatencyProfile", "Reliability", "RequestSizer", "TreeSizer",
    "choose_nodes", "default_profile_path", "load_or_measure_profile", "measure_profile",
]
