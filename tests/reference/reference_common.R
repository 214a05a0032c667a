# Helpers shared by the R reference programs in tests/reference/ (make_references.R,
# make_mmrm_references.R, make_plan_references.R, make_kr_references.R,
# make_subgroup_references.R, make_lmm_boundary_references.R, make_effectsize_references.R).
# Each program sources this file from the package root:
#   source(file.path("tests", "reference", "reference_common.R"))
# Sourcing only defines the objects below (and creates the output directory); it loads no
# package. The functions call nlme, lme4/lmerTest and numDeriv, which the calling program
# attaches itself.
#
# Paths and output
#   data_dir, out_dir      tests/reference/data and tests/reference/output (created here)
#   write_out(rows, name)  rbind a list of data frames and write it to out_dir/name as CSV,
#                          doubles with 17 significant digits (write.csv alone keeps 15), NA as
#                          an empty field; prints the number of rows written
#   write_session(file, program, packages, extra)
#                          R and package versions, extra lines and sessionInfo() to out_dir/file
#
# Data preparation
#   read_index()           tests/reference/data/datasets.csv, all columns character, "" -> NA
#   split_covs(x)          "a;b" -> c("a", "b"); NA or "" -> character(0)
#   read_dataset(name, ...)  tests/reference/data/<name>.csv (names kept as they are, no factors;
#                          ... goes to read.csv); name "fev" reads the fev data (read_fev)
#   read_fev()             fev_data of the R package mmrm (tests/reference/data/fev/) in the
#                          long layout of the other datasets: post-baseline rows VIS1..VIS4,
#                          value = FEV1, baseline = FEV1 at visit "baseline", covariates RACE, SEX
#   read_lmm_dataset(name) read_dataset with "" -> NA and subject_id as character (LMM programs)
#   ordered_visits(raw)    the visits of a dataset in visit_index order
#   c_sorted_factor(x)     factor with the non-missing values sorted in the C locale as levels
#                          (Python sorts strings by code point); first level the reference
#   syntactic_copies(raw, covs)
#                          copy the covariate columns to syntactic names .cov1, .cov2, ... (nlme
#                          rebuilds formulas from variable names, so `Age (years)` would be
#                          parsed as a call); returns list(raw, safe = the new names)
#   prepare_post_baseline(raw, ds, outcome, safe, response, needed)
#                          rows of one MMRM fit: post-baseline rows of `outcome` with an observed
#                          response and complete `needed` columns; visit a factor in visit_index
#                          order, visit_k = 1..k, arm with the control first, character/logical
#                          covariates c_sorted_factor; sorted by subject_id, visit_k
#   complete_covariates(d, covs)
#                          drop every subject with a missing covariate (LMM programs)
#   prepare_lmm(d, covs, control, treatment, visits)
#                          arm (control first), visit, subject_id and character covariates as
#                          factors for lmer
#   bq(x), rhs_covariates(covs)
#                          backquoted covariate names; "`a` + `b` + " for a formula right-hand side
#
# lmer (lme4 / lmerTest)
#   tight_control(rhobeg)  lmerControl: bobyqa to a trust-region radius of 1e-12
#   fit_lmer(f, d)         REML lmerTest::lmer with tight_control, restarted from its optimum
#                          with a small initial radius until the deviance stops improving
#
# gls (nlme) with a tight optimum
#   tight                  glsControl with tight tolerances (created on first use)
#   fd_args, fd_args_check numDeriv settings in the scaled natural parameters: step 1e-2 (and
#                          3e-3 for the step check), six Richardson steps
#   heterogeneous          which covariance structures have varIdent(form = ~ 1 | visit)
#   correlation_for(structure, k, value, fixed), weights_for(structure, k, value, fixed)
#                          nlme structures: us corSymm, cs/csh corCompSymm, ar1/ar1h corAR1,
#                          toep corARMA(p = k - 1, q = 0), all on ~ visit_k | subject_id;
#                          sp_pow/sp_powh corCAR1(form = ~ week | subject_id)
#   fit_gls(fml, dat, structure, k, cor_value, var_value, fixed)
#                          REML gls, started at (or fixed at) the given structure values
#   fit_gls_tight(fml, dat, structure, k)
#                          fit_gls, then refitted from its own optimum (at most 5 times) until
#                          the log-likelihood stops moving
#   fitted_sigma(fit, structure, k, levels, weeks)
#                          residual covariance of a subject observed at every visit
#   gls_values(Sigma, structure, k, levels)
#                          gls structure values reproducing Sigma up to sigma^2 (not sp_pow(h))
#   sigma_map(structure, k)
#                          natural parameters theta <-> Sigma and the size of each parameter
#                          (the unit of the finite-difference steps), for us .. toep
#   make_reml(X, y, subject, pos)
#                          the REML deviance (-2 log-likelihood, nlme's scale) as a function of
#                          Sigma, written out from the model definition; also beta and Phi
#   scaled_deviance(reml, map, theta, scale)
#                          deviance as a function of the scaled displacement u: theta + scale u
#   polish(reml, map, theta, scale, flat_steps)
#                          Newton steps with step halving on the deviance (numDeriv gradient and
#                          Hessian); flat_steps selects the stopping rule (see the function)
#   make_satterthwaite(reml, map, theta, scale, args), satterthwaite_df(L, ...)
#                          Satterthwaite df of a contrast l (or of the rows of L):
#                          2 (l' Phi l)^2 / (g' W g), W = 2 H^-1, H and g by numDeriv

