# Reference results for trialflow's small-sample inference on MMRMs: Kenward-Roger (KR),
# between-within (BW) and residual degrees of freedom, the KR-adjusted covariance of the fixed
# effects, and SAS-style Type III F tests. Computed from first principles in base R (REML
# likelihood, its derivatives and the KR formulas written out below); nlme::gls is used to find
# the REML optimum and emmeans only to build the least-squares-means coefficient vectors.
#
# Run from the package root:  Rscript tests/reference/make_kr_references.R
#
# Shared helpers (data preparation, the gls fit refitted from its own optimum, CSV writing) come
# from tests/reference/reference_common.R; the REML derivatives, Newton polishing and KR formulas
# below are specific to this program.
#
# ------------------------------------------------------------------------------------------------
# Data and models
# ------------------------------------------------------------------------------------------------
# fev (tests/reference/data/fev/, mmrm's fev_data): response FEV1 at VIS1..VIS4 (rows with an
#   observed FEV1), FEV1_BL = the `baseline` visit. arm = ARMCD with levels (PBO, TRT); visit =
#   AVISIT with levels VIS1..VIS4; RACE and SEX with levels sorted in the C locale.
#     fev_un        FEV1 ~ RACE + SEX + arm * visit                      unstructured
#     fev_by_visit  FEV1 ~ baseline * visit + RACE + SEX + arm * visit   unstructured
#     fev_toep      fev_un's mean model                                  Toeplitz
#     fev_ar1       fev_un's mean model                                  AR(1)
# sim_dropout, sim_catcov (tests/reference/data/<name>.csv, listed in datasets.csv): every
#   outcome, post-baseline rows with an observed change; data preparation as in
#   make_mmrm_references.R (arm: control first; visit: post-baseline visits in visit order;
#   character covariates: factors with levels sorted in the C locale; covariate columns copied to
#   syntactic names .cov1, .cov2, ... and reported under their own names).
#     main          change ~ baseline + <covariates> + arm * visit             unstructured
#     by_visit      change ~ baseline * visit + <covariates> + arm * visit     unstructured
# Covariance structures in gls (REML), visit_k = 1..k the visit index within the model:
#     unstructured  corSymm(form = ~ visit_k | subject_id) + varIdent(form = ~ 1 | visit)
#     Toeplitz      corARMA(form = ~ visit_k | subject_id, p = k - 1, q = 0)  (exact twin of
#                   TOEP, see make_mmrm_references.R)
#     AR(1)         corAR1(form = ~ visit_k | subject_id)
#
# SAS-parity models (written to kr_sas_check_*.csv, same columns; they reproduce published SAS
# PROC MIXED runs on fev_data from openpharma/mmrm, design/ddfm_covtype and design/anova):
#     sas_armcd_un, sas_armcd_toep, sas_armcd_ar1   FEV1 ~ arm (DDFM=KR and KR(LINEAR) listings)
#     sas_anova1_ar1   FEV1 ~ arm * baseline, AR(1)              (design/anova/test3_1.csv)
#     sas_anova2_ar1   FEV1 ~ arm * SEX + arm:baseline, AR(1)    (design/anova/test3_2.csv)
#
# ------------------------------------------------------------------------------------------------
# REML optimum
# ------------------------------------------------------------------------------------------------
# Model: y_i ~ N(X_i beta, Sigma_i), Sigma_i = the rows/columns of the k x k matrix Sigma(theta)
# at subject i's observed visits; V = blockdiag(Sigma_i). With Phi = (X' V^-1 X)^-1,
# beta = Phi X' V^-1 y, r = y - X beta, e = V^-1 r, P = V^-1 - V^-1 X Phi X' V^-1 (so e = P y):
#   l(theta) = -1/2 [ (N - p) log(2 pi) + log|V| + log|X' V^-1 X| + r' V^-1 r ]   (nlme's scale)
# With V_h = dV/dtheta_h and V_hj = d2V/dtheta_h dtheta_j (blockwise from Sigma):
#   score      s_h   = -1/2 [ tr(P V_h) - e' V_h e ]
#   expected   IE_hj =  1/2 tr(P V_h P V_j)
#   observed   IO_hj = -d2l/dtheta_h dtheta_j
#                    =  1/2 [ -tr(P V_h P V_j) + tr(P V_hj) + 2 e' V_h P V_j e - e' V_hj e ]
# all evaluated blockwise (sparse block-diagonal matrices) without forming P:
#   tr(P A)          = tr(V^-1 A) - tr(Phi X' V^-1 A V^-1 X)
#   tr(P V_h P V_j)  = tr(V^-1 V_h V^-1 V_j) - 2 tr(Phi Q_hj) + tr(Phi P_h Phi P_j)
#   e' V_h P V_j e   = e' V_h V^-1 V_j e - a_h' Phi a_j,     a_h = X' V^-1 V_h e
# (P_h, Q_hj as in the KR section). gls is fitted with tight tolerances and refitted from its
# own optimum (as in make_mmrm_references.R); the optimum is then polished by Newton steps
# theta <- theta + IO^-1 s with these exact derivatives, in the SAS parametrisation (below),
# until the Newton decrement s' IO^-1 s < 1e-22. Checks (stopifnot): the written-out l equals
# logLik(gls) at gls' optimum to 1e-8; the polished l is >= gls'; gls refitted with its
# structures fixed at the polished values reproduces Sigma (1e-8) and l; the analytic score and
# observed information agree with numDeriv (Richardson) derivatives of l; the analytic
# dSigma/dtheta and d2Sigma/dtheta2 of every parametrisation agree with numDeriv.
#
# ------------------------------------------------------------------------------------------------
# Covariance parametrisations (theta). KR's second-derivative term depends on them.
# ------------------------------------------------------------------------------------------------
#   "sas" (PROC MIXED's own covariance parameters):
#     UN    sigma_ij, i >= j (UN(1,1), UN(2,1), UN(2,2), ...)        linear: d2Sigma = 0
#     TOEP  c_0, ..., c_{k-1}, the covariance at lag 0..k-1           linear: d2Sigma = 0
#     AR(1) (s, rho): Sigma = s rho^|i-j|                             nonlinear in rho
#   "mmrm" (openpharma/mmrm's theta, f^-1(x) = x / sqrt(1 + x^2)):
#     us    Sigma = L L', L = diag(d) Lt, Lt unit lower triangular:
#           theta = (log d_1..log d_k, Lt_21, Lt_31, Lt_32, ..., Lt_k,k-1)  (log-Cholesky)
#     toep  Sigma = exp(2 t_1) Toeplitz(1, f^-1(t_2), ..., f^-1(t_k))
#     ar1   Sigma = exp(2 t_1) rho^|i-j|, rho = f^-1(t_2)
#
# ------------------------------------------------------------------------------------------------
# Kenward-Roger (Kenward & Roger 1997, Biometrics 53:983)
# ------------------------------------------------------------------------------------------------
#   P_h  = X' dV^-1/dtheta_h X               = -X' V^-1 V_h V^-1 X
#   Q_hj = X' dV^-1/dtheta_h V dV^-1/dtheta_j X = X' V^-1 V_h V^-1 V_j V^-1 X
#   R_hj = X' V^-1 V_hj V^-1 X
#   W    = inverse information of theta (observed IO or expected IE, see the variants)
#   Phi_A = Phi + 2 Phi [ sum_hj W_hj (Q_hj - P_h Phi P_j - R_hj / 4) ] Phi
# For a q x p hypothesis L (rank q): M = L' (L Phi L')^-1 L,
#   A1 = sum_hj W_hj tr(M Phi P_h Phi) tr(M Phi P_j Phi),  A2 = sum_hj W_hj tr(M Phi P_h Phi M Phi P_j Phi)
#   B = (A1 + 6 A2) / (2q),  g = ((q + 1) A1 - (q + 4) A2) / ((q + 2) A2),  d = 3q + 2 (1 - g)
#   c1 = g / d,  c2 = (q - g) / d,  c3 = (q + 2 - g) / d
#   E* = 1 / (1 - A2 / q),  V* = (2 / q) (1 + c1 B) / ((1 - c2 B)^2 (1 - c3 B))
#   rho = V* / (2 E*^2),  m = 4 + (q + 2) / (q rho - 1),  lambda = m / (E* (m - 2))
#   F = (L beta)' (L Phi_A L')^-1 (L beta) / q,  F* = lambda F ~ F(q, m)   (reported: F*)
# A1, A2, M use the unadjusted Phi (as in the paper, pbkrtest and mmrm). For q = 1 these give
# lambda = 1 and m = 2 (l' Phi l)^2 / (g' W g), g_h = -l' Phi P_h Phi l: the Satterthwaite df
# with the same W, while the standard error is the adjusted sqrt(l' Phi_A l).
# Invariance: at the optimum sum_hj W_hj (Q_hj - P_h Phi P_j) and the df do not depend on the
# parametrisation; only the R_hj term does (it vanishes for parametrisations in which Sigma is
# linear, e.g. SAS's UN and TOEP). Dropping R_hj (R = 0) in any parametrisation gives the
# "linear" KR of SAS's DDFM=KR(LINEAR) and mmrm's vcov = "Kenward-Roger-Linear".
# Variants written (df_method):
#   kenward_roger          SAS DDFM=KR: "sas" parametrisation, R_hj included, W = IO^-1
#   kenward_roger_linear   R_hj = 0, W = IO^-1   (= SAS KR(LINEAR) = mmrm Kenward-Roger-Linear;
#                          identical to kenward_roger for UN and TOEP)
#   kenward_roger_mmrm     mmrm's vcov = "Kenward-Roger": "mmrm" parametrisation (log-Cholesky
#                          for UN), R_hj included, W = IO^-1
#   kenward_roger_expected, kenward_roger_linear_expected: as kenward_roger(_linear) but
#                          W = IE^-1 (expected information, as in Kenward & Roger 1997)
# SAS parity (sas_armcd_* models against design/ddfm_covtype/kr_*.csv and kr1_*.csv of
# openpharma/mmrm, 14-digit ODS values): kenward_roger reproduces SAS DDFM=KR and
# kenward_roger_linear SAS DDFM=KR(LINEAR) for AR(1) to 8e-7 (SE and df; SAS is at the REML
# optimum there), for UN and TOEP to the precision of SAS's own optimum (SAS stops short of
# it: 2.7e-4 in df for UN; evaluated at SAS's printed covariance parameters instead, our UN SE
# and df agree with SAS to 3e-7 and 2e-6, TOEP to 2e-7 and 7e-5, the printed parameters
# having 4 decimals). The
# expected-information variants miss SAS's df by 6-17 %, kenward_roger_mmrm its SE by up to
# 1.5 % (UN), so W = IO^-1 in SAS's parametrisation is SAS's KR.
# Sanity check (kr_sanity.csv): with complete balanced data, UN and y ~ arm * visit,
# kenward_roger gives Phi_A = Phi along the arm contrasts, df = n - 2, and for arm:visit the
# exact two-sample Hotelling T^2 test (F* and m = n - 1 - q), as KR (1997) show; the
# log-Cholesky R_hj term (kenward_roger_mmrm) breaks this exactness.
#
# ------------------------------------------------------------------------------------------------
# Satterthwaite, between-within, residual
# ------------------------------------------------------------------------------------------------
# satterthwaite (as make_mmrm_references.R, now with exact derivatives): for a contrast l,
#   df = 2 (l' Phi l)^2 / (g' W g), g_h = d(l' Phi l)/dtheta_h = -l' Phi P_h Phi l, W = IO^-1.
#   Multi-row L (SAS / lmerTest / mmrm): L Phi L' = U D U'; the rows of U' L are independent
#   t contrasts with variances D_m and df nu_m; F = sum_m (u_m' L beta)^2 / D_m / q;
#   E = sum_{nu_m > 2} nu_m / (nu_m - 2); den df = 2 E / (E - q) if E > q, else 0 (SAS's rule;
#   mmrm returns 2 when any nu_m <= 2 -- never the case here).
# residual (DDFM=RESIDUAL): N - rank(X) for every test and contrast; unadjusted Phi.
# between_within (DDFM=BETWITHIN, SAS rule): between df = n_subjects - rank(X_b), X_b the
#   columns of X constant within every subject (intercept included). With an unstructured R
#   matrix and no random effects, SAS assigns the between df to every effect. Otherwise an effect
#   whose columns are constant within subjects gets the between df and a within-subject effect
#   gets the rank that its subject-by-effect interaction (subject x the effect's within-subject
#   factors) adds to [X, subject]; e.g. N - n_subjects - (rank of the within-subject columns of
#   X) when the only within-subject factor is visit. A contrast (LS mean, difference) gets the
#   df of its effect, arm:visit (SAS LSMEANS convention). Unadjusted Phi. (SAS parity for UN:
#   design/SAS/sas_resid_un.txt, RACE SEX AVISIT*ARMCD, all effects on 197 - 4 = 193; here
#   fev_un has ARMCD as a between effect too: 197 - 5 = 192. The within-subject rule for
#   Toeplitz/AR(1) has no SAS listing to check against.)
#
# ------------------------------------------------------------------------------------------------
# Contrasts and Type III hypotheses
# ------------------------------------------------------------------------------------------------
# lsmean: emmeans(fit, ~ arm | visit) reference grid: equal weights over the levels of factor
#   covariates, numeric covariates and baseline at their mean over the fitted rows.
# effect: treatment - control at each visit = difference of the two lsmean rows.
# Type III (SAS "Type 3 Tests of Fixed Effects", HTYPE=3), every arm x visit cell observed.
#   The hypothesis of a term T: SAS sets to zero the coefficients of every effect that neither
#   is T nor contains T (containment: same numeric variables, and T's factors a subset of the
#   other's), and makes T's hypothesis orthogonal to those of the effects containing it; with
#   all cells observed this is "T's coefficients are zero" in the sum-to-zero coding of every
#   factor, numeric variables uncentred. SAS writes its rows (E3 option) as "level j minus the
#   reference level", j over the non-reference levels; here the reference is the FIRST level
#   of each factor (SAS's CLASS ... (ref=first), as in the published fev listing:
#   AVISIT(ref='VIS1'), RACE(ref='Asian')). F and all KR quantities are invariant to the choice
#   of rows spanning the hypothesis, the multi-df Satterthwaite df is not (it depends on the
#   eigen-decomposition of L Phi L'), so the rows follow SAS. With b_* the treatment-coded
#   coefficients (reference = first level, the fitted parametrisation) and k visits:
#     arm           1 row: b_arm + (1/k) sum_{v>1} b_arm:v  = mean over visits of trt - ctrl
#     visit         k-1 rows, v = 2..k: b_v + (1/2) b_arm:v  = (mean over arms of the visit v
#                   mean) - (same at visit 1); numeric variables at 0, so with baseline:visit
#                   in the model the visit effect is tested at baseline = 0 (baseline:visit
#                   does not contain visit in SAS's sense); factor covariates cancel
#     arm:visit     k-1 rows: b_arm:v, v = 2..k (the interaction contrasts)
#     baseline      (with baseline:visit) 1 row: b_baseline + (1/k) sum_{v>1} b_baseline:v,
#                   the slope averaged with equal weights over visits; (without) b_baseline
#     baseline:visit k-1 rows: b_baseline:v, v = 2..k (slope at v - slope at visit 1)
#     covariate     its own coefficients (K-1 rows for a factor with K levels: level - first)
#   Construction (generic, for any such model): X_T (treatment coding) and X_S (contr.sum
#   coding of every factor) span the same space, X_S = X_T A with A = X_T^+ X_S (checked
#   exact), so beta_S = A^-1 beta_T; the term's rows in the sum coding are (A^-1)[cols of T, ],
#   and SAS's rows are C_T (A^-1)[cols of T, ] with C_T the Kronecker product over T's
#   factors of the change of basis from deviations (delta_1..delta_{K-1}, delta_K = -sum) to
#   "level j - level 1": row j-1 = e_j - e_1 (e_K = -1), j = 2..K (identity for a factor that
#   R codes by all K indicators inside T, e.g. arm in arm:baseline without a baseline main
#   effect). Checks (stopifnot): a term contained in no other term gets exactly its own
#   treatment-coded coefficient rows; visit (without baseline:visit) equals the differences
#   of the emmeans visit means from visit 1; every 1-df F equals t^2 (and its df the df) of an
#   independently built contrast (arm: mean of the emmeans treatment - control rows; baseline
#   with baseline:visit: b_baseline + mean of the b_baseline:v; terms without interactions:
#   their coefficient), for every df method.
#   SAS parity: the fev_un Type 3 table of design/SAS/sas_log_reml.txt (Satterthwaite) and
#   design/anova/test3_1.csv, test3_2.csv (AR(1), with FEV1_BL interactions, 14 digits).

