# Reference results for trialflow's sensitivity analyses: conditional-mean imputation (CMI)
# under reference-based and delta-adjusted strategies with jackknife standard errors, and
# responder analyses. Written from the definitions below with nlme::gls and base R (stats); no
# multiple-imputation package is used.
#
# Run from the package root:  Rscript tests/reference/make_sensitivity_references.R
#
# Shared helpers (data reading, covariate name copies, gls fitting with tight tolerances, the
# REML deviance written out from the model definition, Newton polishing, session file) come from
# tests/reference/reference_common.R.
#
# ==== Part 1: conditional-mean imputation with jackknife standard errors ======================
# The method is that of conditional mean imputation (von Hippel & Bartlett 2021; Wolbers et al.
# 2022): the imputation model's parameters are estimated once by REML, every missing value is
# replaced by its conditional expectation given the subject's observed values under the chosen
# strategy, the completed data are analysed by ANCOVA at each visit, and the standard error is
# obtained by the leave-one-subject-out jackknife of the whole procedure.
#
# Cases (datasets.csv gives the control and treatment arm and the covariates):
#   sim_dropout         pain, grip      covariate age        models main and by_visit
#   exercise_education  pain_vas        covariates age, sex  model main
#   sim_catcov          function        covariates age, Site, sex (Site categorical, 3 levels)
#                                                             model main
#
# Analysis set: the randomized subjects (every subject with a row of the outcome) with a
# non-missing baseline and complete covariates, INCLUDING subjects without any observed
# post-baseline change. Response: change = value - baseline. Post-baseline visits are taken in
# visit_index order and numbered t = 1..k. A subject x visit grid holds every analysis-set
# subject at every post-baseline visit; a cell is observed when the dataset has a row with a
# non-missing change there (missing visits may be absent rows or NA values).
#
# Imputation model (REML, nlme::gls) on the observed cells:
#   main      change ~ baseline + <covariates> + arm * visit
#   by_visit  change ~ baseline * visit + age + arm * visit            (sim_dropout only)
# with an unstructured covariance corSymm(form = ~ visit_k | subject_id) +
# varIdent(form = ~ 1 | visit). arm has the control arm as first level, visit the post-baseline
# visits in order; categorical covariates are treatment-coded with the first level (sorted in
# the C locale) as reference. The design is built by model.matrix on the complete grid (same
# factor levels for the fit and for prediction) and gls is fitted to the observed rows of that
# matrix (change ~ 0 + X). Covariate columns are copied to syntactic names (.cov1, ...).
# Full-data fit: gls with tight tolerances refitted from its own optimum (fit_gls_tight), then
# Newton steps on the REML deviance written out from the model definition (make_reml, polish),
# so that beta and Sigma are accurate to ~1e-8; beta = the GLS estimate at the polished Sigma.
# Leave-one-out refits: fit_gls_tight only (restarted from the full-data covariance should it
# fail from nlme's default start); beta = coef(fit), Sigma = the k x k covariance of a subject
# observed at every visit (fitted_sigma). Their covariance parameters are off by ~2e-6 relative
# and the leave-one-out estimates by up to ~7e-7; with every leave-one-out fit polished as well
# (sim_dropout pain, main model) the jackknife standard errors move by at most 2.3e-7 (5e-7
# relative), at ten times the run time.
#
# For subject i and visit t let x_it be the subject's design row:
#   mu_own[i, t] = x_it' beta                  (the subject's own arm)
#   mu_ref[i, t] = x_it' beta with arm set to the control arm (arm and arm:visit columns zero;
#                  baseline, covariates, visit and their interactions unchanged)
#   last[i]      = position of the last observed post-baseline visit (0 if none)
# Subject i dropped out if last[i] < k. Visits t <= last[i] are before discontinuation (missing
# values there are imputed under MAR), visits t > last[i] are after discontinuation.
# Strategy mean vector m_i (length k). Subjects who did not drop out use m = mu_own under every
# strategy. For subjects who dropped out (both arms; for control subjects mu_ref = mu_own):
#   mar                             m = mu_own
#   jump_to_reference               m[t] = mu_own[t] (t <= last), mu_ref[t] (t > last)
#   copy_reference                  m = mu_ref at every visit
#   copy_increments_from_reference  m[t] = mu_own[t] (t <= last),
#                                   mu_own[last] + mu_ref[t] - mu_ref[last] (t > last)
#   last_mean_carried_forward       m[t] = mu_own[t] (t <= last), mu_own[last] (t > last)
# A subject without any observed visit (last = 0) gets mu_ref at every visit under
# jump_to_reference and copy_increments_from_reference. last_mean_carried_forward is not
# defined for such a subject: when the analysis set has a dropped-out subject without any
# observed visit, its rows have no estimate and the note "not applicable".
# Conditional mean imputation: with O the observed and M the missing visits of subject i,
#   y_M = m_M + Sigma_MO Sigma_OO^-1 (y_O - m_O)        (O empty: y_M = m_M);
# observed values are kept.
# Delta adjustment (strategy mar, rows with delta = 1.5): after imputation, delta is added to
# every imputed value after discontinuation (t > last) of treatment-arm subjects. Rows with
# delta = 0 are the plain strategies.
# Analysis: at each visit t, lm(change_t ~ arm + baseline + <covariates>) over the analysis set
# (all subjects, completed data); estimate = the coefficient of the treatment arm (treatment
# minus control).
# Jackknife: for each subject j of the analysis set (n subjects), subject j is removed entirely,
# the imputation model is refitted on the remaining observed cells, the remaining subjects are
# re-imputed and the per-visit lm refitted: theta_(-j).
#   std_error = sqrt((n - 1) / n * sum_j (theta_(-j) - mean_j theta_(-j))^2)
# If a leave-one-out sample leaves a design column without information (e.g. a Site level with
# no observed post-baseline cell), the column is dropped from the gls fit (its coefficient is
# taken as 0 when imputing; a column aliased with the others would be dropped the same way),
# and an all-zero column is dropped from the lm. The full-data fit follows the same rule.
# n_dropped_column_samples counts the leave-one-out samples in which a column was dropped from
# either model. (In sim_catcov the Site levels A, B, C have 26, 29 and 15 subjects, all with
# observed post-baseline values, so no sample loses a level and the count is 0 everywhere.)
#
# Output tests/reference/output/sensitivity_cmi.csv:
#   dataset, outcome, model, strategy, delta, visit, estimate, std_error, n,
#   n_dropped_column_samples, note
#
# ==== Part 2: responder analyses ===============================================================
# Cases (the last post-baseline visit of each dataset):
#   exercise_education  pain_vas         week26   lower is better
#   weightbearing       six_minute_walk  week12   higher is better
# Population: the subjects with a non-missing baseline value of the outcome. A subject whose
# value at the visit is missing (NA or no row) is a non-responder. Responder definitions:
#   pain_vas         percent30  (baseline - value) / baseline >= 0.30  (baseline 0: non-responder)
#                    percent50  (baseline - value) / baseline >= 0.50  (baseline 0: non-responder)
#                    change2    baseline - value >= 2
#   six_minute_walk  change30   value - baseline >= 30
# The comparisons are made on the doubles as read (no tolerance); the program prints any
# subject within 1e-9 of a threshold.
# Per arm: n, responders, proportion p. Risk difference RD = p_treatment - p_control with the
# Wald 95% CI RD -/+ qnorm(0.975) sqrt(p_t (1 - p_t) / n_t + p_c (1 - p_c) / n_c).
# Logistic regression glm(responder ~ arm + baseline, family = binomial) (arm: control first;
# IRLS run to a relative deviance change of 1e-14): odds ratio exp(b_arm), Wald CI
# exp(b_arm -/+ qnorm(0.975) se) (confint.default), Wald p-value 2 pnorm(-|b_arm / se|).
# NNT = 1 / RD with limits from the RD limits (Altman, BMJ 1998): nnt_ci_lower = 1 / rd_ci_upper,
# nnt_ci_upper = 1 / rd_ci_lower (when the RD CI spans 0 the two have opposite signs: NNT
# (benefit) 1 / rd_ci_upper to infinity to NNT (harm) 1 / |rd_ci_lower|).
#
# Output tests/reference/output/responders.csv:
#   dataset, outcome, visit, responder, n_treatment, n_control, responders_treatment,
#   responders_control, risk_difference, rd_ci_lower, rd_ci_upper, odds_ratio, or_ci_lower,
#   or_ci_upper, or_p_value, nnt, nnt_ci_lower, nnt_ci_upper
#
# Numbers in both files are written with 15 significant digits. R and package versions:
# tests/reference/output/R_session_sensitivity.txt.

