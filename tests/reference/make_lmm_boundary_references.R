# Reference results for the LMM at a boundary (singular) optimum.
#
# Reads tests/reference/data/lmm_boundary.csv (made by tests/reference/make_datasets.py:
# values centred within subject, so the REML subject variance is zero) and writes to
# tests/reference/output/:
#   lmm_boundary.csv   lmerTest::lmer(value ~ arm * visit + (1 | subject_id), REML, bobyqa
#                      from radius 0.2 to 1e-12 (tight_control(0.2): fit_lmer's default
#                      radius is refused by bobyqa on these data): per post-baseline visit
#                      the arm:visit estimate,
#                      SE and Satterthwaite df, with the variance components, REML
#                      log-likelihood, theta and isSingular()
#   R_session_lmm_boundary.txt   versions and sessionInfo()
# Run from the package root: Rscript tests/reference/make_lmm_boundary_references.R

source(file.path("tests", "reference", "reference_common.R"))

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
})

d <- read.csv(file.path(data_dir, "lmm_boundary.csv"), stringsAsFactors = FALSE)
d$subject_id <- factor(d$subject_id)
d$arm <- factor(d$arm, levels = c("ctl", "trt"))
d$visit <- factor(d$visit, levels = c("v0", "v1", "v2"))
m <- lmerTest::lmer(value ~ arm * visit + (1 | subject_id), data = d, REML = TRUE,
                    control = tight_control(0.2))
cf <- summary(m, ddf = "Satterthwaite")$coefficients
vc <- as.data.frame(VarCorr(m))
rows <- lapply(c("v1", "v2"), function(v) {
  term <- paste0("armtrt:visit", v)
  data.frame(
    visit = v, estimate = cf[term, "Estimate"], std_error = cf[term, "Std. Error"],
    df = cf[term, "df"], var_subject = vc$vcov[vc$grp == "subject_id"],
    var_residual = vc$vcov[vc$grp == "Residual"],
    reml_loglik = as.numeric(logLik(m, REML = TRUE)), theta = getME(m, "theta")[[1]],
    singular = isSingular(m), stringsAsFactors = FALSE)
})
write_out(rows, "lmm_boundary.csv")
write_session("R_session_lmm_boundary.txt", "make_lmm_boundary_references.R",
              c("lme4", "lmerTest"))
