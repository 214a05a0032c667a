# Timing twin of trialflow's conditional mean imputation (jump to reference) with jackknife
# standard errors, in R with nlme::gls: the MMRM change ~ baseline + age + sex + arm * visit with
# an unstructured covariance is refitted without each subject in turn, the remaining subjects'
# missing values are replaced by their conditional means under jump to reference, and the
# ANCOVA at the last visit is refitted. Prints the elapsed seconds on the last line.
#
# Usage (from benchmarks/bench_sensitivity.py): Rscript benchmarks/bench_sensitivity.R post.csv
suppressPackageStartupMessages(library(nlme))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = FALSE)
d <- d[!is.na(d$baseline) & !is.na(d$age) & !is.na(d$sex), ]
visits <- unique(d$visit[order(d$week)])
d$visit <- factor(d$visit, levels = visits)
d$arm <- factor(d$arm)
d$arm <- relevel(d$arm, ref = "education")
d$visit_k <- as.integer(d$visit)
subjects <- sort(unique(d$subject_id))
k <- length(visits)

cmi_j2r <- function(dat) {
  obs <- dat[!is.na(dat$change), ]
  fit <- gls(change ~ baseline + age + sex + arm * visit, data = obs,
             correlation = corSymm(form = ~ visit_k | subject_id),
             weights = varIdent(form = ~ 1 | visit), method = "REML",
             control = glsControl(returnObject = TRUE))
  sigma <- getVarCov(fit, individual = obs$subject_id[which.max(table(obs$subject_id)[obs$subject_id])])
  grid <- dat[order(dat$subject_id, dat$visit_k), ]
  x_own <- model.matrix(~ baseline + age + sex + arm * visit, grid)
  ref <- grid
  ref$arm <- factor("education", levels = levels(dat$arm))
  x_ref <- model.matrix(~ baseline + age + sex + arm * visit, ref)
  beta <- coef(fit)
  mu_own <- matrix(x_own %*% beta, ncol = k, byrow = TRUE)
  mu_ref <- matrix(x_ref %*% beta, ncol = k, byrow = TRUE)
  y <- matrix(grid$change, ncol = k, byrow = TRUE)
  for (i in seq_len(nrow(y))) {
    o <- which(!is.na(y[i, ]))
    m <- which(is.na(y[i, ]))
    if (!length(m)) next
    last <- if (length(o)) max(o) else 0
    mu <- ifelse(seq_len(k) > last, mu_ref[i, ], mu_own[i, ])
    y[i, m] <- mu[m] + if (length(o)) sigma[m, o, drop = FALSE] %*%
      solve(sigma[o, o], y[i, o] - mu[o]) else 0
  }
  first <- grid[grid$visit_k == 1, ]
  coef(lm(y[, k] ~ first$arm + first$baseline + first$age + first$sex))[2]
}

start <- proc.time()[["elapsed"]]
full <- cmi_j2r(d)
loo <- sapply(subjects, function(s) cmi_j2r(d[d$subject_id != s, ]))
n <- length(subjects)
se <- sqrt((n - 1) / n * sum((loo - mean(loo))^2))
elapsed <- proc.time()[["elapsed"]] - start
cat(sprintf("estimate %.6f jackknife SE %.6f\n", full, se))
cat(sprintf("%.3f\n", elapsed))
