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
# REML log-likelihood written out below (checked to equal logLik(fit) at the gls optimum), with
# numDeriv gradients and Hessians, and gls is refitted with its correlation and variance
# structures fixed at the polished values (sigma is then profiled by gls itself and must agree).
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

suppressPackageStartupMessages({
  library(nlme)
  library(emmeans)
  library(numDeriv)
})

data_dir <- file.path("tests", "reference", "data")
out_dir <- file.path("tests", "reference", "output")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)
emm_options(opt.digits = FALSE)

structures <- c("us", "cs", "csh", "ar1", "ar1h", "toep")
heterogeneous <- c(us = TRUE, cs = FALSE, csh = TRUE, ar1 = FALSE, ar1h = TRUE, toep = FALSE)

tight <- glsControl(
  maxIter = 500, msMaxIter = 1000, tolerance = 1e-12, msTol = 1e-14, natural = FALSE,
  returnObject = TRUE
)

# numDeriv settings in the scaled natural parameters (see the header).
fd_args <- list(eps = 1e-2, r = 6)
fd_args_check <- list(eps = 3e-3, r = 6)

correlation_for <- function(structure, k, value = NULL, fixed = FALSE) {
  if (k == 1) return(NULL)
  form <- ~ visit_k | subject_id
  # Without a value each constructor picks its own default start.
  make <- function(ctor, ...) {
    if (is.null(value)) ctor(form = form, fixed = fixed, ...)
    else ctor(value, form = form, fixed = fixed, ...)
  }
  switch(structure,
    us = make(corSymm),
    cs = , csh = make(corCompSymm),
    ar1 = , ar1h = make(corAR1),
    toep = make(corARMA, p = k - 1, q = 0)
  )
}

weights_for <- function(structure, k, value = NULL, fixed = FALSE) {
  if (k == 1 || !heterogeneous[[structure]]) return(NULL)
  if (fixed) return(varIdent(form = ~ 1 | visit, fixed = value))
  if (is.null(value)) varIdent(form = ~ 1 | visit) else varIdent(value, form = ~ 1 | visit)
}

fit_gls <- function(fml, dat, structure, k, cor_value = NULL, var_value = NULL,
                    fixed = FALSE) {
  # The call is built with the formula inlined so that emmeans can re-evaluate it.
  cl <- bquote(gls(
    .(fml), data = dat, method = "REML", na.action = na.omit, control = tight,
    correlation = .(correlation_for(structure, k, cor_value, fixed)),
    weights = .(weights_for(structure, k, var_value, fixed))
  ))
  eval(cl)
}

# Residual covariance matrix of a complete subject (visits 1..k) from a gls fit.
fitted_sigma <- function(fit, structure, k, levels) {
  sigma2 <- fit$sigma^2
  sd <- rep(1, k)
  if (!is.null(fit$modelStruct$varStruct)) {
    delta <- coef(fit$modelStruct$varStruct, unconstrained = FALSE, allCoef = TRUE)
    sd <- as.numeric(delta[levels])
  }
  corr <- diag(k)
  cs <- fit$modelStruct$corStruct
  if (!is.null(cs)) {
    # A fresh structure with the fitted values, laid on one subject observed at every visit.
    fake <- data.frame(visit_k = seq_len(k), subject_id = "s")
    cs2 <- Initialize(correlation_for(structure, k, coef(cs, unconstrained = FALSE)), fake)
    corr <- corMatrix(cs2)
    if (is.list(corr)) corr <- corr[[1]]
  }
  sigma2 * outer(sd, sd) * corr
}

# gls structure values (natural scale) that reproduce the correlations and the relative
# standard deviations of Sigma. sigma^2 itself is profiled out by gls.
gls_values <- function(Sigma, structure, k, levels) {
  if (k == 1) return(list(cor = NULL, var = NULL))
  sd <- sqrt(diag(Sigma))
  corr <- cov2cor(Sigma)
  cor_value <- switch(structure,
    us = corr[lower.tri(corr)],
    cs = , csh = , ar1 = , ar1h = corr[1, 2],
    # AR(k - 1) coefficients of the Toeplitz autocorrelations (Yule-Walker, exact for p = k - 1).
    toep = solve(toeplitz(corr[1, -k]), corr[1, -1])
  )
  var_value <- if (heterogeneous[[structure]]) setNames(sd[-1] / sd[1], levels[-1]) else NULL
  list(cor = cor_value, var = var_value)
}