# ==== Paths and output ==========================================================================

data_dir <- file.path("tests", "reference", "data")
out_dir <- file.path("tests", "reference", "output")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

write_out <- function(rows, name) {
  out <- do.call(rbind, rows)
  # 17 significant digits: the Python tests compare against full double precision
  # (write.csv alone keeps only 15).
  for (col in names(out)) {
    if (is.double(out[[col]])) {
      out[[col]] <- ifelse(is.na(out[[col]]), NA, sprintf("%.17g", out[[col]]))
    }
  }
  write.csv(out, file.path(out_dir, name), row.names = FALSE, na = "", quote = TRUE)
  cat(sprintf("wrote %s (%d rows)\n", name, nrow(out)))
}

write_session <- function(file, program, packages, extra = NULL) {
  writeLines(c(
    paste("# Versions used by tests/reference", program, sep = "/"),
    R.version.string,
    vapply(packages, function(p) paste(p, as.character(packageVersion(p))), character(1)),
    extra,
    "", capture.output(sessionInfo())
  ), file.path(out_dir, file))
}

# ==== Data preparation ==========================================================================

read_index <- function() {
  read.csv(file.path(data_dir, "datasets.csv"), stringsAsFactors = FALSE, na.strings = "",
           colClasses = "character", check.names = FALSE)
}

split_covs <- function(x) {
  if (is.na(x) || x == "") character(0) else strsplit(x, ";", fixed = TRUE)[[1]]
}

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

read_dataset <- function(name, ...) {
  if (name == "fev") return(read_fev())
  read.csv(file.path(data_dir, paste0(name, ".csv")), check.names = FALSE,
           stringsAsFactors = FALSE, ...)
}

read_lmm_dataset <- function(name) {
  raw <- read_dataset(name, na.strings = "")
  raw$subject_id <- as.character(raw$subject_id)
  raw
}

ordered_visits <- function(raw) {
  unique(raw[order(raw$visit_index), c("visit", "visit_index")])$visit
}

c_sorted_factor <- function(x) factor(x, levels = sort(unique(x[!is.na(x)]), method = "radix"))

syntactic_copies <- function(raw, covs) {
  safe <- if (length(covs) == 0) character(0) else paste0(".cov", seq_along(covs))
  stopifnot(!any(safe %in% names(raw)))
  for (i in seq_along(covs)) raw[[safe[i]]] <- raw[[covs[i]]]
  list(raw = raw, safe = safe)
}

