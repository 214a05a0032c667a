# Reference results for trialflow: Kenward-Roger inference for the LMM and subgroup analyses of
# the MMRM. Computed with R lmerTest / pbkrtest / emmeans (part A) and nlme::gls / emmeans /
# numDeriv (part B).
#
# Run from the package root:  Rscript tests/reference/make_subgroup_references.R
#
# Data preparation follows make_references.R (part A) and make_mmrm_references.R (part B):
# arm is a factor with the control (datasets.csv `control`) as first level, visit a factor in
# visit_index order, character covariates are factors with levels sorted in the C locale (first
# level the reference, contr.treatment), subjects with a missing covariate are left out.
# Shared helpers (data preparation, lmer and gls fitting, REML deviance, Newton polishing,
# Satterthwaite df, CSV writing) come from tests/reference/reference_common.R.
#
# ---- Part A: random-intercept LMM with Kenward-Roger (and Satterthwaite) inference ----------
# Datasets sim_dropout, sim_catcov, weightbearing; every outcome. All visits including the
# baseline visit, rows with a non-missing value, REML:
#   lmerTest::lmer(value ~ <covariates> + arm * visit + (1 | subject_id))
# fitted exactly as in make_references.R (bobyqa to rhoend 1e-12, restarted from its optimum
# until the REML log-likelihood stops improving), so the fit is the one of lmm_effects.csv.
# Let beta be the fixed effects, Phi = vcov(m) their REML covariance at the estimated variance
# components, and Phi_A = pbkrtest::vcovAdj(m) the Kenward-Roger (1997) adjusted covariance
# (Phi_A = Phi + 2 Phi [sum_ij W_ij (Q_ij - P_i Phi P_j)] Phi, W the inverse expected information
# of the variance components; the R_ij term is zero because V is linear in them).
#   Treatment effect at post-baseline visit v (difference between arms in the mean change from
#   baseline): l'beta with l the coefficient of arm<treatment>:visit<v>, i.e.
#   (mu[trt,v] - mu[ctl,v]) - (mu[trt,baseline] - mu[ctl,baseline]);
#   std_error = sqrt(l' Phi_A l); df = pbkrtest::Lb_ddf(l, Phi, Phi_A), the KR denominator df
#   m = 4 + (q + 2) / (q rho - 1) with q = 1. The same contrast is also computed by emmeans
#   (lmer.df = "kenward-roger") on the arm x visit grid and must agree.
#   LS means: emmeans(m, ~ arm | visit, lmer.df = "kenward-roger") (numeric covariates at their
#   mean, factor covariates averaged with equal weights), SE from Phi_A, KR df.
#   Type 3 tests: anova(m, type = 3, ddf = "Kenward-Roger") and ddf = "Satterthwaite" (lmerTest).
#   lmerTest builds type 3 hypotheses that do not depend on the contrast coding (SAS-like: the L
#   of a term is orthogonalised against the terms that contain it). For KR it calls
#   pbkrtest::KRmodcomp and reports the scaled statistic F* = lambda F with
#   F = (Lb)'(L Phi_A L')^-1 (Lb) / q, lambda and the den df m of Kenward & Roger (lambda = 1
#   when q = 1). For Satterthwaite it uses the eigen-decomposition method below (with lmerTest's
#   own numerical Hessian of the variance parameters).
#   Effect names are the model terms with backticks removed (e.g. "Age (years)", "arm:visit").
#
# ---- Part B: subgroup analyses of the unstructured MMRM ---------------------------------------
# Post-baseline rows with an observed change and complete baseline, covariates and subgroup, REML:
#   gls(change ~ baseline + <other covariates> + arm * S * visit,
#       correlation = corSymm(form = ~ visit_k | subject_id),
#       weights = varIdent(form = ~ 1 | visit), method = "REML")
# (arm * S * visit = arm + S + visit + arm:S + arm:visit + S:visit + arm:S:visit; visit_k numbers
# the post-baseline visits 1..k.) "Other covariates" are the dataset's covariates without the
# subgroup variable when it is one of them. Cases:
#   sim_catcov          S = sex  (F, M)        other covariates: age, Site
#   sim_catcov          S = Site (A, B, C)     other covariates: age, sex
#   sim_dropout         S = age_group: "<65" if age < 65, ">=65" if age >= 65; the derived
#                       group is not itself a covariate, so continuous age stays in the model
#   exercise_education  S = sex  (F, M)        other covariates: age
# The fit is made tight as in make_mmrm_references.R: gls with tight controls, refitted from its
# optimum, then Newton steps (numDeriv gradient and Hessian) on a REML deviance written out from
# the model definition (make_reml in reference_common.R), and gls refitted with the correlations
# and variance ratios fixed at the polished values.
# Let Sigma be the k x k unstructured covariance, theta its k(k+1)/2 lower-triangle elements,
# Phi(theta) = (X' V(theta)^-1 X)^-1, and W = 2 H^-1 with H the Hessian of the REML deviance
# (-2 log-likelihood) in theta (numDeriv, Richardson, steps scaled by the size of each element).
#   Effect of treatment - control in level s at visit v: l'beta with l the difference of the two
#   arms' LS-mean rows in that (s, v) cell (from emmeans(~ arm | S * visit)); the covariates
#   cancel. std_error = sqrt(l' Phi l); Satterthwaite df = 2 (l' Phi l)^2 / (g' W g), g the
#   gradient of l' Phi(theta) l (numDeriv); 95% CI l'beta -/+ qt(0.975, df) SE;
#   p = 2 pt(-|t|, df). n = subjects of level s with an observed change at visit v (both arms).
#   Interaction tests (treatment-by-subgroup): L has one row e(s_j, v) - e(s_1, v) for each level
#   s_j after the first, where e(s, v) is the effect row above, and
#     test = primary_visit: v = the last visit only, q = levels - 1 rows;
#     test = all_visits:    every post-baseline visit, q = (levels - 1) x visits rows
#                           (H0: the effect is the same in every level at every visit, i.e. all
#                           arm:S and arm:S:visit coefficients are zero).
#   F = (Lb)' (L Phi L')^-1 (Lb) / q, p = pf(F, q, den_df, lower = FALSE).
#   den_df (Fai & Cornelius 1996; SAS DDFM=SATTERTHWAITE, lmerTest): L Phi L' = P D P',
#   nu_i = Satterthwaite df of row i of P'L (formula above, d_i = l_i' Phi l_i);
#   q = 1: den_df = nu_1 (so F = t^2); all nu_i equal: their value; any nu_i <= 2: 2 (lmerTest's
#   rule); else E = sum nu_i / (nu_i - 2) and den_df = 2 E / (E - q).
#   This den_df depends on the basis of the rows of L (F does not); the basis is the one above.
#
# Outputs (tests/reference/output/), numbers with 17 significant digits:
#   lmm_kr_effects.csv    dataset, outcome, contrast, visit, estimate, std_error, df
#   lmm_kr_slope_effects.csv  the same, for the LMM with a correlated random intercept and
#                         slope on week / 12
#   lmm_kr_lsmeans.csv    dataset, outcome, visit, arm, estimate, std_error, df
#   lmm_kr_type3.csv      dataset, outcome, effect, num_df, den_df, F, p_value
#   lmm_sat_type3.csv     dataset, outcome, effect, num_df, den_df, F, p_value
#   subgroup_effects.csv  dataset, outcome, subgroup, level, visit, estimate, std_error, df,
#                         ci_lower, ci_upper, p_value, n
#   subgroup_interaction.csv  dataset, outcome, subgroup, test, num_df, den_df, F, p_value
#   subgroup_fit.csv      dataset, outcome, subgroup, loglik (REML, polished), loglik_check (from
#                         make_reml), loglik_gls (free gls fit), max_abs_gradient, n_obs,
#                         n_subjects, df_step_check (largest relative change of any df when the
#                         finite-difference step is 3e-3 instead of 1e-2), df_emmeans_diff
#                         (largest relative difference to emmeans' Satterthwaite df of the free
#                         gls fit, which uses nlme's less precise apVar)
#   R_session_subgroup.txt  R and package versions