# Outputs (tests/reference/output/), numbers with 17 significant digits:
#   kr_contrasts.csv   dataset, outcome, model, kind (lsmean | effect), visit, arm, estimate,
#                      std_error, df, df_method   (std_error: sqrt(l' Phi_A l) for KR methods,
#                      sqrt(l' Phi l) otherwise; arm of an effect: "<treatment> - <control>")
#   kr_type3.csv       dataset, outcome, model, effect, num_df, den_df, F, p_value, df_method
#   kr_fit.csv         dataset, outcome, model, loglik, n_obs, n_subjects
#   kr_diagnostics.csv dataset, outcome, model, covariance, n_theta, loglik_gls, newton_steps,
#                      max_abs_score (score times each parameter's unit), info_check (max rel.
#                      diff of analytic vs numDeriv observed information), sigma_check (fixed
#                      gls refit vs polished Sigma), type3_t2_check (max rel. diff F vs t^2 and
#                      den df vs df), type3_t2_terms (number of 1-df terms so checked),
#                      type3_basis_check (max abs. diff of the L checks above)
#   kr_sas_check_contrasts.csv, kr_sas_check_type3.csv, kr_sas_check_fit.csv: the SAS-parity
#                      models, same columns as the main files
#   kr_sanity.csv      check, value, tolerance, passed (the Hotelling exactness check)
#   R_session_kr.txt   R and package versions, run time