source(file.path("tests", "reference", "reference_common.R"))

suppressPackageStartupMessages({
  library(nlme)
  library(numDeriv)
})

started <- proc.time()

# write_out with 15 significant digits.
write_out_15 <- function(rows, name) {
  out <- do.call(rbind, rows)
  for (col in names(out)) {
    if (is.double(out[[col]])) {
      out[[col]] <- ifelse(is.na(out[[col]]), NA, sprintf("%.15g", out[[col]]))
    }
  }
  write.csv(out, file.path(out_dir, name), row.names = FALSE, na = "", quote = TRUE)
  cat(sprintf("wrote %s (%d rows)\n", name, nrow(out)))
}

# ==== Part 1 ====================================================================================

strategies <- c("mar", "jump_to_reference", "copy_reference", "copy_increments_from_reference",
                "last_mean_carried_forward")
# Output rows in this order: (strategy, delta).
variants <- data.frame(
  strategy = c("mar", "mar", strategies[-1]),
  delta = c(0, 1.5, rep(0, length(strategies) - 1)),
  stringsAsFactors = FALSE
)

cmi_cases <- list(
  list(dataset = "sim_dropout", outcome = "pain", models = c("main", "by_visit")),
  list(dataset = "sim_dropout", outcome = "grip", models = c("main", "by_visit")),
  list(dataset = "exercise_education", outcome = "pain_vas", models = "main"),
  list(dataset = "sim_catcov", outcome = "function", models = "main")
)