source(file.path("tests", "reference", "reference_common.R"))

suppressPackageStartupMessages({
  library(nlme)
  library(emmeans)
  library(numDeriv)
  library(lme4)
  library(lmerTest)
  library(pbkrtest)
})

start_time <- Sys.time()
emm_options(opt.digits = FALSE, lmerTest.limit = 1e7, pbkrtest.limit = 1e7)

index <- read_index()
index_row <- function(name) index[index$dataset == name, ]

########################################################################################
# Part A
########################################################################################

type3_table <- function(m, ddf, key) {
  a <- anova(m, type = 3, ddf = ddf)
  cbind(key, data.frame(
    effect = gsub("`", "", rownames(a)), num_df = as.numeric(a$NumDF),
    den_df = as.numeric(a$DenDF), F = a[["F value"]], p_value = a[["Pr(>F)"]],
    stringsAsFactors = FALSE))
}

kr_effects <- list(); kr_lsmeans <- list(); kr_type3 <- list(); sat_type3 <- list()
kr_slope <- list()
checks <- list()  # name -> largest discrepancy, printed at the end
note_check <- function(name, value) {
  checks[[name]] <<- max(c(checks[[name]], value), na.rm = TRUE)
}

for (ds in c("sim_dropout", "sim_catcov", "weightbearing")) {
  info <- index_row(ds)
  covs <- split_covs(info$covariates)
  raw <- read_lmm_dataset(ds)
  visits <- ordered_visits(raw)
  post_visits <- setdiff(visits, info$baseline_visit)
  stopifnot(visits[1] == info$baseline_visit)
  for (outcome in unique(raw$outcome)) {
    cat(sprintf("LMM  %s / %s\n", ds, outcome))
    d <- raw[raw$outcome == outcome, , drop = FALSE]
    d <- prepare_lmm(complete_covariates(d, covs), covs, info$control, info$treatment, visits)
    d <- droplevels(d[!is.na(d$value), , drop = FALSE])
    f <- as.formula(paste0("value ~ ", rhs_covariates(covs), "arm * visit + (1 | subject_id)"))
    m <- fit_lmer(f, d)
    key <- data.frame(dataset = ds, outcome = outcome, stringsAsFactors = FALSE)

    beta <- fixef(m)
    V0 <- vcov(m)
    Vadj <- pbkrtest::vcovAdj(m)
    note_check("A: KR SE not smaller than model SE (min of SE_KR / SE - 1, negated)",
               -min(sqrt(diag(as.matrix(Vadj))) / sqrt(diag(as.matrix(V0))) - 1))

    # Interaction coefficient = difference in change from baseline between the arms.
    emm_grid <- emmeans(m, ~ arm * visit, lmer.df = "kenward-roger")
    g <- emm_grid@grid
    for (v in post_visits) {
      term <- paste0("arm", info$treatment, ":visit", v)
      l <- setNames(numeric(length(beta)), names(beta))
      l[term] <- 1
      est <- sum(l * beta)
      se <- sqrt(as.numeric(t(l) %*% as.matrix(Vadj) %*% l))
      df <- pbkrtest::Lb_ddf(matrix(l, nrow = 1), V0, Vadj)
      kr_effects[[length(kr_effects) + 1]] <- cbind(key, data.frame(
        contrast = paste(info$treatment, "-", info$control), visit = v, estimate = est,
        std_error = se, df = df, stringsAsFactors = FALSE))
      # The same contrast from the arm x visit means (emmeans, KR).
      w <- ifelse(g$arm == info$treatment, 1, -1) *
        ifelse(g$visit == v, 1, ifelse(g$visit == info$baseline_visit, -1, 0))
      s <- as.data.frame(summary(contrast(emm_grid, list(c1 = w))))
      note_check("A: effect vs emmeans KR contrast (abs est, rel SE, rel df)",
                 c(abs(s$estimate - est), abs(s$SE / se - 1), abs(s$df / df - 1)))
    }

    em <- as.data.frame(summary(emmeans(m, ~ arm | visit, lmer.df = "kenward-roger"),
                                infer = c(FALSE, FALSE)))
    kr_lsmeans[[length(kr_lsmeans) + 1]] <- cbind(key, data.frame(
      visit = as.character(em$visit), arm = as.character(em$arm), estimate = em$emmean,
      std_error = em$SE, df = em$df, stringsAsFactors = FALSE))

    # The same effects with a correlated random intercept and slope on week / 12
    # (make_references.R's slope model): pbkrtest's G-element parameters are linear there too.
    f_slope <- as.formula(paste0("value ~ ", rhs_covariates(covs),
                                 "arm * visit + (1 + I(week / 12) | subject_id)"))
    ms <- fit_lmer(f_slope, d)
    beta_s <- fixef(ms)
    V0_s <- vcov(ms)
    Vadj_s <- pbkrtest::vcovAdj(ms)
    for (v in post_visits) {
      l <- setNames(numeric(length(beta_s)), names(beta_s))
      l[paste0("arm", info$treatment, ":visit", v)] <- 1
      kr_slope[[length(kr_slope) + 1]] <- cbind(key, data.frame(
        contrast = paste(info$treatment, "-", info$control), visit = v,
        estimate = sum(l * beta_s),
        std_error = sqrt(as.numeric(t(l) %*% as.matrix(Vadj_s) %*% l)),
        df = pbkrtest::Lb_ddf(matrix(l, nrow = 1), V0_s, Vadj_s), stringsAsFactors = FALSE))
    }

    kr_type3[[length(kr_type3) + 1]] <- type3_table(m, "Kenward-Roger", key)
    sat_type3[[length(sat_type3) + 1]] <- type3_table(m, "Satterthwaite", key)
    # arm:visit does not depend on the coding: check against KRmodcomp on its coefficients.
    L_int <- diag(length(beta))[grepl("^arm.*:visit", names(beta)), , drop = FALSE]
    kr <- pbkrtest::KRmodcomp(m, L_int)$test
    last <- kr_type3[[length(kr_type3)]]
    row <- last[last$effect == "arm:visit", ]
    note_check("A: type 3 arm:visit vs KRmodcomp (rel F, rel den df)",
               c(abs(row$F / (kr["Ftest", "stat"]) - 1), abs(row$den_df / kr["Ftest", "ddf"] - 1)))
  }
}

