"""The experiment scripts: one shell script per paradigm, the job queue and the grid of SPEC §9."""
