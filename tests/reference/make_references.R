# Reference results for trialflow.stats: LMM, ANCOVA, mixed ANOVA and Hedges' g.
#
# Reads every dataset listed in tests/reference/data/datasets.csv and, for every outcome in
# it, writes the numbers the Python tests compare against to tests/reference/output/:
#   lmm_effects.csv, lmm_lsmeans.csv, lmm_fit.csv   lmerTest::lmer (tight bobyqa), Satterthwaite df,
#                                                    emmeans
#   lmm_slope_effects.csv                            same with (1 + I(week / 12) | subject_id)
#   ancova_effects.csv, ancova_lsmeans.csv           lm(change ~ baseline + covariates + arm)
#   anova.csv                                        afex::aov_ez on complete cases
#   hedges.csv                                       Hedges' g of change, by formula
#   R_session_refs.txt                               sessionInfo()
# Data preparation: arm has the control first, visit the visits in visit_index order, character
# covariates are factors with levels sorted in the C locale; the LMM and ANCOVA use subjects with
# complete covariates. lmer is fitted with bobyqa to a trust-region radius of 1e-12 and restarted
# from its optimum until the REML deviance stops improving.
# Shared helpers (data preparation, fit_lmer, write_out) come from reference_common.R.
# Run from the package root: Rscript tests/reference/make_references.R

source(file.path("tests", "reference", "reference_common.R"))

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(emmeans)
  library(afex)
})

# Satterthwaite df for every emmeans call, however many observations a dataset has.
emm_options(lmer.df = "satterthwaite", lmerTest.limit = 1e7, pbkrtest.limit = 0)

lmm_effects <- list(); lmm_lsmeans <- list(); lmm_fit <- list(); lmm_slope <- list()
ancova_effects <- list(); ancova_lsmeans <- list()
anova_rows <- list(); hedges_rows <- list()

index <- read_index()