source(file.path("tests", "reference", "reference_common.R"))

suppressPackageStartupMessages({
  library(nlme)
  library(emmeans)
  library(numDeriv)
  library(Matrix)
})

t_start <- proc.time()
emm_options(opt.digits = FALSE)

# ================================================================================================
# Covariance parametrisations: sigma(theta), first and second derivatives, theta from Sigma.
# d1: list of k x k matrices dSigma/dtheta_h; d2: list of lists d2Sigma/dtheta_h dtheta_j, or
# NULL when Sigma is linear in theta.
# ================================================================================================
unit_sym <- function(k, a, b) {
  M <- matrix(0, k, k)
  M[a, b] <- 1
  M[b, a] <- 1
  M
}
lag_mats <- function(k) {
  lag <- abs(outer(seq_len(k), seq_len(k), "-"))
  lapply(0:(k - 1), function(l) (lag == l) * 1)
}
# rho -> x and x -> rho of mmrm's correlation transform, with derivatives of rho(x).
to_cor <- function(x) x / sqrt(1 + x^2)
from_cor <- function(rho) rho / sqrt(1 - rho^2)
to_cor_d1 <- function(x) (1 + x^2)^-1.5
to_cor_d2 <- function(x) -3 * x * (1 + x^2)^-2.5

# Chain rule for an elementwise transform psi_a = g_a(theta_a) of a base parametrisation psi.
chain_param <- function(base, g, g1, g2, theta_from_psi, name) {
  n <- base$n
  list(
    name = name, n = n, linear = FALSE, labels = base$labels,
    sigma = function(th) base$sigma(g(th)),
    d1 = function(th) {
      D <- base$d1(g(th))
      j <- g1(th)
      lapply(seq_len(n), function(a) D[[a]] * j[a])
    },
    d2 = function(th) {
      psi <- g(th)
      D1 <- base$d1(psi)
      D2 <- base$d2(psi)
      j <- g1(th)
      jj <- g2(th)
      lapply(seq_len(n), function(a) lapply(seq_len(n), function(b) {
        M <- if (is.null(D2)) 0 * D1[[1]] else D2[[a]][[b]] * j[a] * j[b]
        if (a == b) M <- M + D1[[a]] * jj[a]
        M
      }))
    },
    from_sigma = function(S) theta_from_psi(base$from_sigma(S))
  )
}

make_param <- function(structure, type, k) {
  if (structure == "us" && type == "sas") {
    # SAS UN(i, j), i >= j, row by row.
    idx <- do.call(rbind, lapply(seq_len(k), function(i) cbind(i, seq_len(i))))
    d1 <- lapply(seq_len(nrow(idx)), function(h) unit_sym(k, idx[h, 1], idx[h, 2]))
    return(list(
      name = "us/sas", n = nrow(idx), linear = TRUE,
      labels = sprintf("UN(%d,%d)", idx[, 1], idx[, 2]),
      sigma = function(th) {
        S <- matrix(0, k, k)
        S[idx] <- th
        S[idx[, 2:1, drop = FALSE]] <- th
        S
      },
      d1 = function(th) d1, d2 = function(th) NULL,
      from_sigma = function(S) S[idx]
    ))
  }
  if (structure == "us" && type == "mmrm") {
    # theta = (log d_1..log d_k, Lt_21, Lt_31, Lt_32, ...); L = diag(d) Lt.
    low <- do.call(rbind, lapply(seq_len(k)[-1], function(i) cbind(i, seq_len(i - 1))))
    if (is.null(low)) low <- matrix(0L, 0, 2)
    n <- k + nrow(low)
    make_L <- function(th) {
      Lt <- diag(k)
      Lt[low] <- th[-seq_len(k)]
      exp(th[seq_len(k)]) * Lt
    }
    # dL/dtheta_h: log d_i -> row i of L; Lt_ab -> d_a at (a, b).
    dL <- function(th) {
      L <- make_L(th)
      d <- exp(th[seq_len(k)])
      c(
        lapply(seq_len(k), function(i) {
          M <- matrix(0, k, k)
          M[i, ] <- L[i, ]
          M
        }),
        lapply(seq_len(nrow(low)), function(h) {
          M <- matrix(0, k, k)
          M[low[h, 1], low[h, 2]] <- d[low[h, 1]]
          M
        })
      )
    }
    # d2L: (log d_i, log d_i) -> row i of L; (log d_a, Lt_ab) -> d_a at (a, b); else 0.
    d2L <- function(th, a, b) {
      L <- make_L(th)
      d <- exp(th[seq_len(k)])
      M <- matrix(0, k, k)
      if (a <= k && b <= k) {
        if (a == b) M[a, ] <- L[a, ]
      } else if (a <= k || b <= k) {
        i <- min(a, b)
        h <- max(a, b) - k
        if (low[h, 1] == i) M[low[h, 1], low[h, 2]] <- d[i]
      }
      M
    }
    return(list(
      name = "us/mmrm", n = n, linear = FALSE,
      labels = c(sprintf("log_d%d", seq_len(k)), sprintf("L%d%d", low[, 1], low[, 2])),
      sigma = function(th) tcrossprod(make_L(th)),
      d1 = function(th) {
        L <- make_L(th)
        lapply(dL(th), function(D) D %*% t(L) + L %*% t(D))
      },
      d2 = function(th) {
        L <- make_L(th)
        D <- dL(th)
        lapply(seq_len(n), function(a) lapply(seq_len(n), function(b) {
          D2 <- d2L(th, a, b)
          D2 %*% t(L) + L %*% t(D2) + D[[a]] %*% t(D[[b]]) + D[[b]] %*% t(D[[a]])
        }))
      },
      from_sigma = function(S) {
        L <- t(chol(S))
        d <- diag(L)
        c(log(d), (L / d)[low])
      }
    ))
  }
  if (structure == "toep" && type == "sas") {
    T <- lag_mats(k)
    return(list(
      name = "toep/sas", n = k, linear = TRUE, labels = sprintf("TOEP(%d)", seq_len(k)),
      sigma = function(th) Reduce(`+`, Map(`*`, T, th)),
      d1 = function(th) T, d2 = function(th) NULL,
      from_sigma = function(S) S[1, ]
    ))
  }
  if (structure == "toep" && type == "mmrm") {
    T <- lag_mats(k)
    # Base psi = (s, rho_1..rho_{k-1}): Sigma = s (I + sum_l rho_l T_l).
    base <- list(
      n = k, labels = c("log_sd", sprintf("rho%d", seq_len(k - 1))),
      sigma = function(psi) psi[1] * (T[[1]] + Reduce(`+`, Map(`*`, T[-1], psi[-1]))),
      d1 = function(psi) c(
        list(T[[1]] + Reduce(`+`, Map(`*`, T[-1], psi[-1]))),
        lapply(T[-1], function(Tl) psi[1] * Tl)
      ),
      d2 = function(psi) lapply(seq_len(k), function(a) lapply(seq_len(k), function(b) {
        if (a == 1 && b > 1) T[[b]] else if (b == 1 && a > 1) T[[a]] else 0 * T[[1]]
      })),
      from_sigma = function(S) c(S[1, 1], S[1, -1] / S[1, 1])
    )
    return(chain_param(
      base,
      g = function(th) c(exp(2 * th[1]), to_cor(th[-1])),
      g1 = function(th) c(2 * exp(2 * th[1]), to_cor_d1(th[-1])),
      g2 = function(th) c(4 * exp(2 * th[1]), to_cor_d2(th[-1])),
      theta_from_psi = function(psi) c(log(psi[1]) / 2, from_cor(psi[-1])),
      name = "toep/mmrm"
    ))
  }
  if (structure == "ar1") {
    D <- abs(outer(seq_len(k), seq_len(k), "-"))
    pw <- function(x, n) ifelse(n < 0, 0, x^pmax(n, 0))
    # Base psi = (s, rho): Sigma = s rho^D.
    base <- list(
      n = 2, labels = c("s", "rho"),
      sigma = function(psi) psi[1] * pw(psi[2], D),
      d1 = function(psi) list(pw(psi[2], D), psi[1] * D * pw(psi[2], D - 1)),
      d2 = function(psi) list(
        list(0 * D, D * pw(psi[2], D - 1)),
        list(D * pw(psi[2], D - 1), psi[1] * D * (D - 1) * pw(psi[2], D - 2))
      ),
      from_sigma = function(S) c(S[1, 1], S[1, 2] / S[1, 1])
    )
    if (type == "sas") {
      return(chain_param(
        base, g = identity, g1 = function(th) c(1, 1), g2 = function(th) c(0, 0),
        theta_from_psi = identity, name = "ar1/sas"
      ))
    }
    return(chain_param(
      base,
      g = function(th) c(exp(2 * th[1]), to_cor(th[2])),
      g1 = function(th) c(2 * exp(2 * th[1]), to_cor_d1(th[2])),
      g2 = function(th) c(4 * exp(2 * th[1]), to_cor_d2(th[2])),
      theta_from_psi = function(psi) c(log(psi[1]) / 2, from_cor(psi[2])),
      name = "ar1/mmrm"
    ))
  }
  stop("unknown parametrisation ", structure, "/", type)
}

