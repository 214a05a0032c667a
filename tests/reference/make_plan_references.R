# Reference results for the mean-model and covariance options of trialflow's MMRM
# (trialflow/stats/mmrm.py) beyond the default model, computed with R nlme::gls and emmeans.
#
# Run from the package root:  Rscript tests/reference/make_plan_references.R
#
# Data. For sim_dropout, sim_catcov and exercise_education (tests/reference/data/, described in
# datasets.csv) and for every outcome in them, the post-baseline rows with an observed response
# (change or value, as the model says) are used, and of these only the rows with a complete
# baseline when the model has the baseline and complete covariates (every model has them). So
# value_none can use rows that the change models cannot (a missing baseline). The fev data
# (tests/reference/data/fev/, fev_data of the R package mmrm) are laid out the same way: arm =
# ARMCD (PBO first), visit = AVISIT (VIS1..VIS4), value = FEV1, baseline = FEV1_BL (the FEV1 at
# visit "baseline"), covariates RACE and SEX; outcome "FEV1". Conventions are those of
# make_mmrm_references.R: arm has the control as first level, visit the post-baseline visits in
# visit order, visit_k renumbers them 1..k, categorical covariates are factors with their
# levels sorted in the C locale (treatment coding), and covariate columns are copied to
# syntactic names (.cov1, .cov2, ...) before fitting.
#
# Models (column `model`; covs = the dataset's covariates; every fit is REML):
#   by_visit        change ~ baseline + covs + visit + baseline:visit + arm + arm:visit
#   none            change ~ covs + arm * visit
#   value           value ~ baseline + covs + arm * visit
#   value_by_visit  value ~ baseline * visit + covs + arm * visit
#   value_none      value ~ covs + arm * visit
#   cov_by_visit    change ~ baseline + covs + <cov>:visit + arm * visit, with <cov> = age
#                   (numeric) for sim_dropout and Site (factor A, B, C) for sim_catcov
#   proportional    change ~ baseline + covs + arm * visit, LS means with weights "proportional"
#   proportional_cov_by_visit   cov_by_visit with weights "proportional" (sim_catcov only)
#   sp_pow          change ~ baseline + covs + arm * visit with corCAR1(form = ~ week | subject_id):
#                   Sigma[i, j] = sigma^2 rho^|week_i - week_j| (rho per unit week)
#   sp_powh         sp_pow plus varIdent(form = ~ 1 | visit): Sigma[i, j] = s_i s_j rho^|w_i - w_j|
#   fev_un          (fev) FEV1 ~ RACE + SEX + ARMCD * AVISIT, i.e. value_none on the fev data
#   fev_by_visit    (fev) FEV1 ~ FEV1_BL * AVISIT + RACE + SEX + ARMCD * AVISIT (value_by_visit)
# The first eight are fitted to sim_dropout and sim_catcov (proportional_cov_by_visit to
# sim_catcov only), sp_pow and sp_powh to exercise_education and sim_dropout. Every model except
# sp_pow(h) has an unstructured covariance:
#   corSymm(form = ~ visit_k | subject_id) + varIdent(form = ~ 1 | visit).
#
# Least-squares means come from emmeans(fit, ~ arm | visit) and the contrasts from
# contrast(., "trt.vs.ctrl"), reported as "<treatment> - <control>". Numeric covariates
# (baseline, age) are held at their mean over the fitted rows. Factor covariates are averaged
# with equal weights, except for the "proportional" models (emmeans weights = "proportional"):
# there each combination of the covariate factors (for sim_catcov: Site x sex) is weighted by
# its number of rows in the fitted data, pooled over arms and visits. (emmeans itself would
# count each gls row by its varIdent weight, 1 / the relative standard deviation of its
# visit, so the reference grid's frequencies are replaced by plain row counts.)
#
# Fitting is as in make_mmrm_references.R: gls with tight tolerances, refitted from its own
# optimum until the log-likelihood stops moving; then the optimum is polished by Newton steps
# (numDeriv gradients and Hessians) on a REML log-likelihood written out from the model
# definition (make_reml in reference_common.R; checked to equal logLik(fit) at the gls
# optimum), in the natural covariance parameters divided by their own size (variances by
# themselves, covariances by the product of the standard deviations,
# the unstructured correlations by 1, rho of sp_pow(h) by min(rho, 1 - rho), which keeps the
# finite-difference steps inside (0, 1)). gls is refitted with its correlation and variance
# structures fixed at the polished values (sigma^2 is profiled by gls and must agree), and the
# LS means and contrasts are taken from that refit. Their Satterthwaite df are computed
# directly: the Hessian of the REML deviance by numDeriv (Richardson extrapolation, step 1e-2
# in the scaled parameters, six steps) and the gradient of l' (X' V^-1 X)^-1 l by numDeriv;
# CI (95%) and two-sided p-values use these df. The polished log-likelihood must be at least
# that of the free gls fit. Unlike make_mmrm_references.R, the Newton steps do not stop when the
# predicted decrease of the deviance falls below 1e-12: below 1e-10 (where the deviance can no
# longer tell the points apart) full Newton steps are taken as long as they shrink the gradient
# (polish(..., flat_steps = TRUE)).
#
# Shared helpers (data preparation, gls fitting, REML deviance, Newton polishing, Satterthwaite
# df, CSV writing) come from tests/reference/reference_common.R.
#
# Outputs (tests/reference/output/):
#   plan_lsmeans.csv     dataset, outcome, model, visit, arm, estimate, std_error, df
#   plan_effects.csv     dataset, outcome, model, contrast, visit, estimate, std_error, df,
#                        ci_lower, ci_upper, p_value
#   plan_fit.csv         dataset, outcome, model, loglik, n_obs, n_subjects, max_abs_gradient
#                        (loglik: logLik of the refit at the polished optimum; max_abs_gradient:
#                        of the REML deviance in the scaled parameters there)
#   plan_covariance.csv  dataset, outcome, model, row_visit, col_visit, value (the residual
#                        covariance matrix of a subject observed at every post-baseline visit)
#   plan_spatial.csv     dataset, outcome, model, parameter, value: for sp_pow "rho" and
#                        "variance"; for sp_powh "rho" and "variance_<visit>" per visit
#   R_session_plan.txt   R and package versions
# Numbers are written with 17 significant digits.

