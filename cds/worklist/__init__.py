"""The coordinators' worklist (``/worklist``): candidates of the latest population run per trial,
patients referred from the point-of-care card, a status per patient x trial with an append-only
audit trail, CSV export and an attrition chart. See ``cds/worklist/README.md``."""