# Largest relative error of the analytic d1 and d2 against numDeriv at theta.
check_param <- function(par, th) {
  k2 <- length(par$sigma(th))
  J <- numDeriv::jacobian(function(t) as.numeric(par$sigma(t)), th)
  A <- sapply(par$d1(th), as.numeric)
  err1 <- max(abs(J - A)) / max(abs(A))
  err2 <- 0
  d2 <- par$d2(th)
  if (!is.null(d2)) {
    for (a in seq_len(par$n)) {
      Ja <- numDeriv::jacobian(function(t) as.numeric(par$d1(t)[[a]]), th)
      B <- sapply(d2[[a]], as.numeric)
      err2 <- max(err2, max(abs(Ja - B)) / max(abs(A)))
    }
  }
  max(err1, err2)
}

# ================================================================================================
# REML pieces from first principles (see the header). `des` holds the data layout.
# ================================================================================================
make_design <- function(X, y, subject, pos, k) {
  subject <- as.character(subject)
  stopifnot(!is.unsorted(match(subject, unique(subject))))  # rows grouped by subject
  rows <- split(seq_along(y), factor(subject, levels = unique(subject)))
  # All (row, col) pairs within a subject: the sparsity pattern of V and its derivatives.
  I <- unlist(lapply(rows, function(g) rep(g, times = length(g))))
  J <- unlist(lapply(rows, function(g) rep(g, each = length(g))))
  # Missingness patterns: V^-1 and log|V| are computed once per pattern.
  pattern <- vapply(rows, function(g) paste(pos[g], collapse = ","), "")
  pat_levels <- unique(pattern)
  pat_id <- match(pattern, pat_levels)
  pat_pos <- lapply(pat_levels, function(s) as.integer(strsplit(s, ",")[[1]]))
  m_i <- lengths(rows)
  list(X = X, y = y, rows = rows, pos = pos, k = k, I = I, J = J,
       pat_pos = pat_pos, pat_count = tabulate(pat_id, length(pat_levels)),
       elem_pat = rep(pat_id, times = m_i^2),
       elem_local = unlist(lapply(m_i, function(m) seq_len(m * m))),
       N = length(y), p = ncol(X), n_subjects = length(rows))
}

block <- function(des, S) {
  sparseMatrix(i = des$I, j = des$J, x = S[cbind(des$pos[des$I], des$pos[des$J])],
               dims = c(des$N, des$N))
}

# V^-1 (block-diagonal, inverse per missingness pattern) and log|V|; NULL if not pos. definite.
block_inverse <- function(des, S) {
  inv <- vector("list", length(des$pat_pos))
  logdet <- 0
  for (s in seq_along(des$pat_pos)) {
    pp <- des$pat_pos[[s]]
    R <- tryCatch(chol(S[pp, pp, drop = FALSE]), error = function(e) NULL)
    if (is.null(R)) return(NULL)
    inv[[s]] <- as.numeric(chol2inv(R))
    logdet <- logdet + des$pat_count[s] * 2 * sum(log(diag(R)))
  }
  offset <- cumsum(c(0, lengths(inv)))[seq_along(inv)]
  x <- unlist(inv)[offset[des$elem_pat] + des$elem_local]
  list(inv = sparseMatrix(i = des$I, j = des$J, x = x, dims = c(des$N, des$N)),
       logdet = logdet)
}

reml_loglik <- function(des, S) {
  bi <- block_inverse(des, S)
  if (is.null(bi)) return(-Inf)
  VX <- as.matrix(bi$inv %*% des$X)
  A <- crossprod(des$X, VX)
  RA <- chol(A)
  beta <- backsolve(RA, backsolve(RA, crossprod(VX, des$y), transpose = TRUE))
  r <- des$y - as.numeric(des$X %*% beta)
  -0.5 * ((des$N - des$p) * log(2 * pi) + bi$logdet + 2 * sum(log(diag(RA))) +
            sum(r * as.numeric(bi$inv %*% r)))
}