source(file.path("tests", "reference", "reference_common.R"))

suppressPackageStartupMessages({
  library(nlme)
  library(emmeans)
  library(numDeriv)
})

emm_options(opt.digits = FALSE)

# ---- Models -------------------------------------------------------------------------------

# Right-hand side terms of each model; `safe` are the syntactic covariate names and `by_cov`
# the syntactic name of the covariate crossed with visit in the cov_by_visit models.
model_terms <- function(model, safe, by_cov) {
  switch(model,
    by_visit = c("baseline", safe, "visit", "baseline:visit", "arm", "arm:visit"),
    none = , value_none = , fev_un = c(safe, "arm * visit"),
    value = , proportional = , sp_pow = , sp_powh = c("baseline", safe, "arm * visit"),
    value_by_visit = , fev_by_visit = c("baseline * visit", safe, "arm * visit"),
    cov_by_visit = , proportional_cov_by_visit =
      c("baseline", safe, paste0(by_cov, ":visit"), "arm * visit")
  )
}
model_response <- function(model) {
  if (model %in% c("value", "value_by_visit", "value_none", "fev_un", "fev_by_visit")) "value"
  else "change"
}
model_structure <- function(model) if (model %in% c("sp_pow", "sp_powh")) model else "us"
model_weights <- function(model) {
  if (model %in% c("proportional", "proportional_cov_by_visit")) "proportional" else "equal"
}

mean_models <- c("by_visit", "none", "value", "value_by_visit", "value_none", "cov_by_visit",
                 "proportional")
plan <- list(
  sim_dropout = c(mean_models, "sp_pow", "sp_powh"),
  sim_catcov = c(mean_models, "proportional_cov_by_visit"),
  exercise_education = c("sp_pow", "sp_powh"),
  fev = c("fev_un", "fev_by_visit")
)
by_visit_covariate <- c(sim_dropout = "age", sim_catcov = "Site")

# ---- Data ---------------------------------------------------------------------------------

datasets <- read_index()
datasets <- rbind(datasets, data.frame(dataset = "fev", control = "PBO", treatment = "TRT",
                                       baseline_visit = "baseline", covariates = "RACE;SEX"))

