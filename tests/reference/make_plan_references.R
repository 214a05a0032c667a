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
# (numDeriv gradients and Hessians) on a REML log-likelihood written out below (checked to
# equal logLik(fit) at the gls optimum), in the natural covariance parameters divided by their
# own size (variances by themselves, covariances by the product of the standard deviations,
# the unstructured correlations by 1, rho of sp_pow(h) by min(rho, 1 - rho), which keeps the
# finite-difference steps inside (0, 1)). gls is refitted with its correlation and variance
# structures fixed at the polished values (sigma^2 is profiled by gls and must agree), and the
# LS means and contrasts are taken from that refit. Their Satterthwaite df are computed
# directly: the Hessian of the REML deviance by numDeriv (Richardson extrapolation, step 1e-2
# in the scaled parameters, six steps) and the gradient of l' (X' V^-1 X)^-1 l by numDeriv;
# CI (95%) and two-sided p-values use these df. The polished log-likelihood must be at least
# that of the free gls fit.
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

suppressPackageStartupMessages({
  library(nlme)
  library(emmeans)
  library(numDeriv)
})

data_dir <- file.path("tests", "reference", "data")
out_dir <- file.path("tests", "reference", "output")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)
emm_options(opt.digits = FALSE)

tight <- glsControl(
  maxIter = 500, msMaxIter = 1000, tolerance = 1e-12, msTol = 1e-14, natural = FALSE,
  returnObject = TRUE
)
fd_args <- list(eps = 1e-2, r = 6)

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

datasets <- read.csv(file.path(data_dir, "datasets.csv"), colClasses = "character",
                     check.names = FALSE)
datasets <- rbind(datasets, data.frame(dataset = "fev", control = "PBO", treatment = "TRT",
                                       baseline_visit = "baseline", covariates = "RACE;SEX"))

read_fev <- function() {
  subjects <- read.csv(file.path(data_dir, "fev", "subjects.csv"), stringsAsFactors = FALSE)
  visits <- read.csv(file.path(data_dir, "fev", "visits.csv"), stringsAsFactors = FALSE)
  base <- visits[visits$visit == "baseline", c("subject_id", "FEV1")]
  names(base)[2] <- "baseline"
  post <- visits[visits$visit != "baseline", ]
  post$visit_index <- as.integer(sub("VIS", "", post$visit))
  out <- merge(merge(post, base, by = "subject_id"), subjects, by = "subject_id")
  data.frame(subject_id = out$subject_id, arm = out$arm, visit = out$visit,
             visit_index = out$visit_index, week = NA_real_, outcome = "FEV1",
             value = out$FEV1, baseline = out$baseline, change = out$FEV1 - out$baseline,
             RACE = out$RACE, SEX = out$SEX, stringsAsFactors = FALSE)
}

read_dataset <- function(name) {
  if (name == "fev") return(read_fev())
  read.csv(file.path(data_dir, paste0(name, ".csv")), check.names = FALSE,
           stringsAsFactors = FALSE)
}

# The rows and factors of one fit.
prepare <- function(raw, ds, outcome, response, uses_baseline, safe) {
  dat <- raw[raw$outcome == outcome & raw$visit != ds$baseline_visit & !is.na(raw[[response]]), ]
  needed <- c(if (uses_baseline) "baseline", safe)
  dat <- dat[complete.cases(dat[, needed, drop = FALSE]), ]
  visit_levels <- unique(dat$visit[order(dat$visit_index)])
  dat$visit <- factor(dat$visit, levels = visit_levels)
  dat$visit_k <- as.integer(dat$visit)
  dat$arm <- factor(dat$arm, levels = c(ds$control, ds$treatment))
  for (cv in safe) {
    if (is.character(dat[[cv]]) || is.logical(dat[[cv]])) {
      # Sorted in the C locale, as Python sorts strings.
      dat[[cv]] <- factor(dat[[cv]], levels = sort(unique(dat[[cv]]), method = "radix"))
    }
  }
  dat[order(dat$subject_id, dat$visit_k), ]
}

# ---- gls fits -----------------------------------------------------------------------------

correlation_for <- function(structure, value = NULL, fixed = FALSE) {
  form <- if (structure == "us") ~ visit_k | subject_id else ~ week | subject_id
  ctor <- if (structure == "us") corSymm else corCAR1
  if (is.null(value)) ctor(form = form, fixed = fixed) else ctor(value, form = form, fixed = fixed)
}

weights_for <- function(structure, value = NULL, fixed = FALSE) {
  if (structure == "sp_pow") return(NULL)
  if (fixed) return(varIdent(form = ~ 1 | visit, fixed = value))
  if (is.null(value)) varIdent(form = ~ 1 | visit) else varIdent(value, form = ~ 1 | visit)
}

fit_gls <- function(fml, dat, structure, cor_value = NULL, var_value = NULL, fixed = FALSE) {
  # The call is built with the formula inlined so that emmeans can re-evaluate it.
  cl <- bquote(gls(
    .(fml), data = dat, method = "REML", na.action = na.omit, control = tight,
    correlation = .(correlation_for(structure, cor_value, fixed)),
    weights = .(weights_for(structure, var_value, fixed))
  ))
  eval(cl)
}