for (i in seq_len(nrow(index))) {
  ds <- index$dataset[i]
  control <- index$control[i]
  treatment <- index$treatment[i]
  baseline_visit <- index$baseline_visit[i]
  covs <- split_covs(index$covariates[i])
  raw <- read_lmm_dataset(ds)
  visits <- ordered_visits(raw)
  post_visits <- setdiff(visits, baseline_visit)

  for (outcome in unique(raw$outcome)) {
    d_raw <- raw[raw$outcome == outcome, , drop = FALSE]
    # Models with covariates use subjects with complete covariates; ANOVA and Hedges' g do
    # not involve covariates and use every subject.
    d <- prepare_lmm(complete_covariates(d_raw, covs), covs, control, treatment, visits)
    d_all <- prepare_lmm(d_raw, covs, control, treatment, visits)
    key <- data.frame(dataset = ds, outcome = outcome, stringsAsFactors = FALSE)

    ## ---- LMM: random intercept, all visits including baseline, REML ----
    dl <- droplevels(d[!is.na(d$value), , drop = FALSE])
    f_lmm <- as.formula(paste0("value ~ ", rhs_covariates(covs),
                               "arm * visit + (1 | subject_id)"))
    m <- fit_lmer(f_lmm, dl)
    cf <- summary(m, ddf = "Satterthwaite")$coefficients
    for (v in post_visits) {
      term <- paste0("arm", treatment, ":visit", v)
      lmm_effects[[length(lmm_effects) + 1]] <- cbind(key, data.frame(
        visit = v, estimate = cf[term, "Estimate"], std_error = cf[term, "Std. Error"],
        df = cf[term, "df"], t_value = cf[term, "t value"], p_value = cf[term, "Pr(>|t|)"],
        stringsAsFactors = FALSE))
    }
    em <- as.data.frame(summary(emmeans(m, ~ arm | visit), infer = c(TRUE, FALSE)))
    lmm_lsmeans[[length(lmm_lsmeans) + 1]] <- cbind(key, data.frame(
      visit = as.character(em$visit), arm = as.character(em$arm), estimate = em$emmean,
      std_error = em$SE, df = em$df, ci_lower = em$lower.CL, ci_upper = em$upper.CL,
      stringsAsFactors = FALSE))
    vc <- as.data.frame(VarCorr(m))
    lmm_fit[[length(lmm_fit) + 1]] <- cbind(key, data.frame(
      var_subject = vc$vcov[vc$grp == "subject_id"], var_residual = vc$vcov[vc$grp == "Residual"],
      reml_loglik = as.numeric(logLik(m, REML = TRUE)), n_obs = nobs(m),
      n_subjects = nlevels(dl$subject_id), stringsAsFactors = FALSE))

    ## ---- LMM with correlated random intercept and slope on week / 12 ----
    f_slope <- as.formula(paste0("value ~ ", rhs_covariates(covs),
                                 "arm * visit + (1 + I(week / 12) | subject_id)"))
    ms <- fit_lmer(f_slope, dl)
    cs <- summary(ms, ddf = "Satterthwaite")$coefficients
    vs <- as.data.frame(VarCorr(ms))
    for (v in post_visits) {
      term <- paste0("arm", treatment, ":visit", v)
      lmm_slope[[length(lmm_slope) + 1]] <- cbind(key, data.frame(
        visit = v, estimate = cs[term, "Estimate"], std_error = cs[term, "Std. Error"],
        df = cs[term, "df"], var_intercept = vs$vcov[1], var_slope = vs$vcov[2],
        cov_intercept_slope = vs$vcov[3], var_residual = vs$vcov[4],
        reml_loglik = as.numeric(logLik(ms, REML = TRUE)), singular = isSingular(ms),
        stringsAsFactors = FALSE))
    }

    ## ---- ANCOVA per post-baseline visit ----
    f_anc <- as.formula(paste0("change ~ baseline + ", rhs_covariates(covs), "arm"))
    for (v in post_visits) {
      dv <- d[d$visit == v & !is.na(d$change) & !is.na(d$baseline), , drop = FALSE]
      dv <- droplevels(dv)
      fit <- lm(f_anc, data = dv)
      co <- summary(fit)$coefficients
      term <- paste0("arm", treatment)
      ci <- confint(fit, term, level = 0.95)
      ancova_effects[[length(ancova_effects) + 1]] <- cbind(key, data.frame(
        visit = v, estimate = co[term, "Estimate"], std_error = co[term, "Std. Error"],
        df = df.residual(fit), ci_lower = ci[1, 1], ci_upper = ci[1, 2],
        p_value = co[term, "Pr(>|t|)"], n = nobs(fit), stringsAsFactors = FALSE))
      ea <- as.data.frame(summary(emmeans(fit, ~ arm), infer = c(TRUE, FALSE)))
      ancova_lsmeans[[length(ancova_lsmeans) + 1]] <- cbind(key, data.frame(
        visit = v, arm = as.character(ea$arm), estimate = ea$emmean, std_error = ea$SE,
        df = ea$df, ci_lower = ea$lower.CL, ci_upper = ea$upper.CL, stringsAsFactors = FALSE))
    }

    ## ---- Mixed ANOVA on subjects observed at every visit ----
    obs <- d_raw[!is.na(d_raw$value), , drop = FALSE]
    n_seen <- table(obs$subject_id)
    complete_ids <- names(n_seen)[n_seen == length(visits)]
    da <- obs[obs$subject_id %in% complete_ids, c("subject_id", "arm", "visit", "value")]
    da$visit <- factor(da$visit, levels = visits)
    da$arm <- factor(da$arm, levels = c(control, treatment))
    # Type III (afex's default) and type II sums of squares; they differ for the visit main
    # effect when the arms have unequal numbers of complete cases.
    for (ss_type in c(3, 2)) {
      a <- suppressMessages(afex::aov_ez(
        id = "subject_id", dv = "value", between = "arm", within = "visit", data = da,
        type = ss_type, anova_table = list(correction = "none", es = "pes")))
      tab <- as.data.frame(a$anova_table)
      a_gg <- suppressMessages(afex::aov_ez(
        id = "subject_id", dv = "value", between = "arm", within = "visit", data = da,
        type = ss_type, anova_table = list(correction = "GG", es = "pes")))
      tab_gg <- as.data.frame(a_gg$anova_table)
      anova_rows[[length(anova_rows) + 1]] <- cbind(key, data.frame(
        ss_type = ss_type, source = rownames(tab), F = tab$F, df1 = tab[["num Df"]],
        df2 = tab[["den Df"]], p_value = tab[["Pr(>F)"]], partial_eta_sq = tab$pes,
        p_value_gg = ifelse(rownames(tab) == "arm", NA, tab_gg[["Pr(>F)"]]),
        n_subjects = length(complete_ids), stringsAsFactors = FALSE))
    }

    ## ---- Hedges' g of change per post-baseline visit ----
    for (v in post_visits) {
      dv <- d_all[d_all$visit == v & !is.na(d_all$change), , drop = FALSE]
      y1 <- dv$change[dv$arm == treatment]
      y0 <- dv$change[dv$arm == control]
      n1 <- length(y1); n0 <- length(y0)
      sp <- sqrt(((n1 - 1) * var(y1) + (n0 - 1) * var(y0)) / (n1 + n0 - 2))
      dd <- (mean(y1) - mean(y0)) / sp
      j <- 1 - 3 / (4 * (n1 + n0) - 9)
      g <- j * dd
      se <- sqrt((n1 + n0) / (n1 * n0) + g^2 / (2 * (n1 + n0)))
      z <- qnorm(0.975)
      hedges_rows[[length(hedges_rows) + 1]] <- cbind(key, data.frame(
        visit = v, g = g, std_error = se, ci_lower = g - z * se, ci_upper = g + z * se,
        n_treatment = n1, n_control = n0, stringsAsFactors = FALSE))
    }
  }
}

write_out(lmm_effects, "lmm_effects.csv")
write_out(lmm_lsmeans, "lmm_lsmeans.csv")
write_out(lmm_fit, "lmm_fit.csv")
write_out(lmm_slope, "lmm_slope_effects.csv")
write_out(ancova_effects, "ancova_effects.csv")
write_out(ancova_lsmeans, "ancova_lsmeans.csv")
write_out(anova_rows, "anova.csv")
write_out(hedges_rows, "hedges.csv")
writeLines(capture.output(sessionInfo()), file.path(out_dir, "R_session_refs.txt"))