# The analysis set of one outcome and its subject x visit grid.
#   subj: one row per subject (sorted by subject_id): subject_id, arm, baseline, covariates
#   grid: subject-major, visit within subject: subject_id, arm, baseline, covariates, visit,
#         visit_k, change (NA where not observed)
#   Y:    n x k matrix of change (NA where not observed)
build_case <- function(raw, ds, outcome, safe) {
  d <- raw[raw$outcome == outcome, ]
  base <- d[d$visit == ds$baseline_visit, ]
  stopifnot(!anyDuplicated(base$subject_id))
  post <- d[d$visit != ds$baseline_visit, ]
  visit_levels <- unique(post$visit[order(post$visit_index)])
  k <- length(visit_levels)

  keep <- !is.na(base$arm) & base$arm %in% c(ds$control, ds$treatment) & !is.na(base$baseline)
  for (cv in safe) keep <- keep & !is.na(base[[cv]]) & !(base[[cv]] %in% "")
  subj <- base[keep, c("subject_id", "arm", "baseline", safe), drop = FALSE]
  subj <- subj[order(subj$subject_id, method = "radix"), , drop = FALSE]
  rownames(subj) <- NULL
  subj$arm <- factor(subj$arm, levels = c(ds$control, ds$treatment))
  for (cv in safe) {
    if (is.character(subj[[cv]]) || is.logical(subj[[cv]])) {
      subj[[cv]] <- c_sorted_factor(as.character(subj[[cv]]))
    }
  }
  n <- nrow(subj)

  # Observed change of each subject at each post-baseline visit.
  Y <- matrix(NA_real_, n, k, dimnames = list(subj$subject_id, visit_levels))
  obs_rows <- post[!is.na(post$change) & post$subject_id %in% subj$subject_id, ]
  stopifnot(!anyDuplicated(obs_rows[, c("subject_id", "visit")]))
  Y[cbind(match(obs_rows$subject_id, subj$subject_id), match(obs_rows$visit, visit_levels))] <-
    obs_rows$change

  grid <- subj[rep(seq_len(n), each = k), , drop = FALSE]
  rownames(grid) <- NULL
  grid$visit <- factor(rep(visit_levels, times = n), levels = visit_levels)
  grid$visit_k <- rep(seq_len(k), times = n)
  grid$change <- as.numeric(t(Y))

  observed <- !is.na(Y)
  last <- apply(observed, 1, function(o) if (any(o)) max(which(o)) else 0L)
  list(subj = subj, grid = grid, Y = Y, k = k, n = n, visit_levels = visit_levels,
       last = last, treated = subj$arm == ds$treatment)
}