prepare_post_baseline <- function(raw, ds, outcome, safe, response = "change",
                                  needed = c("baseline", safe)) {
  dat <- raw[raw$outcome == outcome & raw$visit != ds$baseline_visit & !is.na(raw[[response]]), ]
  dat <- dat[complete.cases(dat[, needed, drop = FALSE]), ]
  visit_levels <- unique(dat$visit[order(dat$visit_index)])
  dat$visit <- factor(dat$visit, levels = visit_levels)
  dat$visit_k <- as.integer(dat$visit)
  dat$arm <- factor(dat$arm, levels = c(ds$control, ds$treatment))
  for (cv in safe) {
    if (is.character(dat[[cv]]) || is.logical(dat[[cv]])) dat[[cv]] <- c_sorted_factor(dat[[cv]])
  }
  dat[order(dat$subject_id, dat$visit_k), ]
}

complete_covariates <- function(d, covs) {
  if (length(covs) == 0) return(d)
  bad <- unique(d$subject_id[!stats::complete.cases(d[, covs, drop = FALSE])])
  d[!(d$subject_id %in% bad), , drop = FALSE]
}

prepare_lmm <- function(d, covs, control, treatment, visits) {
  d$arm <- factor(d$arm, levels = c(control, treatment))
  d$visit <- factor(d$visit, levels = visits)
  d$subject_id <- factor(d$subject_id)
  for (cv in covs) {
    if (is.character(d[[cv]]) || is.logical(d[[cv]])) {
      d[[cv]] <- c_sorted_factor(as.character(d[[cv]]))
    }
  }
  d
}

# Covariate names may contain spaces or capitals: quote them in formulas.
bq <- function(x) paste0("`", gsub("`", "\\\\`", x), "`")

rhs_covariates <- function(covs) {
  if (length(covs) == 0) "" else paste0(paste(bq(covs), collapse = " + "), " + ")
}

# ==== lmer ======================================================================================

# lme4's default optimizer tolerances stop where the REML deviance is flat to ~1e-7, leaving
# variance components off by up to ~3e-4 relative (seen on weightbearing with a random slope).
# bobyqa is run to a final trust-region radius of 1e-12 and then restarted from its optimum
# with a small initial radius until the deviance stops improving.
tight_control <- function(rhobeg = NULL) {
  opt <- list(rhoend = 1e-12, maxfun = 1e6)
  if (!is.null(rhobeg)) opt$rhobeg <- rhobeg
  lmerControl(optimizer = "bobyqa", optCtrl = opt)
}

fit_lmer <- function(f, d) {
  m <- lmerTest::lmer(f, data = d, REML = TRUE, control = tight_control())
  for (restart in 1:5) {
    again <- lmerTest::lmer(f, data = d, REML = TRUE, control = tight_control(1e-4),
                            start = list(theta = getME(m, "theta")))
    gain <- as.numeric(logLik(again)) - as.numeric(logLik(m))
    if (gain > 0) m <- again
    if (gain < 1e-10) break
  }
  m
}

# ==== gls with a tight optimum ==================================================================

# gls hands its parameters to nlminb with the default relative tolerance (msTol is not passed
# on), hence the refits and the Newton polishing below. `tight` is a global object because the
# gls calls refer to it by name (emmeans may re-evaluate a fit's call); it is a promise, created
# on first use, so that sourcing this file needs no nlme.
delayedAssign("tight", glsControl(
  maxIter = 500, msMaxIter = 1000, tolerance = 1e-12, msTol = 1e-14, natural = FALSE,
  returnObject = TRUE
))

fd_args <- list(eps = 1e-2, r = 6)
fd_args_check <- list(eps = 3e-3, r = 6)

heterogeneous <- c(us = TRUE, cs = FALSE, csh = TRUE, ar1 = FALSE, ar1h = TRUE, toep = FALSE,
                   sp_pow = FALSE, sp_powh = TRUE)

