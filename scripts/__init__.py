"""The experiment scripts: one shell script per paradigm, the job queue and the paper's experiment grid."""