model_formula <- function(model, safe) {
  rhs <- switch(model,
    main = paste(c("baseline", safe, "arm * visit"), collapse = " + "),
    by_visit = paste(c("baseline * visit", safe, "arm * visit"), collapse = " + ")
  )
  as.formula(paste("~", rhs))
}

# Columns of X (rows: the observed cells of the fit) that carry no information: all-zero
# columns, then any column aliased with the others (pivoted QR). Returns their indices.
uninformative_columns <- function(X) {
  zero <- which(colSums(X != 0) == 0)
  rest <- setdiff(seq_len(ncol(X)), zero)
  q <- qr(X[, rest, drop = FALSE], tol = 1e-10)
  aliased <- if (q$rank < length(rest)) rest[q$pivot[(q$rank + 1):length(rest)]] else integer(0)
  sort(c(zero, aliased))
}

# REML fit of the imputation model to the observed cells of the subjects `use` (indices into
# subj). Returns beta (full length, 0 for dropped columns), Sigma (k x k) and the dropped columns.
# Should a gls fit from nlme's default start fail, it is restarted from `start` (a covariance
# matrix; the full-data estimate for leave-one-out samples).
fit_imputation <- function(cs, Xg, use, polish_fit, start = NULL) {
  k <- cs$k
  in_use <- rep(seq_len(cs$n), each = k) %in% use
  rows <- which(in_use & !is.na(cs$grid$change))
  X <- Xg[rows, , drop = FALSE]
  dropped <- uninformative_columns(X)
  kept <- setdiff(seq_len(ncol(Xg)), dropped)
  dat <- data.frame(change = cs$grid$change[rows], subject_id = cs$grid$subject_id[rows],
                    visit = cs$grid$visit[rows], visit_k = cs$grid$visit_k[rows])
  dat$X <- X[, kept, drop = FALSE]
  fml <- change ~ 0 + X
  fit <- tryCatch(fit_gls_tight(fml, dat, "us", k), error = function(e) NULL)
  if (is.null(fit) && !is.null(start)) {
    # Fallback: start from the full-data covariance.
    values <- gls_values(start, "us", k, cs$visit_levels)
    fit <- fit_gls(fml, dat, "us", k, values$cor, values$var)
  }
  if (is.null(fit)) stop("gls failed")
  Sigma <- fitted_sigma(fit, "us", k, cs$visit_levels)
  b <- as.numeric(coef(fit))
  if (polish_fit) {
    reml <- make_reml(dat$X, dat$change, dat$subject_id, dat$visit_k)
    stopifnot(abs(-reml(Sigma)$dev / 2 - as.numeric(logLik(fit))) < 1e-8)
    map <- sigma_map("us", k)
    theta <- polish(reml, map, map$theta(Sigma), map$scale(Sigma))
    Sigma_p <- map$sigma(theta)
    stopifnot(-reml(Sigma_p)$dev / 2 >= as.numeric(logLik(fit)) - 1e-9)
    Sigma <- Sigma_p
    b <- reml(Sigma)$beta
  }
  beta <- numeric(ncol(Xg))
  beta[kept] <- b
  list(beta = beta, Sigma = Sigma, dropped = dropped, fit = fit)
}