# Residual covariance matrix of a subject observed at every visit, from a gls fit: nlme's own
# correlation matrix for such a subject, scaled by sigma and the varIdent ratios.
fitted_sigma <- function(fit, structure, levels, weeks) {
  k <- length(levels)
  sd <- rep(1, k)
  if (!is.null(fit$modelStruct$varStruct)) {
    delta <- coef(fit$modelStruct$varStruct, unconstrained = FALSE, allCoef = TRUE)
    sd <- as.numeric(delta[levels])
  }
  fake <- data.frame(visit_k = seq_len(k), week = weeks, subject_id = "s")
  value <- coef(fit$modelStruct$corStruct, unconstrained = FALSE)
  corr <- corMatrix(Initialize(correlation_for(structure, value), fake))
  if (is.list(corr)) corr <- corr[[1]]
  fit$sigma^2 * outer(sd, sd) * corr
}

# ---- Natural covariance parameters --------------------------------------------------------

# theta -> Sigma, Sigma -> theta, the size of each parameter (the unit of the finite-difference
# steps) and the gls structure values that reproduce Sigma up to sigma^2.
sigma_map <- function(structure, levels, weeks) {
  k <- length(levels)
  if (structure == "us") {
    return(list(
      theta = function(S) S[lower.tri(S, diag = TRUE)],
      sigma = function(th) {
        S <- matrix(0, k, k)
        S[lower.tri(S, diag = TRUE)] <- th
        S + t(S) - diag(diag(S))
      },
      scale = function(S) {
        sd <- sqrt(diag(S))
        outer(sd, sd)[lower.tri(S, diag = TRUE)]
      },
      gls = function(S) {
        sd <- sqrt(diag(S))
        list(cor = cov2cor(S)[lower.tri(S)], var = setNames(sd[-1] / sd[1], levels[-1]))
      }
    ))
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

# ---- REML, polishing and Satterthwaite df (as in make_mmrm_references.R) ------------------

# -2 REML log-likelihood on nlme's scale ((N - p) log(2 pi) + sum log|Sigma_i| + log|X'V^-1 X|
# + r'V^-1 r), written out from the model definition. Each subject's rows are whitened by the
# Cholesky factor of its Sigma block. Returns dev = Inf where Sigma is not positive definite.
make_reml <- function(X, y, subject, pos) {
  groups <- split(seq_along(y), subject)
  n <- length(y)
  p <- ncol(X)
  function(Sigma) {
    if (!all(is.finite(Sigma))) return(list(dev = Inf))
    A <- matrix(0, p, p)
    b <- numeric(p)
    logdet <- 0
    white <- vector("list", length(groups))
    for (i in seq_along(groups)) {
      g <- groups[[i]]
      R <- tryCatch(chol(Sigma[pos[g], pos[g], drop = FALSE]), error = function(e) NULL)
      if (is.null(R)) return(list(dev = Inf))
      Xw <- backsolve(R, X[g, , drop = FALSE], transpose = TRUE)
      yw <- backsolve(R, y[g], transpose = TRUE)
      white[[i]] <- list(X = Xw, y = yw)
      A <- A + crossprod(Xw)
      b <- b + as.numeric(crossprod(Xw, yw))
      logdet <- logdet + 2 * sum(log(diag(R)))
    }
    RA <- chol(A)
    beta <- backsolve(RA, backsolve(RA, b, transpose = TRUE))
    rss <- sum(vapply(white, function(w) sum((w$y - w$X %*% beta)^2), numeric(1)))
    dev <- (n - p) * log(2 * pi) + logdet + 2 * sum(log(diag(RA))) + rss
    list(dev = dev, beta = beta, phi = chol2inv(RA))
  }
}

# REML deviance as a function of the scaled displacement u from theta: theta + scale * u.
scaled_deviance <- function(reml, map, theta, scale) {
  function(u) reml(map$sigma(theta + scale * u))$dev
}

# Newton steps with step halving on the REML deviance, from the gls optimum. Once the predicted
# decrease is below 1e-10 the deviance can no longer tell the points apart (its rounding error
# is ~1e-13), so full Newton steps are then taken as long as they shrink the gradient.
polish <- function(reml, map, theta, scale) {
  zero <- rep(0, length(theta))
  for (iter in 1:20) {
    dev <- scaled_deviance(reml, map, theta, scale)
    g <- numDeriv::grad(dev, zero, method.args = fd_args)
    H <- numDeriv::hessian(dev, zero, method.args = fd_args)
    if (min(eigen(H, symmetric = TRUE, only.values = TRUE)$values) <= 0) {
      stop("REML Hessian not positive definite at the gls optimum")
    }
    step <- -solve(H, g)
    if (sum(-g * step) < 1e-10) {
      g_new <- numDeriv::grad(dev, step, method.args = fd_args)
      if (!(max(abs(g_new)) < max(abs(g)))) break
      theta <- theta + scale * step
      next
    }
    f0 <- dev(zero)
    t <- 1
    while (t > 1e-6 && !(dev(t * step) < f0)) t <- t / 2
    if (t <= 1e-6) break
    theta <- theta + scale * t * step
  }
  theta
}

# Satterthwaite df of the rows of L at theta (Hessian and gradients in the scaled displacement).
satterthwaite_df <- function(L, reml, map, theta, scale) {
  dev <- scaled_deviance(reml, map, theta, scale)
  zero <- rep(0, length(theta))
  hess <- numDeriv::hessian(dev, zero, method.args = fd_args)
  if (min(eigen(hess, symmetric = TRUE, only.values = TRUE)$values) <= 0) {
    stop("REML Hessian not positive definite")
  }
  cov_u <- 2 * solve(hess)
  phi <- reml(map$sigma(theta))$phi
  sapply(seq_len(nrow(L)), function(i) {
    l <- L[i, ]
    quad <- function(u) as.numeric(t(l) %*% reml(map$sigma(theta + scale * u))$phi %*% l)
    g <- numDeriv::grad(quad, zero, method.args = fd_args)
    2 * as.numeric(t(l) %*% phi %*% l)^2 / as.numeric(t(g) %*% cov_u %*% g)
  })
}

# ---- One model ----------------------------------------------------------------------------

fit_model <- function(raw, ds, outcome, model, covs, safe) {
  response <- model_response(model)
  terms <- model_terms(model, safe, safe[match(by_visit_covariate[ds$dataset], covs)])
  dat <- prepare(raw, ds, outcome, response, "baseline" %in% all.vars(reformulate(terms)), safe)
  levels <- levels(dat$visit)
  k <- length(levels)
  weeks <- as.numeric(tapply(dat$week, dat$visit, function(w) w[1]))
  structure <- model_structure(model)
  fml <- reformulate(terms, response = response)
  X <- model.matrix(fml, dat)
  stopifnot(qr(X)$rank == ncol(X))
  reml <- make_reml(X, dat[[response]], dat$subject_id, dat$visit_k)

  # Free gls fit, refitted from its own optimum until the log-likelihood stops moving.
  fit <- fit_gls(fml, dat, structure)
  for (refit in 1:5) {
    cor_value <- coef(fit$modelStruct$corStruct, unconstrained = FALSE)
    var_value <- if (is.null(fit$modelStruct$varStruct)) NULL else
      coef(fit$modelStruct$varStruct, unconstrained = FALSE)
    again <- tryCatch(fit_gls(fml, dat, structure, cor_value, var_value),
                      error = function(e) NULL)
    if (is.null(again)) break
    gain <- as.numeric(logLik(again)) - as.numeric(logLik(fit))
    if (gain >= 0) fit <- again
    if (abs(gain) < 1e-10) break
  }
  map <- sigma_map(structure, levels, weeks)
  Sigma_gls <- fitted_sigma(fit, structure, levels, weeks)
  loglik_gls <- as.numeric(logLik(fit))
  stopifnot(abs(-reml(Sigma_gls)$dev / 2 - loglik_gls) < 1e-8)

  # Polish, then refit gls with the structures fixed at the polished values.
  scale <- map$scale(Sigma_gls)
  theta <- polish(reml, map, map$theta(Sigma_gls), scale)
  values <- map$gls(map$sigma(theta))
  fixed_fit <- fit_gls(fml, dat, structure, values$cor, values$var, fixed = TRUE)
  Sigma <- fitted_sigma(fixed_fit, structure, levels, weeks)
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
  covs <- strsplit(ds$covariates, ";", fixed = TRUE)[[1]]
  safe <- paste0(".cov", seq_along(covs))
  stopifnot(!any(safe %in% names(raw)))
  for (i in seq_along(covs)) raw[[safe[i]]] <- raw[[covs[i]]]
  for (outcome in unique(raw$outcome)) {
    for (model in plan[[name]]) {
      results[[length(results) + 1]] <- fit_model(raw, ds, outcome, model, covs, safe)
    }
  }
}

write_out <- function(part, file) {
  out <- do.call(rbind, lapply(results, `[[`, part))
  # 17 significant digits: the Python tests compare against full double precision.
  for (col in names(out)) {
    if (is.double(out[[col]])) {
      out[[col]] <- ifelse(is.na(out[[col]]), NA, sprintf("%.17g", out[[col]]))
    }
  }
  write.csv(out, file.path(out_dir, file), row.names = FALSE, na = "")
}
write_out("lsmeans", "plan_lsmeans.csv")
write_out("effects", "plan_effects.csv")
write_out("fit", "plan_fit.csv")
write_out("covariance", "plan_covariance.csv")
write_out("spatial", "plan_spatial.csv")

writeLines(c(
  "# Versions used by tests/reference/make_plan_references.R",
  R.version.string,
  paste("nlme", as.character(packageVersion("nlme"))),
  paste("emmeans", as.character(packageVersion("emmeans"))),
  paste("numDeriv", as.character(packageVersion("numDeriv"))),
  "", capture.output(sessionInfo())
), file.path(out_dir, "R_session_plan.txt"))