# Everything at theta for parametrisation par: beta, Phi, loglik, score, IO, IE, P, Q, R.
reml_pieces <- function(des, par, th) {
  S <- par$sigma(th)
  bi <- block_inverse(des, S)
  if (is.null(bi)) return(NULL)
  Vi <- bi$inv
  X <- des$X
  VX <- as.matrix(Vi %*% X)
  A <- crossprod(X, VX)
  RA <- chol(A)
  Phi <- chol2inv(RA)
  beta <- as.numeric(Phi %*% crossprod(VX, des$y))
  r <- des$y - as.numeric(X %*% beta)
  e <- as.numeric(Vi %*% r)
  loglik <- -0.5 * ((des$N - des$p) * log(2 * pi) + bi$logdet + 2 * sum(log(diag(RA))) +
                      sum(r * e))
  n <- par$n
  Vh <- lapply(par$d1(th), function(D) block(des, D))
  d2 <- par$d2(th)
  F <- lapply(Vh, function(B) as.matrix(B %*% VX))          # V_h V^-1 X
  G <- lapply(F, function(Fh) as.matrix(Vi %*% Fh))          # V^-1 V_h V^-1 X
  P <- lapply(G, function(Gh) -crossprod(X, Gh))
  Q <- lapply(seq_len(n), function(h) lapply(seq_len(n), function(j) crossprod(G[[h]], F[[j]])))
  M <- lapply(Vh, function(B) Vi %*% B)                      # V^-1 V_h (blockwise)
  u <- lapply(Vh, function(B) as.numeric(B %*% e))           # V_h e
  w <- lapply(u, function(v) as.numeric(Vi %*% v))           # V^-1 V_h e
  a <- lapply(w, function(v) as.numeric(crossprod(X, v)))    # X' V^-1 V_h e
  tr_ViVh <- vapply(M, function(m) sum(diag(m)), 0)
  score <- vapply(seq_len(n), function(h) {
    -0.5 * (tr_ViVh[h] + sum(Phi * P[[h]]) - sum(e * u[[h]]))
  }, 0)
  IE <- IO <- matrix(0, n, n)
  R <- NULL
  if (!is.null(d2)) R <- vector("list", n)
  for (h in seq_len(n)) {
    if (!is.null(d2)) R[[h]] <- vector("list", n)
    for (j in seq_len(n)) {
      T_hj <- sum(M[[h]] * t(M[[j]])) - 2 * sum(Phi * Q[[h]][[j]]) +
        sum((Phi %*% P[[h]]) * t(Phi %*% P[[j]]))
      ePe <- sum(u[[h]] * w[[j]]) - sum(a[[h]] * (Phi %*% a[[j]]))
      trPVhj <- 0
      eVhje <- 0
      if (!is.null(d2)) {
        Bhj <- block(des, d2[[h]][[j]])
        R[[h]][[j]] <- crossprod(VX, as.matrix(Bhj %*% VX))
        trPVhj <- sum(Vi * Bhj) - sum(Phi * R[[h]][[j]])
        eVhje <- sum(e * as.numeric(Bhj %*% e))
      }
      IE[h, j] <- 0.5 * T_hj
      IO[h, j] <- 0.5 * (-T_hj + trPVhj + 2 * ePe - eVhje)
    }
  }
  list(S = S, beta = beta, Phi = Phi, loglik = loglik, score = score, IO = IO, IE = IE,
       P = P, Q = Q, R = R, n = n)
}

# Phi_A for given W and pieces; include_R = FALSE drops the R_hj / 4 term.
kr_adjusted <- function(pc, W, include_R) {
  Phi <- pc$Phi
  S <- 0 * Phi
  for (h in seq_len(pc$n)) for (j in seq_len(pc$n)) {
    term <- pc$Q[[h]][[j]] - pc$P[[h]] %*% Phi %*% pc$P[[j]]
    if (include_R && !is.null(pc$R)) term <- term - pc$R[[h]][[j]] / 4
    S <- S + W[h, j] * term
  }
  PhiA <- Phi + 2 * Phi %*% S %*% Phi
  (PhiA + t(PhiA)) / 2
}

# KR df m and scale lambda for hypothesis L (q x p) (header formulas).
kr_df <- function(L, Phi, P, W) {
  L <- matrix(L, ncol = ncol(Phi))
  q <- nrow(L)
  Mm <- t(L) %*% solve(L %*% Phi %*% t(L), L)
  U <- lapply(P, function(Ph) Mm %*% Phi %*% Ph %*% Phi)
  trU <- vapply(U, function(u) sum(diag(u)), 0)
  n <- length(P)
  A1 <- A2 <- 0
  for (h in seq_len(n)) for (j in seq_len(n)) {
    A1 <- A1 + W[h, j] * trU[h] * trU[j]
    A2 <- A2 + W[h, j] * sum(U[[h]] * t(U[[j]]))
  }
  B <- (A1 + 6 * A2) / (2 * q)
  g <- ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
  d <- 3 * q + 2 * (1 - g)
  c1 <- g / d
  c2 <- (q - g) / d
  c3 <- (q + 2 - g) / d
  Estar <- 1 / (1 - A2 / q)
  Vstar <- (2 / q) * (1 + c1 * B) / ((1 - c2 * B)^2 * (1 - c3 * B))
  rho <- Vstar / (2 * Estar^2)
  m <- 4 + (q + 2) / (q * rho - 1)
  lambda <- m / (Estar * (m - 2))
  list(m = m, lambda = lambda)
}

# Satterthwaite df of one contrast l.
sat_df_1 <- function(l, Phi, P, W) {
  g <- vapply(P, function(Ph) -as.numeric(t(l) %*% Phi %*% Ph %*% Phi %*% l), 0)
  2 * as.numeric(t(l) %*% Phi %*% l)^2 / as.numeric(t(g) %*% W %*% g)
}

# SAS's rule (PROC MIXED / GLIMMIX DDFM=SATTERTHWAITE): E = sum over nu_m > 2 of
# nu_m / (nu_m - 2); df = 2E / (E - q) if E > q, else 0. (mmrm instead returns 2 when any
# nu_m <= 2; the two agree whenever every nu_m > 2, as in all models here.)
md_denom_df <- function(nu) {
  if (length(nu) == 1) return(nu)
  E <- sum((nu / (nu - 2))[nu > 2])
  if (E > length(nu)) 2 * E / (E - length(nu)) else 0
}

# Satterthwaite F test of L (eigen-decomposition method).
sat_test <- function(L, beta, Phi, P, W) {
  L <- matrix(L, ncol = length(beta))
  C <- L %*% Phi %*% t(L)
  eg <- eigen((C + t(C)) / 2, symmetric = TRUE)
  q <- sum(eg$values > max(sqrt(.Machine$double.eps) * eg$values[1], 0))
  stopifnot(q == nrow(L))
  Lr <- t(eg$vectors[, seq_len(q), drop = FALSE]) %*% L
  t2 <- as.numeric(Lr %*% beta)^2 / eg$values[seq_len(q)]
  nu <- vapply(seq_len(q), function(m) sat_df_1(Lr[m, ], Phi, P, W), 0)
  list(num_df = q, den_df = md_denom_df(nu), F = sum(t2) / q)
}

wald_F <- function(L, beta, V) {
  L <- matrix(L, ncol = length(beta))
  b <- L %*% beta
  as.numeric(t(b) %*% solve(L %*% V %*% t(L), b)) / nrow(L)
}

# ================================================================================================
# The polished optimum (gls fitting as make_mmrm_references.R, from reference_common.R)
# ================================================================================================
# Newton steps on l in the parametrisation par (exact score and observed information).
polish_exact <- function(des, par, th) {
  pc <- reml_pieces(des, par, th)
  steps <- 0
  for (iter in 1:100) {
    step <- solve(pc$IO, pc$score)
    dec <- sum(pc$score * step)
    if (dec < 1e-22) break
    t <- 1
    repeat {
      new <- reml_pieces(des, par, th + t * step)
      if (!is.null(new) && new$loglik >= pc$loglik - 1e-12) break
      t <- t / 2
      if (t < 1e-8) stop("Newton step failed")
    }
    th <- th + t * step
    pc <- new
    steps <- steps + 1
  }
  list(theta = th, pieces = pc, steps = steps)
}

