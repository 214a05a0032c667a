# Hedges' g of change from R effectsize, a maintained implementation (not the formula retyped).
#
# For every dataset listed in tests/reference/data/datasets.csv, every outcome and every
# post-baseline visit: the change from baseline of every subject with one (no covariate
# needed), treatment arm as x and control arm as y, so the effect is treatment - control.
#   effectsize::cohens_d(x, y)   Cohen's d with the pooled SD (no small-sample correction)
#   effectsize::hedges_g(x, y)   Hedges' g: d times the exact correction
#                                J = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)), df = n_t + n_c - 2;
#                                95% CI by inverting the noncentral t distribution of the
#                                two-sample t statistic (effectsize's "ncp" method), times J
# trialflow uses Hedges & Olkin's approximate J = 1 - 3 / (4 (n_t + n_c) - 9) and a normal
# interval g +- z se with the large-sample se; tests/test_hedges_g_maintained.py states what
# agrees exactly and how far the interval methods differ.
#
# Writes tests/reference/output/hedges_effectsize.csv (dataset, outcome, visit, n_treatment,
# n_control, cohens_d, hedges_g, ci_lower, ci_upper) and R_session_effectsize.txt.
# Needs R effectsize (Debian: apt-get install --no-install-recommends r-cran-effectsize).
# Run from the package root: Rscript tests/reference/make_effectsize_references.R

source(file.path("tests", "reference", "reference_common.R"))

suppressPackageStartupMessages(library(effectsize))

rows <- list()
index <- read_index()

for (i in seq_len(nrow(index))) {
  ds <- index$dataset[i]
  raw <- read_lmm_dataset(ds)
  post_visits <- setdiff(ordered_visits(raw), index$baseline_visit[i])
  for (outcome in unique(raw$outcome)) {
    for (v in post_visits) {
      dv <- raw[raw$outcome == outcome & raw$visit == v & !is.na(raw$change), ]
      x <- dv$change[dv$arm == index$treatment[i]]
      y <- dv$change[dv$arm == index$control[i]]
      d <- cohens_d(x, y, pooled_sd = TRUE, ci = 0.95, verbose = FALSE)
      g <- hedges_g(x, y, pooled_sd = TRUE, ci = 0.95, verbose = FALSE)
      rows[[length(rows) + 1]] <- data.frame(
        dataset = ds, outcome = outcome, visit = v, n_treatment = length(x),
        n_control = length(y), cohens_d = d$Cohens_d, hedges_g = g$Hedges_g,
        ci_lower = g$CI_low, ci_upper = g$CI_high, stringsAsFactors = FALSE)
    }
  }
}

write_out(rows, "hedges_effectsize.csv")
write_session("R_session_effectsize.txt", "make_effectsize_references.R", "effectsize")