########################################################################################
# Part B
########################################################################################

# F test of L beta = 0 with the eigen-decomposition (Fai-Cornelius) den df.
f_test <- function(L, beta, phi, sat_df) {
  M <- L %*% phi %*% t(L)
  Lb <- as.numeric(L %*% beta)
  q <- nrow(L)
  Fval <- as.numeric(t(Lb) %*% solve(M, Lb)) / q
  e <- eigen(M, symmetric = TRUE)
  stopifnot(min(e$values) > 1e-10 * max(e$values))
  PtL <- t(e$vectors) %*% L
  nu <- vapply(seq_len(q), function(i) sat_df(PtL[i, ]), numeric(1))
  ddf <- if (q == 1) nu else if (all(abs(diff(nu)) < 1e-8)) mean(nu) else
    if (any(nu <= 2)) 2 else {
      E <- sum(nu / (nu - 2))
      2 * E / (E - q)
    }
  list(F = Fval, num_df = q, den_df = ddf, p = pf(Fval, q, ddf, lower.tail = FALSE))
}

cases <- list(
  list(dataset = "sim_catcov", subgroup = "sex", column = "sex"),
  list(dataset = "sim_catcov", subgroup = "Site", column = "Site"),
  list(dataset = "sim_dropout", subgroup = "age_group", cut_column = "age", cut_at = 65),
  list(dataset = "exercise_education", subgroup = "sex", column = "sex")
)