# ================================================================================================
# One model: fit, polish, contrasts, Type III
# ================================================================================================
# spec: dataset, outcome, model, dat (rows with observed response; columns resp, arm, visit,
# visit_k, subject_id, baseline, covariates), fml, structure, terms_out (term label -> name),
# control/treatment labels, lsmean_by_visit.
run_model <- function(spec) {
  dat <- spec$dat
  fml <- spec$fml
  structure <- spec$structure
  visit_levels <- levels(dat$visit)
  k <- length(visit_levels)
  cat(sprintf("%s / %s / %s\n", spec$dataset, spec$outcome, spec$model))

  # --- gls optimum, refitted from itself until the log-likelihood stops moving ---
  fit <- fit_gls_tight(fml, dat, structure, k)
  loglik_gls <- as.numeric(logLik(fit))
  Sigma_gls <- fitted_sigma(fit, structure, k, visit_levels)

  X <- model.matrix(fml, dat)
  stopifnot(identical(colnames(X), names(coef(fit))))
  des <- make_design(X, dat$resp, dat$subject_id, dat$visit_k, k)
  stopifnot(abs(reml_loglik(des, Sigma_gls) - loglik_gls) < 1e-8)

  # --- polish in the SAS parametrisation ---
  par_sas <- make_param(structure, "sas", k)
  par_mmrm <- make_param(structure, "mmrm", k)
  pol <- polish_exact(des, par_sas, par_sas$from_sigma(Sigma_gls))
  th <- pol$theta
  pc <- pol$pieces
  Sigma <- pc$S
  stopifnot(pc$loglik >= loglik_gls - 1e-9)
  # gls with the structures fixed at the polished values reproduces Sigma and l.
  values <- gls_values(Sigma, structure, k, visit_levels)
  fixed_fit <- fit_gls(fml, dat, structure, k, values$cor, values$var, fixed = TRUE)
  sigma_check <- max(abs(fitted_sigma(fixed_fit, structure, k, visit_levels) - Sigma)) /
    max(abs(Sigma))
  stopifnot(sigma_check < 1e-8)
  stopifnot(abs(as.numeric(logLik(fixed_fit)) - pc$loglik) < 1e-8)
  stopifnot(max(abs(coef(fixed_fit) - pc$beta)) < 1e-8 * max(1, abs(pc$beta)))
  # Analytic derivatives against numDeriv (scaled so that each step is relative).
  # Unit of each parameter: the change that moves Sigma by about max|Sigma|.
  scale <- vapply(par_sas$d1(th), function(D) max(abs(Sigma)) / max(abs(D)), 0)
  f_u <- function(u) reml_loglik(des, par_sas$sigma(th + scale * u))
  H_num <- numDeriv::hessian(f_u, rep(0, length(th)), method.args = list(eps = 1e-3, r = 6))
  IO_scaled <- pc$IO * outer(scale, scale)
  info_check <- max(abs(-H_num - IO_scaled)) / max(abs(IO_scaled))
  stopifnot(info_check < 1e-5)
  stopifnot(check_param(par_sas, th) < 1e-6)
  th_mmrm <- par_mmrm$from_sigma(Sigma)
  stopifnot(max(abs(par_mmrm$sigma(th_mmrm) - Sigma)) < 1e-10 * max(abs(Sigma)))
  stopifnot(check_param(par_mmrm, th_mmrm) < 1e-6)
  pc_mmrm <- reml_pieces(des, par_mmrm, th_mmrm)
  max_abs_score <- max(abs(pc$score * scale))

  beta <- pc$beta
  Phi <- pc$Phi
  W_obs <- solve(pc$IO)
  W_exp <- solve(pc$IE)
  # Df-invariance check: W and P in the two parametrisations give the same Satterthwaite df.
  W_obs_mmrm <- solve(pc_mmrm$IO)

  # --- KR variants: adjusted covariance, the P and W its df use ---
  variants <- list(
    kenward_roger = list(PhiA = kr_adjusted(pc, W_obs, TRUE), P = pc$P, W = W_obs),
    kenward_roger_linear = list(PhiA = kr_adjusted(pc, W_obs, FALSE), P = pc$P, W = W_obs),
    kenward_roger_mmrm = list(PhiA = kr_adjusted(pc_mmrm, W_obs_mmrm, TRUE), P = pc_mmrm$P,
                              W = W_obs_mmrm),
    kenward_roger_expected = list(PhiA = kr_adjusted(pc, W_exp, TRUE), P = pc$P, W = W_exp),
    kenward_roger_linear_expected = list(PhiA = kr_adjusted(pc, W_exp, FALSE), P = pc$P,
                                         W = W_exp)
  )
  # The linear variant is parametrisation-free: the mmrm parametrisation without R agrees.
  lin_mmrm <- kr_adjusted(pc_mmrm, W_obs_mmrm, FALSE)
  stopifnot(max(abs(lin_mmrm - variants$kenward_roger_linear$PhiA)) <
              1e-7 * max(abs(variants$kenward_roger_linear$PhiA)))

  # --- between-within and residual df ---
  n_obs <- nrow(X)
  rank_X <- qr(X)$rank
  df_res <- n_obs - rank_X
  subj <- factor(dat$subject_id)
  const_within <- apply(X, 2, function(col) all(tapply(col, subj, function(v) all(v == v[1]))))
  df_between <- nlevels(subj) - qr(X[, const_within, drop = FALSE])$rank
  assign <- attr(X, "assign")
  term_labels <- attr(terms(fml), "term.labels")
  bw_term_df <- function(term) {
    cols <- which(assign == match(term, term_labels))
    if (structure == "us" || all(const_within[cols])) return(df_between)
    vars <- all.vars(parse(text = term)[[1]])
    varying <- vars[vapply(vars, function(v) {
      any(tapply(dat[[v]], subj, function(x) length(unique(x)) > 1))
    }, TRUE)]
    stopifnot(all(vapply(varying, function(v) is.factor(dat[[v]]), TRUE)))
    S <- model.matrix(~ subj - 1)
    SxE <- model.matrix(as.formula(paste("~ subj:", paste(varying, collapse = ":"), "- 1")),
                        cbind(dat, subj = subj))
    qr(cbind(X, S, SxE))$rank - qr(cbind(X, S))$rank
  }
  bw_df <- setNames(vapply(term_labels, bw_term_df, 0), term_labels)

  # --- contrasts: lsmeans and treatment - control ---
  if (spec$lsmean_by_visit) {
    emm <- emmeans(fit, ~ arm | visit, data = dat, mode = "df.error")
  } else {
    # (emmeans notes that arm interacts with baseline in the SAS-parity ANOVA models.)
    emm <- suppressMessages(emmeans(fit, ~ arm, data = dat, mode = "df.error"))
  }
  grid <- as.data.frame(summary(emm))
  L_emm <- emm@linfct
  # (grid$emmean is at gls' own optimum; the estimates below use the polished beta.)
  stopifnot(max(abs(L_emm %*% coef(fit) - grid$emmean)) < 1e-8 * max(1, abs(grid$emmean)))
  grid$visit <- if (spec$lsmean_by_visit) as.character(grid$visit) else ""
  visits_out <- unique(grid$visit)
  L_eff <- t(vapply(visits_out, function(v) {
    L_emm[grid$visit == v & grid$arm == spec$treatment, ] -
      L_emm[grid$visit == v & grid$arm == spec$control, ]
  }, numeric(ncol(X))))
  if (length(visits_out) == 1) L_eff <- matrix(L_eff, nrow = 1)
  contr <- rbind(
    data.frame(kind = "lsmean", visit = grid$visit, arm = as.character(grid$arm)),
    data.frame(kind = "effect", visit = visits_out,
               arm = paste(spec$treatment, "-", spec$control))
  )
  L_all <- rbind(L_emm, L_eff)
  # The term with exactly these variables, whatever their order in the label.
  find_term <- function(vars) {
    hit <- term_labels[vapply(strsplit(term_labels, ":"), function(v) setequal(v, vars), TRUE)]
    stopifnot(length(hit) <= 1)
    if (length(hit) == 0) NA_character_ else hit
  }
  eff_df_bw <- bw_df[[find_term(if (spec$lsmean_by_visit) c("arm", "visit") else "arm")]]
  rows <- list()
  for (i in seq_len(nrow(L_all))) {
    l <- L_all[i, ]
    est <- sum(l * beta)
    se0 <- sqrt(as.numeric(t(l) %*% Phi %*% l))
    add <- function(se, df, method) {
      rows[[length(rows) + 1]] <<- data.frame(
        dataset = spec$dataset, outcome = spec$outcome, model = spec$model,
        kind = contr$kind[i], visit = contr$visit[i], arm = contr$arm[i],
        estimate = est, std_error = se, df = df, df_method = method
      )
    }
    df_sat <- sat_df_1(l, Phi, pc$P, W_obs)
    stopifnot(abs(sat_df_1(l, Phi, pc_mmrm$P, W_obs_mmrm) / df_sat - 1) < 1e-6)
    add(se0, df_sat, "satterthwaite")
    for (v in names(variants)) {
      vr <- variants[[v]]
      kd <- kr_df(l, Phi, vr$P, vr$W)
      stopifnot(abs(kd$lambda - 1) < 1e-8)
      add(sqrt(as.numeric(t(l) %*% vr$PhiA %*% l)), kd$m, v)
    }
    add(se0, eff_df_bw, "between_within")
    add(se0, df_res, "residual")
  }
  contrasts_out <- do.call(rbind, rows)

  # --- Type III hypotheses (header: sum-to-zero coding) ---
  factors <- names(Filter(is.factor, dat[all.vars(fml)[-1]]))
  X_sum <- model.matrix(fml, dat, contrasts.arg = setNames(rep(list("contr.sum"),
                                                                length(factors)), factors))
  stopifnot(identical(attr(X_sum, "assign"), assign))
  A <- qr.solve(X, X_sum)
  stopifnot(max(abs(X %*% A - X_sum)) < 1e-9 * max(1, abs(X_sum)))
  A_inv <- solve(A)
  # Change of basis of a factor's sum-coded coefficients (deviations delta_1..delta_{K-1} from
  # the equally weighted mean; delta_K = -sum) to SAS's rows "level j - reference level",
  # j = 2..K, the reference being the first level: row j-1 = e_j - e_1 (e_K = -1).
  to_ref_first <- function(K) {
    T <- matrix(0, K - 1, K - 1)
    for (j in 2:K) {
      row <- if (j < K) replace(numeric(K - 1), j, 1) else rep(-1, K - 1)
      row[1] <- row[1] - 1
      T[j - 1, ] <- row
    }
    T
  }
  t3 <- list()
  t2_check <- 0
  n_t2_checked <- 0
  basis_check <- 0
  for (term in term_labels) {
    cols <- assign == match(term, term_labels)
    # Rows of the term in the sum coding, then SAS's basis: the Kronecker product of the
    # factors' changes of basis (first factor of the label varies fastest in the columns;
    # numeric variables contribute a factor 1).
    term_vars <- strsplit(term, ":")[[1]]
    # (A factor that R codes by all its indicators in this term -- attr(terms, "factors") = 2,
    # e.g. arm in arm:baseline without a baseline main effect -- has one coefficient per level,
    # already SAS's rows: identity.)
    coding <- attr(terms(fml), "factors")[, term]
    T_list <- lapply(Filter(function(v) is.factor(dat[[v]]), term_vars), function(v) {
      if (coding[[v]] == 2) diag(nlevels(dat[[v]])) else to_ref_first(nlevels(dat[[v]]))
    })
    T_term <- Reduce(function(a, b) kronecker(b, a), T_list, diag(1))
    L <- T_term %*% A_inv[cols, , drop = FALSE]
    q <- nrow(L)
    # Check: a term contained in no other term is tested by its own treatment-coded
    # coefficients (reference = first level), exactly.
    others <- setdiff(term_labels, term)
    if (!any(vapply(others, function(o) all(term_vars %in% strsplit(o, ":")[[1]]), TRUE))) {
      basis_check <- max(basis_check, max(abs(L - diag(ncol(X))[cols, , drop = FALSE])))
    }
    # Check: visit in a model without baseline:visit = differences of the visit means of the
    # emmeans grid (equal weights over arms) from the first visit.
    if (term == "visit" && spec$lsmean_by_visit && is.na(find_term(c("baseline", "visit")))) {
      V <- t(sapply(visit_levels, function(v) colMeans(L_emm[grid$visit == v, , drop = FALSE])))
      basis_check <- max(basis_check, max(abs(L - sweep(V[-1, , drop = FALSE], 2, V[1, ]))))
    }
    res <- list()
    st <- sat_test(L, beta, Phi, pc$P, W_obs)
    res$satterthwaite <- c(st$num_df, st$den_df, st$F)
    for (v in names(variants)) {
      vr <- variants[[v]]
      kd <- kr_df(L, Phi, vr$P, vr$W)
      res[[v]] <- c(q, kd$m, kd$lambda * wald_F(L, beta, vr$PhiA))
    }
    F0 <- wald_F(L, beta, Phi)
    res$between_within <- c(q, bw_df[[term]], F0)
    res$residual <- c(q, df_res, F0)
    # 1-df check against an independently built contrast.
    if (q == 1) {
      l_chk <- NULL
      others <- setdiff(term_labels, term)
      contains <- others[vapply(others, function(o) {
        all(strsplit(term, ":")[[1]] %in% strsplit(o, ":")[[1]])
      }, TRUE)]
      if (length(contains) == 0) {
        # Not interacting with anything: its single coefficient.
        l_chk <- as.numeric(assign == match(term, term_labels))
      } else if (term == "arm" && identical(contains, find_term(c("arm", "visit")))) {
        # Mean over visits of the treatment - control contrasts.
        l_chk <- colMeans(L_eff)
      } else if (term == "baseline" &&
                 identical(contains, find_term(c("baseline", "visit")))) {
        # Slope of baseline averaged over visits: in treatment coding the slope at visit v
        # is beta_baseline + beta_baseline:visit_v (0 at the first visit).
        inter <- assign == match(find_term(c("baseline", "visit")), term_labels)
        l_chk <- as.numeric(assign == match(term, term_labels)) + inter / k
      }
      if (!is.null(l_chk)) {
        t_u <- sum(l_chk * beta) / sqrt(as.numeric(t(l_chk) %*% Phi %*% l_chk))
        chk <- c(abs(res$satterthwaite[3] / t_u^2 - 1),
                 abs(res$satterthwaite[2] / sat_df_1(l_chk, Phi, pc$P, W_obs) - 1),
                 abs(res$residual[3] / t_u^2 - 1))
        for (v in names(variants)) {
          vr <- variants[[v]]
          t_a <- sum(l_chk * beta) / sqrt(as.numeric(t(l_chk) %*% vr$PhiA %*% l_chk))
          chk <- c(chk, abs(res[[v]][3] / t_a^2 - 1),
                   abs(res[[v]][2] / kr_df(l_chk, Phi, vr$P, vr$W)$m - 1))
        }
        t2_check <- max(t2_check, chk)
        n_t2_checked <- n_t2_checked + 1
      }
    }
    for (method in names(res)) {
      t3[[length(t3) + 1]] <- data.frame(
        dataset = spec$dataset, outcome = spec$outcome, model = spec$model,
        effect = spec$term_names[[term]], num_df = res[[method]][1],
        den_df = res[[method]][2], F = res[[method]][3],
        p_value = pf(res[[method]][3], res[[method]][1], res[[method]][2], lower.tail = FALSE),
        df_method = method
      )
    }
  }
  stopifnot(t2_check < 1e-8, basis_check < 1e-10)

  list(
    contrasts = contrasts_out,
    type3 = do.call(rbind, t3),
    fit = data.frame(dataset = spec$dataset, outcome = spec$outcome, model = spec$model,
                     loglik = pc$loglik, n_obs = n_obs, n_subjects = des$n_subjects),
    diag = data.frame(dataset = spec$dataset, outcome = spec$outcome, model = spec$model,
                      covariance = structure, n_theta = par_sas$n, loglik_gls = loglik_gls,
                      newton_steps = pol$steps, max_abs_score = max_abs_score,
                      info_check = info_check, sigma_check = sigma_check,
                      type3_t2_check = t2_check, type3_t2_terms = n_t2_checked,
                      type3_basis_check = basis_check)
  )
}

