# Closed-form power of the ANCOVA t-test at the final visit, for the closed-form check of the
# power planner (tests/test_power.py, trialflow/power.py).
#
# Run from the package root:  Rscript tests/reference/make_power_references.R
#
# Design (one row per case): two arms of n participants, a baseline and one follow-up visit,
# no dropout; the outcome has SD sd_baseline at baseline and sd_final at follow-up, with
# correlation rho between them. The ANCOVA of the follow-up value (or of the change from
# baseline, which gives the same treatment estimate) on baseline and arm has residual SD
# sd_final * sqrt(1 - rho^2), so its t statistic for the treatment difference delta follows a
# noncentral t distribution with df = 2n - 3 and noncentrality
# delta / (sd_residual * sqrt(2 / n)) (the usual approximation that ignores the chance
# imbalance of baseline between the arms). Power of the two-sided test at level alpha:
#   P(T > qt(1 - alpha / 2, df)) + P(T < -qt(1 - alpha / 2, df)).
# It is computed twice: explicitly with pt(), and with power.t.test() given the residual SD
# (whose df, 2n - 2, differ by the one df the baseline slope uses); the test uses the first.

out_dir <- file.path("tests", "reference", "output")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

cases <- data.frame(
  case = c("effect", "null"),
  n_per_arm = c(20, 20),
  effect = c(6, 0),
  sd_baseline = c(8, 8),
  sd_final = c(10, 10),
  rho = c(0.6, 0.6),
  alpha = c(0.05, 0.05)
)
fmt <- function(x) trimws(formatC(x, digits = 17, format = "g"))
rows <- lapply(seq_len(nrow(cases)), function(i) {
  cs <- cases[i, ]
  sd_residual <- cs$sd_final * sqrt(1 - cs$rho^2)
  df <- 2 * cs$n_per_arm - 3
  ncp <- cs$effect / (sd_residual * sqrt(2 / cs$n_per_arm))
  crit <- qt(1 - cs$alpha / 2, df)
  power <- pt(crit, df, ncp = ncp, lower.tail = FALSE) + pt(-crit, df, ncp = ncp)
  t_test <- power.t.test(n = cs$n_per_arm, delta = cs$effect, sd = sd_residual,
                         sig.level = cs$alpha, type = "two.sample",
                         alternative = "two.sided", strict = TRUE)$power
  data.frame(cs, sd_residual = fmt(sd_residual), df = df, ncp = fmt(ncp),
             power = fmt(power), power_t_test = fmt(t_test))
})
write.csv(do.call(rbind, rows), file.path(out_dir, "power_closed_form.csv"), row.names = FALSE)
writeLines(R.version.string, file.path(out_dir, "R_session_power.txt"))
