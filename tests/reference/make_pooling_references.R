# Reference results for trialflow's Rubin's rules (trialflow/stats/pooling.py): mice::pool.scalar.
#
# Run from the package root:  Rscript tests/reference/make_pooling_references.R
#
# For a few seeded sets of m estimates and variances, pool.scalar(Q, U, n, k) gives the pooled
# estimate qbar, the within, between and total variances (ubar, b, t), the Barnard-Rubin df with
# complete-data df n - k, r = (1 + 1/m) b / ubar and the fraction of missing information fmi.
# Case "large" uses n = Inf (pool.scalar's large-sample df, Rubin 1987: (m - 1) / lambda^2).
# The inputs and outputs are written to tests/reference/output/pooling.csv (one row per case,
# the inputs as ';'-separated lists, the outputs with 17 significant digits), and
# R_session_pooling.txt records the R and mice versions.
suppressPackageStartupMessages(library(mice))

out_dir <- file.path("tests", "reference", "output")
set.seed(20261201)
cases <- list(
  list(name = "m5_small", m = 5, n = 40, k = 4, spread = 0.3),
  list(name = "m20_moderate", m = 20, n = 120, k = 6, spread = 0.1),
  list(name = "m3_heavy", m = 3, n = 25, k = 3, spread = 1.0),
  list(name = "m100", m = 100, n = 200, k = 5, spread = 0.05),
  list(name = "large", m = 10, n = Inf, k = 0, spread = 0.2)
)
fmt <- function(x) trimws(formatC(x, digits = 17, format = "g"))
rows <- lapply(cases, function(cs) {
  q <- rnorm(cs$m, mean = 1.5, sd = cs$spread)
  u <- rgamma(cs$m, shape = 20, rate = 20 / 0.25)
  p <- pool.scalar(Q = q, U = u, n = cs$n, k = cs$k)
  data.frame(
    case = cs$name, m = cs$m,
    df_complete = if (is.finite(cs$n)) fmt(cs$n - cs$k) else "",
    estimates = paste(fmt(q), collapse = ";"), variances = paste(fmt(u), collapse = ";"),
    qbar = fmt(p$qbar), ubar = fmt(p$ubar), b = fmt(p$b), t = fmt(p$t), df = fmt(p$df),
    r = fmt(p$r), fmi = fmt(p$fmi)
  )
})
write.csv(do.call(rbind, rows), file.path(out_dir, "pooling.csv"), row.names = FALSE)
writeLines(c(R.version.string, paste("mice", packageVersion("mice"))),
           file.path(out_dir, "R_session_pooling.txt"))
