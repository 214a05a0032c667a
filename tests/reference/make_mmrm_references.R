# Reference results for trialflow's MMRM (trialflow/stats/mmrm.py), computed with R nlme::gls
# and emmeans.
#
# Run from the package root:  Rscript tests/reference/make_mmrm_references.R
#
# For every dataset listed in tests/reference/data/datasets.csv and every outcome in it, the
# post-baseline rows with a non-missing change (and complete baseline and covariates) are fitted
# by REML with
#   gls(change ~ baseline + <covariates> + arm * visit, correlation = <structure>,
#       weights = <varIdent for heterogeneous structures>, method = "REML")
# where arm has the control as first level, visit the post-baseline visits in visit order, and
# visit_k renumbers the post-baseline visits 1..k (the lag unit of AR(1) and Toeplitz):
#   us   corSymm(form = ~ visit_k | subject_id) + varIdent(form = ~ 1 | visit)
#   cs   corCompSymm(form = ~ visit_k | subject_id)
#   csh  corCompSymm(form = ~ visit_k | subject_id) + varIdent(form = ~ 1 | visit)
#   ar1  corAR1(form = ~ visit_k | subject_id)
#   ar1h corAR1(form = ~ visit_k | subject_id) + varIdent(form = ~ 1 | visit)
#   toep corARMA(form = ~ visit_k | subject_id, p = k - 1, q = 0)
# The Toeplitz twin is exact: the autocorrelations at lags 1..p of a stationary AR(p) process
# are in one-to-one correspondence with its p partial autocorrelations, each free in (-1, 1)
# (Durbin-Levinson), so AR(k - 1) spans every positive-definite k x k Toeplitz correlation
# matrix, and with k visits no lag beyond k - 1 is ever used.
#
# Each model is fitted with tight tolerances and then refitted from its own optimum. gls hands
# its parameters to nlminb with the default relative tolerance (glsControl's msTol is not passed
# on), so it stops where the REML log-likelihood is flat to ~1e-9 but the covariance parameters
# can still be off by ~5e-5 relative. The optimum is therefore polished by Newton steps on a
# REML log-likelihood written out from the model definition (make_reml in reference_common.R;
# checked to equal logLik(fit) at the gls optimum), with numDeriv gradients and Hessians, and
# gls is refitted with its correlation and variance structures fixed at the polished values
# (sigma is then profiled by gls itself and must agree).
# Least-squares means and treatment - control contrasts come from emmeans(~ arm | visit) on that
# refit. emmeans' Satterthwaite df for gls rely on nlme's apVar (a finite-difference Hessian of
# modest precision), so the df are also recomputed here directly: the Hessian of the REML
# deviance by numDeriv (Richardson extrapolation) in the natural covariance parameters, and the
# gradient of l' (X' V^-1 X)^-1 l by numDeriv. Both are written: `df` (the precise one, also
# used for the CI and p-value) and `df_emmeans` (from the free gls fit).
#
# Finite differences are taken in the natural parameters divided by their own size (variances
# by themselves, covariances by the product of the standard deviations, correlations by 1),
# with a step of 1e-2 in those units and six Richardson steps. numDeriv's default (a relative
# step of 0.1) leaves the positive-definite region of an unstructured matrix or visibly
# curves the deviance (it gave negative df); steps below 1e-3 amplify the rounding error of the
# deviance. `df_step_check` in mmrm_fit.csv is the largest relative change of any df when the
# step is 3e-3 instead: an estimate of the numerical error of the reference df.
#
# Covariate columns are copied to syntactic names (.cov1, .cov2, ...) before fitting: nlme
# rebuilds formulas from the variable names, so a backticked name such as `Age (years)` is
# parsed as a call to a function Age.
#
# Shared helpers (data preparation, gls fitting, REML deviance, Newton polishing, Satterthwaite
# df, CSV writing) come from tests/reference/reference_common.R; what they compute is described
# above.
#
# Outputs (tests/reference/output/):
#   mmrm_effects.csv     dataset, outcome, covariance, contrast, visit, estimate, std_error, df,
#                        ci_lower, ci_upper, p_value, df_emmeans
#   mmrm_lsmeans.csv     dataset, outcome, covariance, visit, arm, estimate, std_error, df,
#                        ci_lower, ci_upper, df_emmeans
#   mmrm_covariance.csv  dataset, outcome, covariance, row_visit, col_visit, value
#   mmrm_fit.csv         dataset, outcome, covariance, loglik, n_obs, n_subjects, n_params,
#                        loglik_check, max_abs_gradient, loglik_gls, df_step_check
#                        (loglik: logLik of the refit at the polished optimum; loglik_check:
#                        the REML function written out below at it; loglik_gls: logLik of
#                        the free gls fit; max_abs_gradient: of the deviance in the scaled
#                        natural parameters at the polished optimum)
#   R_session.txt        R and package versions