correlation_for <- function(structure, k, value = NULL, fixed = FALSE) {
  if (k == 1) return(NULL)
  form <- if (structure %in% c("sp_pow", "sp_powh")) ~ week | subject_id else
    ~ visit_k | subject_id
  # Without a value each constructor picks its own default start.
  make <- function(ctor, ...) {
    if (is.null(value)) ctor(form = form, fixed = fixed, ...)
    else ctor(value, form = form, fixed = fixed, ...)
  }
  switch(structure,
    us = make(corSymm),
    cs = , csh = make(corCompSymm),
    ar1 = , ar1h = make(corAR1),
    toep = make(corARMA, p = k - 1, q = 0),
    sp_pow = , sp_powh = make(corCAR1)
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

fit_gls_tight <- function(fml, dat, structure, k) {
  fit <- fit_gls(fml, dat, structure, k)
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
  fit
}

# nlme's own correlation matrix for a subject observed at every visit (weeks: the week of each
# visit, needed by sp_pow(h)), scaled by sigma^2 and the varIdent ratios.
fitted_sigma <- function(fit, structure, k, levels, weeks = NULL) {
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
    if (!is.null(weeks)) fake$week <- weeks
    cs2 <- Initialize(correlation_for(structure, k, coef(cs, unconstrained = FALSE)), fake)
    corr <- corMatrix(cs2)
    if (is.list(corr)) corr <- corr[[1]]
  }
  fit$sigma^2 * outer(sd, sd) * corr
}

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

# Natural parameters: variances, covariances (us) and correlations; their size is the variance,
# the product of the standard deviations, and 1.
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
# Returns dev = Inf where Sigma is not finite or not positive definite.
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

scaled_deviance <- function(reml, map, theta, scale) {
  function(u) reml(map$sigma(theta + scale * u))$dev
}

# Newton steps with step halving on the REML deviance, from the gls optimum. Stopping rule:
#   flat_steps = FALSE: stop once the predicted decrease (Newton decrement) is below 1e-12.
#   flat_steps = TRUE: once it is below 1e-10 the deviance can no longer tell the points apart
#     (its rounding error is ~1e-13), so full Newton steps are then taken as long as they
#     shrink the gradient.
polish <- function(reml, map, theta, scale, flat_steps = FALSE) {
  zero <- rep(0, length(theta))
  for (iter in 1:20) {
    dev <- scaled_deviance(reml, map, theta, scale)
    g <- numDeriv::grad(dev, zero, method.args = fd_args)
    H <- numDeriv::hessian(dev, zero, method.args = fd_args)
    if (min(eigen(H, symmetric = TRUE, only.values = TRUE)$values) <= 0) {
      stop("REML Hessian not positive definite at the gls optimum")
    }
    step <- -solve(H, g)
    decrement <- sum(-g * step)
    if (!flat_steps && decrement < 1e-12) break
    if (flat_steps && decrement < 1e-10) {
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

# Satterthwaite df at theta: the Hessian of the deviance and the gradient of l' Phi l are both
# taken in the scaled displacement u (a linear map of theta, so the df are those of theta).
# make_satterthwaite computes W = 2 H^-1 once and returns the df as a function of l. Stops if
# the Hessian is not positive definite.
make_satterthwaite <- function(reml, map, theta, scale, args = fd_args) {
  dev <- scaled_deviance(reml, map, theta, scale)
  zero <- rep(0, length(theta))
  hess <- numDeriv::hessian(dev, zero, method.args = args)
  if (min(eigen(hess, symmetric = TRUE, only.values = TRUE)$values) <= 0) {
    stop("REML Hessian not positive definite")
  }
  W <- 2 * solve(hess)
  phi <- reml(map$sigma(theta))$phi
  function(l) {
    quad <- function(u) as.numeric(t(l) %*% reml(map$sigma(theta + scale * u))$phi %*% l)
    g <- numDeriv::grad(quad, zero, method.args = args)
    2 * as.numeric(t(l) %*% phi %*% l)^2 / as.numeric(t(g) %*% W %*% g)
  }
}

satterthwaite_df <- function(L, reml, map, theta, scale, args = fd_args) {
  sat <- make_satterthwaite(reml, map, theta, scale, args)
  vapply(seq_len(nrow(L)), function(i) sat(L[i, ]), numeric(1))
}