# Natural parameters theta of each structure, the map theta -> Sigma, and the size of each
# parameter (the unit of the finite-difference steps).
sigma_map <- function(structure, k) {
  if (k == 1) {
    return(list(
      theta = function(S) S[1, 1], sigma = function(th) matrix(th[1], 1, 1),
      scale = function(S) S[1, 1]
    ))
  }
  lag <- abs(outer(seq_len(k), seq_len(k), "-"))
  exch <- function(rho) (1 - rho) * diag(k) + rho
  switch(structure,
    us = list(
      theta = function(S) S[lower.tri(S, diag = TRUE)],
      sigma = function(th) {
        S <- matrix(0, k, k)
        S[lower.tri(S, diag = TRUE)] <- th
        S + t(S) - diag(diag(S))
      },
      scale = function(S) {
        sd <- sqrt(diag(S))
        outer(sd, sd)[lower.tri(S, diag = TRUE)]
      }
    ),
    cs = list(
      theta = function(S) c(S[1, 1], S[1, 2] / S[1, 1]),
      sigma = function(th) th[1] * exch(th[2]),
      scale = function(S) c(S[1, 1], 1)
    ),
    csh = list(
      theta = function(S) c(diag(S), S[1, 2] / sqrt(S[1, 1] * S[2, 2])),
      sigma = function(th) outer(sqrt(th[1:k]), sqrt(th[1:k])) * exch(th[k + 1]),
      scale = function(S) c(diag(S), 1)
    ),
    ar1 = list(
      theta = function(S) c(S[1, 1], S[1, 2] / S[1, 1]),
      sigma = function(th) th[1] * th[2]^lag,
      scale = function(S) c(S[1, 1], 1)
    ),
    ar1h = list(
      theta = function(S) c(diag(S), S[1, 2] / sqrt(S[1, 1] * S[2, 2])),
      sigma = function(th) outer(sqrt(th[1:k]), sqrt(th[1:k])) * th[k + 1]^lag,
      scale = function(S) c(diag(S), 1)
    ),
    toep = list(
      theta = function(S) c(S[1, 1], S[1, -1] / S[1, 1]),
      sigma = function(th) th[1] * toeplitz(c(1, th[-1])),
      scale = function(S) c(S[1, 1], rep(1, k - 1))
    )
  )
}