source(file.path("tests", "reference", "reference_common.R"))

suppressPackageStartupMessages({
  library(nlme)
  library(emmeans)
  library(numDeriv)
})

emm_options(opt.digits = FALSE)

structures <- c("us", "cs", "csh", "ar1", "ar1h", "toep")

emm_tables <- function(fit, dat, mode) {
  emm <- emmeans(fit, ~ arm | visit, mode = mode, data = dat)
  ctr <- contrast(emm, "trt.vs.ctrl", ref = 1, adjust = "none")
  list(
    emm = emm, ctr = ctr,
    s_emm = as.data.frame(summary(emm)),
    s_ctr = as.data.frame(summary(ctr, adjust = "none"))
  )
}

effects_out <- list()
lsmeans_out <- list()
cov_out <- list()
fit_out <- list()
resid_out <- list()

datasets <- read_index()
for (r in seq_len(nrow(datasets))) {
  ds <- datasets[r, ]
  # Syntactic stand-ins for the covariate names (see the header).
  sc <- syntactic_copies(read_dataset(ds$dataset), split_covs(ds$covariates))
  raw <- sc$raw
  safe <- sc$safe
  for (outcome in unique(raw$outcome)) {
    dat <- prepare_post_baseline(raw, ds, outcome, safe)
    visit_levels <- levels(dat$visit)
    k <- length(visit_levels)
    fml <- as.formula(paste("change ~", paste(c("baseline", safe, "arm * visit"),
                                               collapse = " + ")))
    X <- model.matrix(fml, dat)
    reml <- make_reml(X, dat$change, dat$subject_id, dat$visit_k)

    for (structure in structures) {
      cat(sprintf("%s / %s / %s\n", ds$dataset, outcome, structure))
      # Refitted from its own optimum until the log-likelihood stops moving.
      fit <- tryCatch(fit_gls_tight(fml, dat, structure, k), error = function(e) e)
      if (inherits(fit, "error")) {
        cat("  gls failed:", conditionMessage(fit), "\n")
        next
      }
      map <- sigma_map(structure, k)
      Sigma_gls <- fitted_sigma(fit, structure, k, visit_levels)
      loglik_gls <- as.numeric(logLik(fit))
      stopifnot(abs(-reml(Sigma_gls)$dev / 2 - loglik_gls) < 1e-8)

      # Polish, then refit gls with the structures fixed at the polished values.
      scale <- map$scale(Sigma_gls)
      theta <- polish(reml, map, map$theta(Sigma_gls), scale)
      values <- gls_values(map$sigma(theta), structure, k, visit_levels)
      fixed_fit <- fit_gls(fml, dat, structure, k, values$cor, values$var, fixed = TRUE)
      Sigma <- fitted_sigma(fixed_fit, structure, k, visit_levels)
      # gls reproduces the polished matrix (its profiled sigma^2 included) ...
      stopifnot(max(abs(Sigma - map$sigma(theta))) < 1e-8 * max(abs(Sigma)))
      theta <- map$theta(Sigma)
      check <- reml(Sigma)
      # ... and the polished optimum is at least as good as gls' own.
      stopifnot(as.numeric(logLik(fixed_fit)) >= loglik_gls - 1e-9)
      grad_dev <- numDeriv::grad(scaled_deviance(reml, map, theta, scale),
                                 rep(0, length(theta)), method.args = fd_args)

      fixed_tab <- emm_tables(fixed_fit, dat, "df.error")
      free_tab <- emm_tables(fit, dat, "satterthwaite")
      s_emm <- fixed_tab$s_emm
      s_ctr <- fixed_tab$s_ctr
      L_emm <- fixed_tab$emm@linfct
      L_ctr <- fixed_tab$ctr@linfct
      stopifnot(max(abs(L_emm %*% coef(fixed_fit) - s_emm$emmean)) < 1e-8)
      stopifnot(max(abs(L_emm %*% check$beta - s_emm$emmean)) < 1e-8 * max(1, abs(s_emm$emmean)))
      stopifnot(identical(as.character(free_tab$s_ctr$visit), as.character(s_ctr$visit)))
      df_emm <- satterthwaite_df(L_emm, reml, map, theta, scale, fd_args)
      df_ctr <- satterthwaite_df(L_ctr, reml, map, theta, scale, fd_args)
      df_ctr_check <- satterthwaite_df(L_ctr, reml, map, theta, scale, fd_args_check)
      df_emm_check <- satterthwaite_df(L_emm, reml, map, theta, scale, fd_args_check)
      step_check <- max(abs(c(df_ctr_check / df_ctr, df_emm_check / df_emm) - 1))
      tq <- function(df) qt(0.975, df)

      lsmeans_out[[length(lsmeans_out) + 1]] <- data.frame(
        dataset = ds$dataset, outcome = outcome, covariance = structure,
        visit = as.character(s_emm$visit), arm = as.character(s_emm$arm),
        estimate = s_emm$emmean, std_error = s_emm$SE, df = df_emm,
        ci_lower = s_emm$emmean - tq(df_emm) * s_emm$SE,
        ci_upper = s_emm$emmean + tq(df_emm) * s_emm$SE,
        df_emmeans = free_tab$s_emm$df
      )
      effects_out[[length(effects_out) + 1]] <- data.frame(
        dataset = ds$dataset, outcome = outcome, covariance = structure,
        contrast = paste(ds$treatment, "-", ds$control), visit = as.character(s_ctr$visit),
        estimate = s_ctr$estimate, std_error = s_ctr$SE, df = df_ctr,
        ci_lower = s_ctr$estimate - tq(df_ctr) * s_ctr$SE,
        ci_upper = s_ctr$estimate + tq(df_ctr) * s_ctr$SE,
        p_value = 2 * pt(-abs(s_ctr$estimate / s_ctr$SE), df_ctr),
        df_emmeans = free_tab$s_ctr$df
      )
      cov_out[[length(cov_out) + 1]] <- data.frame(
        dataset = ds$dataset, outcome = outcome, covariance = structure,
        row_visit = rep(visit_levels, times = k), col_visit = rep(visit_levels, each = k),
        value = as.numeric(Sigma)
      )
      if (structure == "us") {
        # Diagnostics: fitted values, raw and normalized residuals of the polished fit.
        resid_out[[length(resid_out) + 1]] <- data.frame(
          dataset = ds$dataset, outcome = outcome, subject_id = dat$subject_id,
          visit = as.character(dat$visit), fitted = as.numeric(fitted(fixed_fit)),
          residual = as.numeric(residuals(fixed_fit, type = "response")),
          normalized_residual = as.numeric(residuals(fixed_fit, type = "normalized"))
        )
      }
      fit_out[[length(fit_out) + 1]] <- data.frame(
        dataset = ds$dataset, outcome = outcome, covariance = structure,
        loglik = as.numeric(logLik(fixed_fit)), n_obs = fit$dims$N,
        n_subjects = length(unique(dat$subject_id)), n_params = length(theta),
        loglik_check = -check$dev / 2, max_abs_gradient = max(abs(grad_dev)),
        loglik_gls = loglik_gls, df_step_check = step_check
      )
    }
  }
}

write_out(effects_out, "mmrm_effects.csv")
write_out(lsmeans_out, "mmrm_lsmeans.csv")
write_out(cov_out, "mmrm_covariance.csv")
write_out(fit_out, "mmrm_fit.csv")
write_out(resid_out, "mmrm_residuals.csv")

write_session("R_session.txt", "make_mmrm_references.R", c("nlme", "emmeans", "numDeriv"))
