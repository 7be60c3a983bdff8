"""Integer codes shared by the compiler, the kernel, the reference and the tables: action, exit,
distribution and guard opcodes, and event kinds. Plain Python, so importing them needs no numba."""

from __future__ import annotations

# action kinds
A_ENC_START, A_SET_TO, A_SET_ADD, A_SET_DRAW, A_ONSET, A_DIAGNOSE, A_RESOLVE = 0, 1, 2, 3, 4, 5, 6
A_MED_START, A_MED_STOP, A_PROCEDURE, A_IMMUNIZATION, A_OBSERVE, A_SYMPTOM = 7, 8, 9, 10, 11, 12
A_ENC_END, A_DEATH = 13, 14
# exit kinds
X_TERMINAL, X_NEXT, X_BRANCHES, X_CASES, X_HAZARDS = 0, 1, 2, 3, 4
# distribution kinds
D_EXACT, D_UNIFORM, D_NORMAL, D_EXPONENTIAL, D_LOGNORMAL, D_GAMMA = 0, 1, 2, 3, 4, 5
# guard instructions
G_AGE, G_SEX, G_RACE, G_ETHNICITY, G_ATTR, G_COND_ACTIVE, G_COND_DIAGNOSED = 0, 1, 2, 3, 4, 5, 6
G_MED, G_OBS, G_SINCE, G_AND, G_OR, G_NOT, G_BEFORE = 7, 8, 9, 10, 11, 12, 13
G_MONTH = 14
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
SEXES = ("M", "F")
# event kinds
K_ENCOUNTER_START, K_ENCOUNTER_END, K_ONSET, K_DIAGNOSIS, K_RESOLVED = 0, 1, 2, 3, 4
K_MED_START, K_MED_STOP, K_PROCEDURE, K_IMMUNIZATION, K_OBSERVATION, K_SYMPTOM, K_DEATH = 5, 6, 7, 8, 9, 10, 11
EVENT_KINDS = (
    "encounter_start",
    "encounter_end",
    "condition_onset",
    "condition_diagnosis",
    "condition_resolved",
    "medication_start",
    "medication_stop",
    "procedure",
    "immunization",
    "observation",
    "symptom",
    "death",
)