# Strategy mean matrices (n x k) for the subjects `use`.
strategy_means <- function(strategy, mu_own, mu_ref, last, k) {
  m <- mu_own
  if (strategy == "mar") return(m)
  for (i in which(last < k)) {
    l <- last[i]
    after <- seq_len(k) > l
    m[i, ] <- switch(strategy,
      jump_to_reference = ifelse(after, mu_ref[i, ], mu_own[i, ]),
      copy_reference = mu_ref[i, ],
      copy_increments_from_reference = if (l == 0) mu_ref[i, ] else
        ifelse(after, mu_own[i, l] + mu_ref[i, ] - mu_ref[i, l], mu_own[i, ]),
      last_mean_carried_forward = if (l == 0) NA else ifelse(after, mu_own[i, l], mu_own[i, ])
    )
  }
  m
}

# Conditional means of the missing values given the observed ones.
impute <- function(Y, m, Sigma) {
  out <- Y
  for (i in seq_len(nrow(Y))) {
    o <- which(!is.na(Y[i, ]))
    mi <- which(is.na(Y[i, ]))
    if (length(mi) == 0) next
    out[i, mi] <- if (length(o) == 0) m[i, mi] else
      m[i, mi] + Sigma[mi, o, drop = FALSE] %*%
        solve(Sigma[o, o, drop = FALSE], Y[i, o] - m[i, o])
  }
  out
}

# Per-visit ANCOVA estimates (treatment - control) of every variant for the subjects `use`.
# Returns a list: est (variants x k matrix), lm_dropped (TRUE if a column was dropped).
analyse_sample <- function(cs, Xg, Xg_ref, Z, arm_col, use, fitted, lmcf_ok) {
  k <- cs$k
  grid_rows <- as.vector(t(outer((use - 1) * k, seq_len(k), "+")))
  mu_own <- matrix(Xg[grid_rows, , drop = FALSE] %*% fitted$beta, ncol = k, byrow = TRUE)
  mu_ref <- matrix(Xg_ref[grid_rows, , drop = FALSE] %*% fitted$beta, ncol = k, byrow = TRUE)
  Y <- cs$Y[use, , drop = FALSE]
  last <- cs$last[use]
  treated <- cs$treated[use]
  Zs <- Z[use, , drop = FALSE]
  zero <- colSums(Zs != 0) == 0
  Zs <- Zs[, !zero, drop = FALSE]
  q <- qr(Zs)
  est <- matrix(NA_real_, nrow(variants), k)
  for (v in seq_len(nrow(variants))) {
    strategy <- variants$strategy[v]
    if (strategy == "last_mean_carried_forward" && !lmcf_ok) next
    completed <- impute(Y, strategy_means(strategy, mu_own, mu_ref, last, k), fitted$Sigma)
    if (variants$delta[v] != 0) {
      after <- outer(last, seq_len(k), "<") & treated
      completed[after] <- completed[after] + variants$delta[v]
    }
    est[v, ] <- qr.coef(q, completed)[match(arm_col, colnames(Zs)), ]
  }
  list(est = est, lm_dropped = any(zero))
}

