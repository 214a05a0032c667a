"""Statistical engine: MMRM, LMM, ANCOVA, mixed ANOVA, effect sizes."""