# ---- Natural covariance parameters --------------------------------------------------------

# theta -> Sigma, Sigma -> theta, the size of each parameter (the unit of the finite-difference
# steps) and the gls structure values that reproduce Sigma up to sigma^2. The unstructured map
# is the shared one (reference_common.R); sp_pow(h) have rho per unit week.
plan_sigma_map <- function(structure, levels, weeks) {
  k <- length(levels)
  if (structure == "us") {
    map <- sigma_map("us", k)
    map$gls <- function(S) gls_values(S, "us", k, levels)
    return(map)
  }
  lag <- abs(outer(weeks, weeks, "-"))
  rho_of <- function(S) (S[1, 2] / sqrt(S[1, 1] * S[2, 2]))^(1 / (weeks[2] - weeks[1]))
  # Outside 0 < rho < 1 there is no matrix (the REML function then returns Inf).
  power <- function(rho) if (rho > 0 && rho < 1) rho^lag else matrix(NA_real_, k, k)
  if (structure == "sp_pow") {
    list(
      theta = function(S) c(S[1, 1], rho_of(S)),
      sigma = function(th) th[1] * power(th[2]),
      scale = function(S) c(S[1, 1], min(rho_of(S), 1 - rho_of(S))),
      gls = function(S) list(cor = rho_of(S), var = NULL)
    )
  } else {
    list(
      theta = function(S) c(diag(S), rho_of(S)),
      sigma = function(th) outer(sqrt(th[1:k]), sqrt(th[1:k])) * power(th[k + 1]),
      scale = function(S) c(diag(S), min(rho_of(S), 1 - rho_of(S))),
      gls = function(S) {
        sd <- sqrt(diag(S))
        list(cor = rho_of(S), var = setNames(sd[-1] / sd[1], levels[-1]))
      }
    )
  }
}

# ---- One model ----------------------------------------------------------------------------