# -2 REML log-likelihood on nlme's scale ((N - p) log(2 pi) + sum log|Sigma_i| + log|X'V^-1 X|
# + r'V^-1 r, no log|X'X| term), written out from the model definition; independent of gls' own
# code except for the data and design. Each subject's rows are whitened by the Cholesky factor
# of its Sigma block, and r'V^-1 r is summed from the whitened residuals rather than as
# y'V^-1 y - b'beta, whose cancellation would put rounding noise into the finite differences.
# Returns dev = Inf where Sigma is not positive definite.
make_reml <- function(X, y, subject, pos) {
  groups <- split(seq_along(y), subject)
  n <- length(y)
  p <- ncol(X)
  function(Sigma) {
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

# Newton steps with step halving on the REML deviance, from the gls optimum.
polish <- function(reml, map, theta, scale) {
  for (iter in 1:20) {
    dev <- scaled_deviance(reml, map, theta, scale)
    zero <- rep(0, length(theta))
    g <- numDeriv::grad(dev, zero, method.args = fd_args)
    H <- numDeriv::hessian(dev, zero, method.args = fd_args)
    ev <- eigen(H, symmetric = TRUE, only.values = TRUE)$values
    if (min(ev) <= 0) stop("REML Hessian not positive definite at the gls optimum")
    step <- -solve(H, g)
    if (sum(-g * step) < 1e-12) break
    f0 <- dev(zero)
    t <- 1
    while (t > 1e-6 && !(dev(t * step) < f0)) t <- t / 2
    if (t <= 1e-6) break
    theta <- theta + scale * t * step
  }
  theta
}

# Satterthwaite df of the rows of L at theta: the Hessian of the deviance and the gradients of
# l' Phi l are both taken in the scaled displacement u (a linear map of theta, so the df are
# those of theta). Stops if the Hessian is not positive definite.
satterthwaite_df <- function(L, reml, map, theta, scale, args) {
  dev <- scaled_deviance(reml, map, theta, scale)
  zero <- rep(0, length(theta))
  hess <- numDeriv::hessian(dev, zero, method.args = args)
  if (min(eigen(hess, symmetric = TRUE, only.values = TRUE)$values) <= 0) {
    stop("REML Hessian not positive definite")
  }
  cov_u <- 2 * solve(hess)
  phi <- reml(map$sigma(theta))$phi
  sapply(seq_len(nrow(L)), function(i) {
    l <- L[i, ]
    quad <- function(u) as.numeric(t(l) %*% reml(map$sigma(theta + scale * u))$phi %*% l)
    g <- numDeriv::grad(quad, zero, method.args = args)
    2 * as.numeric(t(l) %*% phi %*% l)^2 / as.numeric(t(g) %*% cov_u %*% g)
  })
}

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

datasets <- read.csv(file.path(data_dir, "datasets.csv"), colClasses = "character",
                     check.names = FALSE)
for (r in seq_len(nrow(datasets))) {
  ds <- datasets[r, ]
  raw <- read.csv(file.path(data_dir, paste0(ds$dataset, ".csv")), check.names = FALSE,
                  stringsAsFactors = FALSE)
  covs <- if (is.na(ds$covariates) || ds$covariates == "") character(0) else
    strsplit(ds$covariates, ";", fixed = TRUE)[[1]]
  # Syntactic stand-ins for the covariate names (see the header).
  safe <- if (length(covs) == 0) character(0) else paste0(".cov", seq_along(covs))
  stopifnot(!any(safe %in% names(raw)))
  for (i in seq_along(covs)) raw[[safe[i]]] <- raw[[covs[i]]]
  for (outcome in unique(raw$outcome)) {
    dat <- raw[raw$outcome == outcome & raw$visit != ds$baseline_visit & !is.na(raw$change), ]
    dat <- dat[complete.cases(dat[, c("baseline", safe), drop = FALSE]), ]
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
    dat <- dat[order(dat$subject_id, dat$visit_k), ]
    k <- length(visit_levels)
    fml <- as.formula(paste("change ~", paste(c("baseline", safe, "arm * visit"),
                                               collapse = " + ")))
    X <- model.matrix(fml, dat)
    reml <- make_reml(X, dat$change, dat$subject_id, dat$visit_k)

    for (structure in structures) {
      cat(sprintf("%s / %s / %s\n", ds$dataset, outcome, structure))
      fit0 <- tryCatch(fit_gls(fml, dat, structure, k), error = function(e) e)
      if (inherits(fit0, "error")) {
        cat("  gls failed:", conditionMessage(fit0), "\n")
        next
      }
      # Refit from the previous optimum until the log-likelihood stops moving.
      fit <- fit0
      for (refit in 1:5) {
        cor_value <- if (is.null(fit$modelStruct$corStruct)) NULL else
          coef(fit$modelStruct$corStruct, unconstrained = FALSE)
        var_value <- if (is.null(fit$modelStruct$varStruct)) NULL else
          coef(fit$modelStruct$varStruct, unconstrained = FALSE)
        again <- tryCatch(fit_gls(fml, dat, structure, k, cor_value, var_value),
                          error = function(e) NULL)
        if (is.null(again)) break
        gain <- as.numeric(logLik(again)) - as.numeric(logLik(fit))
        if (gain >= 0) fit <- again
        if (abs(gain) < 1e-10) break
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

write_out <- function(parts, name) {
  out <- do.call(rbind, parts)
  # 17 significant digits: the Python tests compare against full double precision
  # (write.csv alone keeps only 15).
  for (col in names(out)) {
    if (is.double(out[[col]])) {
      out[[col]] <- ifelse(is.na(out[[col]]), NA, sprintf("%.17g", out[[col]]))
    }
  }
  write.csv(out, file.path(out_dir, name), row.names = FALSE, na = "")
}
write_out(effects_out, "mmrm_effects.csv")
write_out(lsmeans_out, "mmrm_lsmeans.csv")
write_out(cov_out, "mmrm_covariance.csv")
write_out(fit_out, "mmrm_fit.csv")
write_out(resid_out, "mmrm_residuals.csv")

session_file <- file.path(out_dir, "R_session.txt")
writeLines(c(
  "# Versions used by tests/reference/make_mmrm_references.R",
  R.version.string,
  paste("nlme", as.character(packageVersion("nlme"))),
  paste("emmeans", as.character(packageVersion("emmeans"))),
  paste("numDeriv", as.character(packageVersion("numDeriv"))),
  "", capture.output(sessionInfo())
), session_file)