sub_effects <- list(); sub_tests <- list(); sub_fit <- list(); failures <- character(0)

for (cs in cases) {
  info <- index_row(cs$dataset)
  covs <- split_covs(info$covariates)
  raw <- read.csv(file.path(data_dir, paste0(cs$dataset, ".csv")), check.names = FALSE,
                  stringsAsFactors = FALSE)
  if (!is.null(cs$cut_column)) {
    raw$.sub <- ifelse(raw[[cs$cut_column]] < cs$cut_at, paste0("<", cs$cut_at),
                       paste0(">=", cs$cut_at))
    sub_levels <- c(paste0("<", cs$cut_at), paste0(">=", cs$cut_at))
    other <- covs
  } else {
    raw$.sub <- as.character(raw[[cs$column]])
    sub_levels <- sort(unique(raw$.sub[!is.na(raw$.sub)]), method = "radix")
    other <- setdiff(covs, cs$column)
  }
  sc <- syntactic_copies(raw, other)
  raw <- sc$raw
  safe <- sc$safe

  for (outcome in unique(raw$outcome)) {
    cat(sprintf("MMRM %s / %s / %s\n", cs$dataset, outcome, cs$subgroup))
    dat <- prepare_post_baseline(raw, info, outcome, safe, needed = c("baseline", safe, ".sub"))
    dat$.sub <- factor(dat$.sub, levels = sub_levels)
    visit_levels <- levels(dat$visit)
    k <- length(visit_levels)
    primary <- visit_levels[k]
    cells <- table(dat$arm, dat$.sub, dat$visit)
    if (any(cells == 0)) {
      failures <- c(failures, sprintf("%s/%s/%s: empty arm x level x visit cell",
                                      cs$dataset, outcome, cs$subgroup))
      next
    }
    fml <- as.formula(paste("change ~", paste(c("baseline", safe, "arm * .sub * visit"),
                                               collapse = " + ")))
    X <- model.matrix(fml, dat)
    stopifnot(qr(X)$rank == ncol(X))
    reml <- make_reml(X, dat$change, dat$subject_id, dat$visit_k)
    map <- sigma_map("us", k)

    result <- tryCatch({
      fit <- fit_gls_tight(fml, dat, "us", k)
      Sigma_gls <- fitted_sigma(fit, "us", k, visit_levels)
      loglik_gls <- as.numeric(logLik(fit))
      stopifnot(abs(-reml(Sigma_gls)$dev / 2 - loglik_gls) < 1e-8)
      scale <- map$scale(Sigma_gls)
      theta <- polish(reml, map, map$theta(Sigma_gls), scale)
      S_pol <- map$sigma(theta)
      values <- gls_values(S_pol, "us", k, visit_levels)
      fixed_fit <- fit_gls(fml, dat, "us", k, values$cor, values$var, fixed = TRUE)
      Sigma <- fitted_sigma(fixed_fit, "us", k, visit_levels)
      stopifnot(max(abs(Sigma - S_pol)) < 1e-8 * max(abs(Sigma)))
      stopifnot(as.numeric(logLik(fixed_fit)) >= loglik_gls - 1e-9)
      theta <- map$theta(Sigma)
      check <- reml(Sigma)
      grad_dev <- numDeriv::grad(scaled_deviance(reml, map, theta, scale), rep(0, length(theta)),
                                 method.args = fd_args)
      list(fit = fit, fixed_fit = fixed_fit, Sigma = Sigma, theta = theta, scale = scale,
           check = check, grad_dev = grad_dev, loglik_gls = loglik_gls)
    }, error = function(e) e)
    if (inherits(result, "error")) {
      failures <- c(failures, sprintf("%s/%s/%s: %s", cs$dataset, outcome, cs$subgroup,
                                      conditionMessage(result)))
      next
    }
    beta <- result$check$beta
    phi <- result$check$phi
    sat <- make_satterthwaite(reml, map, result$theta, result$scale, fd_args)
    sat_check <- make_satterthwaite(reml, map, result$theta, result$scale, fd_args_check)

    # Effect rows: treatment - control within each (level, visit) cell.
    emm <- emmeans(result$fixed_fit, ~ arm | .sub * visit, data = dat, mode = "df.error")
    ctr <- contrast(emm, "trt.vs.ctrl", ref = 1, adjust = "none")
    s_ctr <- as.data.frame(summary(ctr, adjust = "none"))
    L_eff <- ctr@linfct
    stopifnot(max(abs(L_eff %*% coef(result$fixed_fit) - s_ctr$estimate)) < 1e-8)
    est <- as.numeric(L_eff %*% beta)
    stopifnot(max(abs(est - s_ctr$estimate)) < 1e-8 * max(1, abs(est)))
    se <- sqrt(rowSums((L_eff %*% phi) * L_eff))
    note_check("B: SE vs emmeans on the polished refit (rel)", abs(se / s_ctr$SE - 1))
    df <- vapply(seq_len(nrow(L_eff)), function(i) sat(L_eff[i, ]), numeric(1))
    df_chk <- vapply(seq_len(nrow(L_eff)), function(i) sat_check(L_eff[i, ]), numeric(1))
    free <- as.data.frame(summary(contrast(
      emmeans(result$fit, ~ arm | .sub * visit, data = dat, mode = "satterthwaite"),
      "trt.vs.ctrl", ref = 1, adjust = "none")))
    stopifnot(identical(as.character(free$.sub), as.character(s_ctr$.sub)),
              identical(as.character(free$visit), as.character(s_ctr$visit)))
    level <- as.character(s_ctr$.sub)
    visit <- as.character(s_ctr$visit)
    n <- vapply(seq_along(level), function(i) {
      length(unique(dat$subject_id[dat$.sub == level[i] & dat$visit == visit[i]]))
    }, numeric(1))
    tq <- qt(0.975, df)
    sub_effects[[length(sub_effects) + 1]] <- data.frame(
      dataset = cs$dataset, outcome = outcome, subgroup = cs$subgroup, level = level,
      visit = visit, estimate = est, std_error = se, df = df,
      ci_lower = est - tq * se, ci_upper = est + tq * se,
      p_value = 2 * pt(-abs(est / se), df), n = as.integer(n), stringsAsFactors = FALSE)

    # Interaction tests.
    row_of <- function(lv, v) L_eff[level == lv & visit == v, ]
    diff_rows <- function(vs) {
      do.call(rbind, lapply(vs, function(v) {
        do.call(rbind, lapply(sub_levels[-1], function(lv) row_of(lv, v) - row_of(sub_levels[1], v)))
      }))
    }
    step_diffs <- abs(df_chk / df - 1)
    for (test in c("primary_visit", "all_visits")) {
      L <- diff_rows(if (test == "primary_visit") primary else visit_levels)
      ft <- f_test(L, beta, phi, sat)
      ft_chk <- f_test(L, beta, phi, sat_check)
      step_diffs <- c(step_diffs, abs(ft_chk$den_df / ft$den_df - 1))
      sub_tests[[length(sub_tests) + 1]] <- data.frame(
        dataset = cs$dataset, outcome = outcome, subgroup = cs$subgroup, test = test,
        num_df = as.integer(ft$num_df), den_df = ft$den_df, F = ft$F, p_value = ft$p,
        stringsAsFactors = FALSE)
      if (test == "primary_visit" && length(sub_levels) == 2) {
        # 1-df: F must be the squared t of the difference of the two level effects, computed
        # by emmeans from the effect rows, with the Satterthwaite df of that difference.
        dd <- as.data.frame(summary(contrast(ctr, "revpairwise", by = "visit"),
                                    adjust = "none"))
        dd <- dd[as.character(dd$visit) == primary, ]
        stopifnot(nrow(dd) == 1)
        l_diff <- as.numeric(L)
        note_check("B: 1-df interaction F vs t^2 of the level difference (rel F, rel df)",
                   c(abs(ft$F / (dd$estimate / dd$SE)^2 - 1),
                     abs(ft$den_df / sat(l_diff) - 1)))
      }
      if (test == "all_visits") {
        # Same hypothesis as "all arm:S and arm:S:visit coefficients are zero": same F.
        is_int <- grepl("^arm.*:\\.sub", colnames(X))
        stopifnot(sum(is_int) == nrow(L))
        L_coef <- diag(ncol(X))[is_int, , drop = FALSE]
        fc <- f_test(L_coef, beta, phi, sat)
        note_check("B: all-visits F vs coefficient-basis F (rel)", abs(fc$F / ft$F - 1))
        note_check("info B: all-visits den df, coefficient basis vs level-difference basis (rel)",
                   abs(fc$den_df / ft$den_df - 1))
      }
    }
    sub_fit[[length(sub_fit) + 1]] <- data.frame(
      dataset = cs$dataset, outcome = outcome, subgroup = cs$subgroup,
      loglik = as.numeric(logLik(result$fixed_fit)), loglik_check = -result$check$dev / 2,
      loglik_gls = result$loglik_gls, max_abs_gradient = max(abs(result$grad_dev)),
      n_obs = nrow(dat), n_subjects = length(unique(dat$subject_id)),
      df_step_check = max(step_diffs), df_emmeans_diff = max(abs(free$df / df - 1)),
      stringsAsFactors = FALSE)
    note_check("B: |loglik - loglik_check|",
               abs(as.numeric(logLik(result$fixed_fit)) + result$check$dev / 2))
    note_check("B: max abs gradient of the deviance at the optimum", max(abs(result$grad_dev)))
    note_check("B: df step check (rel)", max(step_diffs))
    note_check("info B: precise df vs emmeans df of the free fit (rel)",
               max(abs(free$df / df - 1)))
  }
}

write_out(kr_effects, "lmm_kr_effects.csv")
write_out(kr_slope, "lmm_kr_slope_effects.csv")
write_out(kr_lsmeans, "lmm_kr_lsmeans.csv")
write_out(kr_type3, "lmm_kr_type3.csv")
write_out(sat_type3, "lmm_sat_type3.csv")
write_out(sub_effects, "subgroup_effects.csv")
write_out(sub_tests, "subgroup_interaction.csv")
write_out(sub_fit, "subgroup_fit.csv")

write_session("R_session_subgroup.txt", "make_subgroup_references.R",
              c("nlme", "emmeans", "numDeriv", "lme4", "lmerTest", "pbkrtest", "Matrix"))

cat("\nChecks (largest discrepancy over all cases):\n")
for (nm in names(checks)) cat(sprintf("  %-80s %.3g\n", nm, checks[[nm]]))
if (length(failures) > 0) {
  cat("\nFailed cases:\n")
  cat(paste0("  ", failures, "\n"), sep = "")
} else {
  cat("\nNo failed cases.\n")
}
cat(sprintf("Elapsed: %.1f s\n", as.numeric(difftime(Sys.time(), start_time, units = "secs"))))