fit_model <- function(raw, ds, outcome, model, covs, safe) {
  response <- model_response(model)
  terms <- model_terms(model, safe, safe[match(by_visit_covariate[ds$dataset], covs)])
  # Rows with an observed response, and a complete baseline when the model has it.
  uses_baseline <- "baseline" %in% all.vars(reformulate(terms))
  dat <- prepare_post_baseline(raw, ds, outcome, safe, response,
                               needed = c(if (uses_baseline) "baseline", safe))
  levels <- levels(dat$visit)
  k <- length(levels)
  weeks <- as.numeric(tapply(dat$week, dat$visit, function(w) w[1]))
  structure <- model_structure(model)
  fml <- reformulate(terms, response = response)
  X <- model.matrix(fml, dat)
  stopifnot(qr(X)$rank == ncol(X))
  reml <- make_reml(X, dat[[response]], dat$subject_id, dat$visit_k)

  # Free gls fit, refitted from its own optimum until the log-likelihood stops moving.
  fit <- fit_gls_tight(fml, dat, structure, k)
  map <- plan_sigma_map(structure, levels, weeks)
  Sigma_gls <- fitted_sigma(fit, structure, k, levels, weeks)
  loglik_gls <- as.numeric(logLik(fit))
  stopifnot(abs(-reml(Sigma_gls)$dev / 2 - loglik_gls) < 1e-8)

  # Polish, then refit gls with the structures fixed at the polished values.
  scale <- map$scale(Sigma_gls)
  # (The stopping rule for a deviance too flat to compare points: see polish.)
  theta <- polish(reml, map, map$theta(Sigma_gls), scale, flat_steps = TRUE)
  values <- map$gls(map$sigma(theta))
  fixed_fit <- fit_gls(fml, dat, structure, k, values$cor, values$var, fixed = TRUE)
  Sigma <- fitted_sigma(fixed_fit, structure, k, levels, weeks)
  stopifnot(max(abs(Sigma - map$sigma(theta))) < 1e-8 * max(abs(Sigma)))
  theta <- map$theta(Sigma)
  check <- reml(Sigma)
  loglik <- as.numeric(logLik(fixed_fit))
  stopifnot(abs(-check$dev / 2 - loglik) < 1e-8)
  stopifnot(loglik >= loglik_gls - 1e-9)
  grad_dev <- numDeriv::grad(scaled_deviance(reml, map, theta, scale), rep(0, length(theta)),
                             method.args = fd_args)

  # emmeans takes the frequencies behind weights = "proportional" from the reference grid's
  # .wgt. column, which for gls it fills with the varIdent weights of the rows
  # (nlme::varWeights) instead of counting them; the column is set to the row counts here.
  rg <- ref_grid(fixed_fit, data = dat, mode = "df.error")
  factors <- names(rg@levels)[vapply(names(rg@levels), function(v) is.factor(dat[[v]]),
                                     logical(1))]
  cell <- function(d) do.call(paste, c(lapply(factors, function(v) as.character(d[[v]])),
                                       sep = "\t"))
  rg@grid[[".wgt."]] <- as.numeric(table(factor(cell(dat), levels = cell(rg@grid))))
  emm <- emmeans(rg, ~ arm | visit, weights = model_weights(model))
  ctr <- contrast(emm, "trt.vs.ctrl", ref = 1, adjust = "none")
  s_emm <- as.data.frame(summary(emm))
  s_ctr <- as.data.frame(summary(ctr, adjust = "none"))
  stopifnot(max(abs(emm@linfct %*% check$beta - s_emm$emmean)) <
              1e-8 * max(1, abs(s_emm$emmean)))
  df_emm <- satterthwaite_df(emm@linfct, reml, map, theta, scale)
  df_ctr <- satterthwaite_df(ctr@linfct, reml, map, theta, scale)
  tq <- qt(0.975, df_ctr)

  key <- data.frame(dataset = ds$dataset, outcome = outcome, model = model)
  spatial <- NULL
  if (structure != "us") {
    names_var <- if (structure == "sp_pow") "variance" else paste0("variance_", levels)
    spatial <- data.frame(key, parameter = c("rho", names_var),
                          value = c(theta[length(theta)], theta[-length(theta)]))
  }
  cat(sprintf("%-18s %-14s %-26s loglik %.10f (gls %+.2e)  max|grad| %.1e\n", ds$dataset,
              outcome, model, loglik, loglik - loglik_gls, max(abs(grad_dev))))
  list(
    lsmeans = data.frame(key, visit = as.character(s_emm$visit), arm = as.character(s_emm$arm),
                         estimate = s_emm$emmean, std_error = s_emm$SE, df = df_emm),
    effects = data.frame(key, contrast = paste(ds$treatment, "-", ds$control),
                         visit = as.character(s_ctr$visit), estimate = s_ctr$estimate,
                         std_error = s_ctr$SE, df = df_ctr,
                         ci_lower = s_ctr$estimate - tq * s_ctr$SE,
                         ci_upper = s_ctr$estimate + tq * s_ctr$SE,
                         p_value = 2 * pt(-abs(s_ctr$estimate / s_ctr$SE), df_ctr)),
    fit = data.frame(key, loglik = loglik, n_obs = nrow(dat),
                     n_subjects = length(unique(dat$subject_id)),
                     max_abs_gradient = max(abs(grad_dev))),
    covariance = data.frame(key, row_visit = rep(levels, times = k),
                            col_visit = rep(levels, each = k), value = as.numeric(Sigma)),
    spatial = spatial
  )
}

# ---- All fits -----------------------------------------------------------------------------

results <- list()
for (name in names(plan)) {
  ds <- datasets[datasets$dataset == name, ]
  raw <- read_dataset(name)
  covs <- split_covs(ds$covariates)
  sc <- syntactic_copies(raw, covs)
  raw <- sc$raw
  safe <- sc$safe
  for (outcome in unique(raw$outcome)) {
    for (model in plan[[name]]) {
      results[[length(results) + 1]] <- fit_model(raw, ds, outcome, model, covs, safe)
    }
  }
}

write_out(lapply(results, `[[`, "lsmeans"), "plan_lsmeans.csv")
write_out(lapply(results, `[[`, "effects"), "plan_effects.csv")
write_out(lapply(results, `[[`, "fit"), "plan_fit.csv")
write_out(lapply(results, `[[`, "covariance"), "plan_covariance.csv")
write_out(lapply(results, `[[`, "spatial"), "plan_spatial.csv")

write_session("R_session_plan.txt", "make_plan_references.R", c("nlme", "emmeans", "numDeriv"))