# ================================================================================================
# Data
# ================================================================================================
# fev: long data on VIS1..VIS4 with an observed FEV1 (value); baseline = FEV1_BL from the
# baseline visit.
fev <- prepare_post_baseline(read_fev(), list(baseline_visit = "baseline", control = "PBO",
                                              treatment = "TRT"),
                             "FEV1", c("RACE", "SEX"), response = "value")
fev$resp <- fev$value
stopifnot(identical(levels(fev$visit), c("VIS1", "VIS2", "VIS3", "VIS4")),
          nrow(fev) == 537, length(unique(fev$subject_id)) == 197, !anyNA(fev$baseline))

base_names <- c(arm = "arm", visit = "visit", `arm:visit` = "arm:visit",
                `visit:arm` = "arm:visit", baseline = "baseline",
                `visit:baseline` = "baseline:visit", `baseline:visit` = "baseline:visit",
                `arm:baseline` = "arm:baseline", `arm:SEX` = "arm:SEX")
fev_spec <- function(model, rhs, structure, by_visit = TRUE) {
  list(dataset = "fev", outcome = "FEV1", model = model, dat = fev,
       fml = as.formula(paste("resp ~", rhs)), structure = structure,
       control = "PBO", treatment = "TRT", lsmean_by_visit = by_visit,
       term_names = c(base_names, RACE = "RACE", SEX = "SEX"))
}
specs <- list(
  fev_spec("fev_un", "RACE + SEX + arm * visit", "us"),
  fev_spec("fev_by_visit", "baseline * visit + RACE + SEX + arm * visit", "us"),
  fev_spec("fev_toep", "RACE + SEX + arm * visit", "toep"),
  fev_spec("fev_ar1", "RACE + SEX + arm * visit", "ar1")
)
check_specs <- list(
  fev_spec("sas_armcd_un", "arm", "us", by_visit = FALSE),
  fev_spec("sas_armcd_toep", "arm", "toep", by_visit = FALSE),
  fev_spec("sas_armcd_ar1", "arm", "ar1", by_visit = FALSE),
  fev_spec("sas_anova1_ar1", "arm * baseline", "ar1", by_visit = FALSE),
  fev_spec("sas_anova2_ar1", "arm * SEX + arm:baseline", "ar1", by_visit = FALSE)
)

