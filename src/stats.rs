//! The statistical tests named in alert schema v1 (DESIGN §3), computed so
//! that anyone can recompute an alert's `p_value` from its `test` parameters
//! with an ordinary statistics package (scipy.stats, R).
//!
//! Unit tests compare every function with reference values computed outside
//! this project (`tests/data/reference_tails.csv`: exact sums in 50-digit
//! arithmetic, `tests/data/reference_tails.py`).

use std::sync::OnceLock;

use statrs::function::beta::beta_reg;
use statrs::function::gamma::{gamma_ur, ln_gamma};

/// P[X ≤ k] for X ~ Binomial(n, p): scipy `binom.cdf(k, n, p)`.
///
/// Summed term by term from the tail's far end inward (the side of the mode
/// away from the tail is one minus the other tail): a few terms for the
/// small books and windows feidan tests, where the regularised incomplete
/// beta function took several hundred operations.
pub fn binomial_lower(k: u64, n: u64, p: f64) -> f64 {
    if k >= n || p.is_nan() || p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    if k < binomial_mode(n, p) {
        binomial_tail_down(k, n, p)
    } else {
        1.0 - binomial_tail_up(k + 1, n, p)
    }
}

/// P[X ≥ k] for X ~ Binomial(n, p): scipy `binom.sf(k - 1, n, p)`.
pub fn binomial_upper(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 || p.is_nan() {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    if k > binomial_mode(n, p) {
        binomial_tail_up(k, n, p)
    } else {
        1.0 - binomial_tail_down(k - 1, n, p)
    }
}

fn binomial_mode(n: u64, p: f64) -> u64 {
    ((n + 1) as f64 * p).floor() as u64
}

/// P[X ≤ k] for k below the mode: from pmf(k) down, each term smaller,
/// pmf(i-1) / pmf(i) = i (1-p) / ((n-i+1) p).
fn binomial_tail_down(k: u64, n: u64, p: f64) -> f64 {
    let odds = (1.0 - p) / p;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for i in (1..=k).rev() {
        term *= i as f64 * odds / (n - i + 1) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    (binomial_ln_pmf(k, n, p) + sum.ln()).exp().clamp(0.0, 1.0)
}

/// P[X ≥ k] for k above the mode: from pmf(k) up, each term smaller,
/// pmf(i+1) / pmf(i) = (n-i) p / ((i+1) (1-p)).
fn binomial_tail_up(k: u64, n: u64, p: f64) -> f64 {
    let odds = p / (1.0 - p);
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for i in k..n {
        term *= (n - i) as f64 * odds / (i + 1) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    (binomial_ln_pmf(k, n, p) + sum.ln()).exp().clamp(0.0, 1.0)
}

fn binomial_ln_pmf(k: u64, n: u64, p: f64) -> f64 {
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
        + k as f64 * p.ln()
        + (n - k) as f64 * (-p).ln_1p()
}

/// ln(k!), from a table below 1024 (filled by `ln_gamma`, so the same
/// values), by `ln_gamma` above.
fn ln_factorial(k: u64) -> f64 {
    const TABLED: u64 = 1024;
    static TABLE: OnceLock<Vec<f64>> = OnceLock::new();
    if k >= TABLED {
        return ln_gamma(k as f64 + 1.0);
    }
    let table = TABLE.get_or_init(|| (0..TABLED).map(|i| ln_gamma(i as f64 + 1.0)).collect());
    table[k as usize]
}

/// P[X ≤ k] for X ~ BetaBinomial(n, a, b): scipy `betabinom.cdf(k, n, a, b)`.
///
/// The beta-binomial is a binomial whose success rate is itself uncertain,
/// Beta(a, b): the right test when the expected rate is learnt from a finite
/// history, so a thin history cannot produce a confident accusation.
pub fn betabinom_lower(k: u64, n: u64, a: f64, b: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    // From pmf(k) down to pmf(0) by the ratio of neighbouring terms:
    // pmf(i-1) / pmf(i) = i (n-i+b) / ((n-i+1) (i-1+a)). One log-gamma
    // evaluation in all, and no underflow: the sum is relative to pmf(k).
    let (nf, mut term, mut sum) = (n as f64, 1.0f64, 1.0f64);
    for i in (1..=k).rev() {
        let i = i as f64;
        term *= i * (nf - i + b) / ((nf - i + 1.0) * (i - 1.0 + a));
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    (betabinom_ln_pmf(k, n, a, b) + sum.ln())
        .exp()
        .clamp(0.0, 1.0)
}

/// P[X ≥ k] for X ~ BetaBinomial(n, a, b): scipy `betabinom.sf(k - 1, n, a, b)`.
pub fn betabinom_upper(k: u64, n: u64, a: f64, b: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    // From pmf(k) up to pmf(n): pmf(i+1) / pmf(i) = (n-i) (i+a) / ((i+1) (n-i-1+b)).
    let (nf, mut term, mut sum) = (n as f64, 1.0f64, 1.0f64);
    for i in k..n {
        let i = i as f64;
        term *= (nf - i) * (i + a) / ((i + 1.0) * (nf - i - 1.0 + b));
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    (betabinom_ln_pmf(k, n, a, b) + sum.ln())
        .exp()
        .clamp(0.0, 1.0)
}

/// P(T > t) for T ~ Gamma(shape, scale): scipy `gamma.sf(t, shape, scale=scale)`.
pub fn gamma_survival(t: f64, shape: f64, scale: f64) -> f64 {
    if t <= 0.0 {
        return 1.0;
    }
    if !(shape > 0.0 && scale > 0.0) {
        return 1.0;
    }
    gamma_ur(shape, t / scale).clamp(0.0, 1.0)
}

/// P[T ≤ t] for T ~ Student's t with `df` degrees of freedom: scipy
/// `t.cdf(t, df)`.
pub fn student_t_lower(t: f64, df: f64) -> f64 {
    if df.is_nan() || df <= 0.0 || t.is_nan() {
        return 1.0;
    }
    let tail = 0.5 * beta_reg(df / 2.0, 0.5, df / (df + t * t));
    if t < 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// P(X > x) for X ~ χ²(df): scipy `chi2.sf(x, df)`.
pub fn chi2_upper(x: f64, df: u64) -> f64 {
    gamma_survival(x, df as f64 / 2.0, 2.0)
}

/// Fisher's method: −2 Σ ln pᵢ, and its p-value under χ²(2k).
/// Returns `(statistic, p_value)`; p-values are floored at 1e-300 so one
/// exact zero cannot make the statistic infinite.
pub fn fisher_combined(p_values: &[f64]) -> (f64, f64) {
    let statistic: f64 = p_values
        .iter()
        .map(|p| -2.0 * p.clamp(1e-300, 1.0).ln())
        .sum();
    (statistic, chi2_upper(statistic, 2 * p_values.len() as u64))
}

/// The alert `score`: min(100, 10 · −log10(p)); 30 at p = 0.001, 60 at 1e-6.
pub fn score(p_value: f64) -> f64 {
    if p_value <= 0.0 {
        return 100.0;
    }
    (-10.0 * p_value.log10()).clamp(0.0, 100.0)
}

fn betabinom_ln_pmf(k: u64, n: u64, a: f64, b: f64) -> f64 {
    let ln_choose = ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k);
    let (k, n) = (k as f64, n as f64);
    ln_choose + ln_beta(k + a, n - k + b) - ln_beta(a, b)
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative agreement with the reference, or absolute for tiny values.
    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1e-300)
            || (actual - expected).abs() < 1e-14
    }

    #[test]
    fn matches_scipy_reference_tails() {
        let table = include_str!("../tests/data/reference_tails.csv");
        let mut checked = 0;
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            let num = |i: usize| cols[i].parse::<f64>().unwrap();
            let (k, n) = (num(1) as u64, num(2) as u64);
            let expected = num(5);
            let actual = match cols[0] {
                "binomial_lower" => binomial_lower(k, n, num(3)),
                "binomial_upper" => binomial_upper(k, n, num(3)),
                "betabinom_lower" => betabinom_lower(k, n, num(3), num(4)),
                "betabinom_upper" => betabinom_upper(k, n, num(3), num(4)),
                "gamma_survival" => gamma_survival(num(1), num(2), num(3)),
                "chi2_upper" => chi2_upper(num(1), num(2) as u64),
                "student_t_lower" => student_t_lower(num(1), num(2)),
                other => panic!("unknown test {other}"),
            };
            assert!(close(actual, expected), "{line}: got {actual:e}");
            checked += 1;
        }
        assert!(checked >= 40, "reference table too small: {checked}");
    }

    #[test]
    fn fisher_combines_like_the_textbook() {
        let (x, p) = fisher_combined(&[0.01, 0.01, 0.001]);
        assert!((x - 32.2362).abs() < 1e-3);
        assert!((p - chi2_upper(x, 6)).abs() < 1e-15);
        assert!(fisher_combined(&[0.5, 0.5]).1 > 0.5);
    }

    #[test]
    fn score_bands_follow_the_contract() {
        assert!((score(1e-3) - 30.0).abs() < 1e-9);
        assert!((score(1e-6) - 60.0).abs() < 1e-9);
        assert_eq!(score(1e-30), 100.0);
        assert_eq!(score(1.0), 0.0);
    }

    #[test]
    fn edge_cases_are_certain() {
        assert_eq!(binomial_lower(5, 5, 0.3), 1.0);
        assert_eq!(binomial_upper(0, 5, 0.3), 1.0);
        assert_eq!(betabinom_upper(6, 5, 1.0, 1.0), 0.0);
    }
}