run_cmi <- function(cs, ds, model, safe) {
  rhs <- model_formula(model, safe)
  Xg <- model.matrix(rhs, cs$grid)
  grid_ref <- cs$grid
  grid_ref$arm[] <- ds$control
  Xg_ref <- model.matrix(rhs, grid_ref)
  stopifnot(identical(colnames(Xg), colnames(Xg_ref)))
  Z <- model.matrix(as.formula(paste("~", paste(c("arm", "baseline", safe), collapse = " + "))),
                    cs$subj)
  arm_col <- paste0("arm", ds$treatment)
  lmcf_ok <- !any(cs$last == 0)
  n <- cs$n
  all_subjects <- seq_len(n)

  full <- fit_imputation(cs, Xg, all_subjects, polish_fit = TRUE)
  if (length(full$dropped) > 0) {
    cat("  full-data fit: dropped", paste(colnames(Xg)[full$dropped], collapse = ", "), "\n")
  }
  res <- analyse_sample(cs, Xg, Xg_ref, Z, arm_col, all_subjects, full, lmcf_ok)
  # The analysis model is the lm of the definition: check one visit of the mar completion.
  mu_own <- matrix(Xg %*% full$beta, ncol = cs$k, byrow = TRUE)
  completed <- impute(cs$Y, mu_own, full$Sigma)
  chk <- cs$subj
  chk$y <- completed[, cs$k]
  lm_chk <- lm(as.formula(paste("y ~", paste(c("arm", "baseline", safe), collapse = " + "))),
               data = chk)
  stopifnot(abs(coef(lm_chk)[[arm_col]] - res$est[1, cs$k]) < 1e-10)

  jack <- array(NA_real_, c(n, nrow(variants), cs$k))
  n_dropped <- 0L
  for (j in all_subjects) {
    use <- all_subjects[-j]
    fitted <- fit_imputation(cs, Xg, use, polish_fit = FALSE, start = full$Sigma)
    r <- analyse_sample(cs, Xg, Xg_ref, Z, arm_col, use, fitted, lmcf_ok)
    if (length(fitted$dropped) > 0 || r$lm_dropped) n_dropped <- n_dropped + 1L
    jack[j, , ] <- r$est
  }
  se <- apply(jack, c(2, 3), function(th) sqrt((n - 1) / n * sum((th - mean(th))^2)))

  rows <- list()
  for (v in seq_len(nrow(variants))) {
    na_row <- variants$strategy[v] == "last_mean_carried_forward" && !lmcf_ok
    rows[[v]] <- data.frame(
      dataset = ds$dataset, outcome = cs$outcome, model = model,
      strategy = variants$strategy[v], delta = variants$delta[v], visit = cs$visit_levels,
      estimate = res$est[v, ], std_error = se[v, ], n = n,
      n_dropped_column_samples = n_dropped, note = if (na_row) "not applicable" else "",
      stringsAsFactors = FALSE
    )
  }
  do.call(rbind, rows)
}

index <- read_index()
cmi_out <- list()
for (case in cmi_cases) {
  ds <- index[index$dataset == case$dataset, ]
  covs <- split_covs(ds$covariates)
  sc <- syntactic_copies(read_dataset(case$dataset, na.strings = c("", "NA")), covs)
  cs <- build_case(sc$raw, ds, case$outcome, sc$safe)
  cs$outcome <- case$outcome
  for (model in case$models) {
    t0 <- proc.time()[["elapsed"]]
    cmi_out[[length(cmi_out) + 1]] <- run_cmi(cs, ds, model, sc$safe)
    cat(sprintf("%s / %s / %s: n = %d, %d dropped out, %.1f s\n", case$dataset, case$outcome,
                model, cs$n, sum(cs$last < cs$k), proc.time()[["elapsed"]] - t0))
  }
}
write_out_15(cmi_out, "sensitivity_cmi.csv")

# ==== Part 2 ====================================================================================

responder_cases <- list(
  list(dataset = "exercise_education", outcome = "pain_vas", visit = "week26",
       rules = list(
         percent30 = function(b, y) ifelse(b == 0, FALSE, (b - y) / b >= 0.30),
         percent50 = function(b, y) ifelse(b == 0, FALSE, (b - y) / b >= 0.50),
         change2 = function(b, y) b - y >= 2
       ),
       margins = list(
         percent30 = function(b, y) ifelse(b == 0, Inf, (b - y) / b - 0.30),
         percent50 = function(b, y) ifelse(b == 0, Inf, (b - y) / b - 0.50),
         change2 = function(b, y) b - y - 2
       )),
  list(dataset = "weightbearing", outcome = "six_minute_walk", visit = "week12",
       rules = list(change30 = function(b, y) y - b >= 30),
       margins = list(change30 = function(b, y) y - b - 30))
)