datasets <- read_index()
for (name in c("sim_dropout", "sim_catcov")) {
  ds <- datasets[datasets$dataset == name, ]
  covs <- split_covs(ds$covariates)
  sc <- syntactic_copies(read_dataset(name), covs)
  raw <- sc$raw
  safe <- sc$safe
  for (outcome in unique(raw$outcome)) {
    dat <- prepare_post_baseline(raw, ds, outcome, safe)
    dat$resp <- dat$change
    names_map <- c(base_names, setNames(covs, safe))
    for (model in c("main", "by_visit")) {
      rhs <- paste(c(if (model == "main") "baseline" else "baseline * visit", safe,
                     "arm * visit"), collapse = " + ")
      specs[[length(specs) + 1]] <- list(
        dataset = name, outcome = outcome, model = model, dat = dat,
        fml = as.formula(paste("resp ~", rhs)), structure = "us",
        control = ds$control, treatment = ds$treatment, lsmean_by_visit = TRUE,
        term_names = names_map
      )
    }
  }
}

# ================================================================================================
# Run and write
# ================================================================================================
results <- lapply(specs, run_model)
check_results <- lapply(check_specs, run_model)

# ================================================================================================
# Sanity check: exactness of KR for a balanced, complete multivariate linear model
# ================================================================================================
# With complete balanced data, an unstructured Sigma and X_i = z_i' (x) I_k (here arm * visit),
# the REML Sigma is the residual cross-product / (n - 2), beta is OLS whatever Sigma, and the
# classical tests are exact (Kenward & Roger 1997, section 5): a contrast of arm at a visit or
# averaged over visits has an exact t(n - 2) distribution with variance l' Phi l (so Phi_A = Phi
# for it), and the arm:visit test (parallel profiles) is the two-sample Hotelling T^2,
# F = T^2 (n - 2 - q + 1) / ((n - 2) q) ~ F(q, n - 1 - q), q = k - 1. Simulated data; the
# Hotelling statistic is computed independently below from the subject x visit matrix.
set.seed(20240601)
n_sim <- 30
k_sim <- 4
Sigma_sim <- 0.5 ^ abs(outer(1:k_sim, 1:k_sim, "-")) * outer(1:k_sim, 1:k_sim, function(a, b) sqrt(a * b))
Y_sim <- matrix(rnorm(n_sim * k_sim), n_sim) %*% chol(Sigma_sim) +
  outer(rep(c(0, 0.6), each = n_sim / 2), c(0, 0.2, 0.5, 0.9), "+")
arm_sim <- factor(rep(c("c", "t"), each = n_sim / 2))
sim <- data.frame(
  subject_id = sprintf("S%02d", rep(seq_len(n_sim), each = k_sim)),
  arm = rep(arm_sim, each = k_sim),
  visit = factor(rep(sprintf("V%d", 1:k_sim), n_sim)),
  visit_k = rep(1:k_sim, n_sim), resp = as.numeric(t(Y_sim))
)
sanity <- run_model(list(
  dataset = "simulated_balanced", outcome = "y", model = "hotelling", dat = sim,
  fml = resp ~ arm * visit, structure = "us", control = "c", treatment = "t",
  lsmean_by_visit = TRUE, term_names = base_names
))
D <- Y_sim %*% t(cbind(-1, diag(k_sim - 1)))          # visit j - visit 1, j = 2..k
d_bar <- colMeans(D[arm_sim == "t", ]) - colMeans(D[arm_sim == "c", ])
S_pool <- ((n_sim / 2 - 1) * cov(D[arm_sim == "t", ]) + (n_sim / 2 - 1) * cov(D[arm_sim == "c", ])) /
  (n_sim - 2)
T2 <- (n_sim / 4) * as.numeric(t(d_bar) %*% solve(S_pool, d_bar))
q_sim <- k_sim - 1
F_hot <- T2 * (n_sim - 2 - q_sim + 1) / ((n_sim - 2) * q_sim)
sc <- sanity$contrasts
st <- sanity$type3
get_t3 <- function(method, what) st[st$effect == "arm:visit" & st$df_method == method, what]
sanity_out <- rbind(
  data.frame(check = "effect df (kenward_roger) = n - 2",
             value = max(abs(sc$df[sc$kind == "effect" & sc$df_method == "kenward_roger"] - (n_sim - 2))),
             tolerance = 1e-8),
  data.frame(check = "effect SE kenward_roger = unadjusted SE (Phi_A = Phi along l)",
             value = max(abs(sc$std_error[sc$kind == "effect" & sc$df_method == "kenward_roger"] /
                               sc$std_error[sc$kind == "effect" & sc$df_method == "satterthwaite"] - 1)),
             tolerance = 1e-8),
  data.frame(check = "effect df (satterthwaite) = n - 2",
             value = max(abs(sc$df[sc$kind == "effect" & sc$df_method == "satterthwaite"] - (n_sim - 2))),
             tolerance = 1e-8),
  data.frame(check = "arm:visit kenward_roger den df = n - 1 - q (Hotelling)",
             value = abs(get_t3("kenward_roger", "den_df") - (n_sim - 1 - q_sim)), tolerance = 1e-8),
  data.frame(check = "arm:visit kenward_roger F* = Hotelling F (relative)",
             value = abs(get_t3("kenward_roger", "F") / F_hot - 1), tolerance = 1e-8),
  data.frame(check = "arm kenward_roger den df = n - 2",
             value = abs(st$den_df[st$effect == "arm" & st$df_method == "kenward_roger"] - (n_sim - 2)),
             tolerance = 1e-8),
  data.frame(check = "arm:visit kenward_roger_expected F* = Hotelling F (relative)",
             value = abs(get_t3("kenward_roger_expected", "F") / F_hot - 1), tolerance = 1e-8),
  # Informational (not a requirement): the R_hj term of the log-Cholesky parametrisation
  # breaks the exactness.
  data.frame(check = "info: arm:visit kenward_roger_mmrm F* / Hotelling F - 1 (log-Cholesky)",
             value = get_t3("kenward_roger_mmrm", "F") / F_hot - 1, tolerance = NA)
)
sanity_out$passed <- sanity_out$value <= sanity_out$tolerance
print(sanity_out)
stopifnot(all(sanity_out$passed, na.rm = TRUE))

write_out(lapply(results, `[[`, "contrasts"), "kr_contrasts.csv")
write_out(lapply(results, `[[`, "type3"), "kr_type3.csv")
write_out(lapply(results, `[[`, "fit"), "kr_fit.csv")
write_out(c(lapply(results, `[[`, "diag"), lapply(check_results, `[[`, "diag")),
          "kr_diagnostics.csv")
write_out(lapply(check_results, `[[`, "contrasts"), "kr_sas_check_contrasts.csv")
write_out(lapply(check_results, `[[`, "type3"), "kr_sas_check_type3.csv")
write_out(lapply(check_results, `[[`, "fit"), "kr_sas_check_fit.csv")
write_out(list(sanity_out), "kr_sanity.csv")

elapsed <- (proc.time() - t_start)[["elapsed"]]
write_session("R_session_kr.txt", "make_kr_references.R",
              c("nlme", "emmeans", "numDeriv", "Matrix"),
              extra = sprintf("elapsed seconds: %.1f", elapsed))
cat(sprintf("done in %.1f s\n", elapsed))