z975 <- qnorm(0.975)
resp_out <- list()
for (case in responder_cases) {
  ds <- index[index$dataset == case$dataset, ]
  raw <- read_dataset(case$dataset, na.strings = c("", "NA"))
  d <- raw[raw$outcome == case$outcome, ]
  # The responder visit is the last post-baseline visit.
  stopifnot(identical(tail(ordered_visits(d), 1), case$visit))
  base <- d[d$visit == ds$baseline_visit & !is.na(d$value), ]
  stopifnot(!anyDuplicated(base$subject_id))
  at <- d[d$visit == case$visit & !is.na(d$value), ]
  stopifnot(!anyDuplicated(at$subject_id))
  pop <- data.frame(subject_id = base$subject_id,
                    arm = factor(base$arm, levels = c(ds$control, ds$treatment)),
                    baseline = base$value, stringsAsFactors = FALSE)
  stopifnot(!anyNA(pop$arm))
  y <- at$value[match(pop$subject_id, at$subject_id)]
  for (rule in names(case$rules)) {
    responder <- case$rules[[rule]](pop$baseline, y)
    responder[is.na(responder)] <- FALSE
    margin <- case$margins[[rule]](pop$baseline, y)
    near <- which(!is.na(margin) & abs(margin) < 1e-9)
    if (length(near) > 0) {
      cat(sprintf("  %s %s: %d subject(s) within 1e-9 of the threshold: %s\n", case$outcome,
                  rule, length(near), paste(pop$subject_id[near], collapse = " ")))
    }
    pop$responder <- as.integer(responder)
    trt <- pop$arm == ds$treatment
    n_t <- sum(trt)
    n_c <- sum(!trt)
    r_t <- sum(pop$responder[trt])
    r_c <- sum(pop$responder[!trt])
    p_t <- r_t / n_t
    p_c <- r_c / n_c
    rd <- p_t - p_c
    se_rd <- sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    rd_lo <- rd - z975 * se_rd
    rd_hi <- rd + z975 * se_rd
    g <- glm(responder ~ arm + baseline, family = binomial, data = pop,
             control = glm.control(epsilon = 1e-14, maxit = 100))
    stopifnot(g$converged)
    arm_col <- paste0("arm", ds$treatment)
    b <- coef(g)[[arm_col]]
    se_b <- sqrt(vcov(g)[arm_col, arm_col])
    ci <- confint.default(g)[arm_col, ]
    stopifnot(abs(ci[[1]] - (b - z975 * se_b)) < 1e-12, abs(ci[[2]] - (b + z975 * se_b)) < 1e-12)
    resp_out[[length(resp_out) + 1]] <- data.frame(
      dataset = case$dataset, outcome = case$outcome, visit = case$visit, responder = rule,
      n_treatment = n_t, n_control = n_c, responders_treatment = r_t, responders_control = r_c,
      risk_difference = rd, rd_ci_lower = rd_lo, rd_ci_upper = rd_hi,
      odds_ratio = exp(b), or_ci_lower = exp(ci[[1]]), or_ci_upper = exp(ci[[2]]),
      or_p_value = 2 * pnorm(-abs(b / se_b)),
      nnt = 1 / rd, nnt_ci_lower = 1 / rd_hi, nnt_ci_upper = 1 / rd_lo,
      stringsAsFactors = FALSE
    )
  }
}
write_out_15(resp_out, "responders.csv")

elapsed <- (proc.time() - started)[["elapsed"]]
cat(sprintf("run time %.1f s\n", elapsed))
write_session("R_session_sensitivity.txt", "make_sensitivity_references.R", c("nlme", "numDeriv"))
