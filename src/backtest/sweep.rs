//! `backtest --sweep`: the grid of configurations a data engineer tunes
//! thresholds over (each `KEY=V1,V2,…` an axis, every combination one
//! replay), and the table of one row per combination.

use std::io::{self, Write};

use crate::alert::{Alert, Status};

use super::{score_accounts, score_managers, GroundTruth};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("--sweep {0} is not KEY=V1,V2,…")]
    NotKeyValues(String),
    #[error("--sweep {0} gives no value")]
    NoValue(String),
}

/// The axes of a sweep, in the order given: a key and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepGrid {
    axes: Vec<(String, Vec<String>)>,
}

impl SweepGrid {
    /// The grid of `--sweep` arguments, each `KEY=V1,V2,…`.
    ///
    /// # Errors
    ///
    /// [`SweepError`] naming the argument that is not `KEY=V1,V2,…` or
    /// gives an empty value.
    pub fn parse(items: &[String]) -> Result<SweepGrid, SweepError> {
        let mut axes = Vec::new();
        for item in items {
            let (key, values) = item
                .split_once('=')
                .ok_or_else(|| SweepError::NotKeyValues(item.clone()))?;
            let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
            if key.trim().is_empty() || values.iter().any(String::is_empty) {
                return Err(SweepError::NoValue(item.clone()));
            }
            axes.push((key.trim().to_owned(), values));
        }
        Ok(SweepGrid { axes })
    }

    /// How many combinations the grid holds.
    pub fn len(&self) -> usize {
        self.axes.iter().map(|(_, values)| values.len()).product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The combination at `index` (below [`SweepGrid::len`]) as `KEY=VALUE`
    /// overrides, one per axis: the first axis varies fastest.
    pub fn combination(&self, index: usize) -> Vec<String> {
        let mut rest = index;
        self.axes
            .iter()
            .map(|(key, values)| {
                let value = &values[rest % values.len()];
                rest /= values.len();
                format!("{key}={value}")
            })
            .collect()
    }

    /// The table's header: the keys, then the scores.
    ///
    /// # Errors
    ///
    /// Only the writer's.
    pub fn write_header(&self, out: &mut impl Write) -> io::Result<()> {
        let keys: Vec<&str> = self.axes.iter().map(|(key, _)| key.as_str()).collect();
        writeln!(
            out,
            "{}\tmanager_recall\tmanager_precision\tfalse_per_100_manager_years\tmedian_delay_days\taccount_recall\taccount_precision\talerts",
            keys.join("\t")
        )
    }
}

/// One row of the table: the combination's values (its `KEY=VALUE`
/// overrides), the scores of its `alerts` against `truth` (dashes without
/// labels), and how many alerts fired.
///
/// # Errors
///
/// Only the writer's.
pub fn write_row(
    out: &mut impl Write,
    combination: &[String],
    alerts: &[Alert],
    truth: Option<&GroundTruth>,
) -> io::Result<()> {
    let values: Vec<&str> = combination
        .iter()
        .map(|c| c.split_once('=').map_or("", |(_, v)| v))
        .collect();
    let firing = alerts.iter().filter(|a| a.status == Status::Firing).count();
    match truth {
        Some(truth) => {
            let m = score_managers(alerts, truth);
            let a = score_accounts(alerts, truth);
            writeln!(
                out,
                "{}\t{:.2}\t{:.2}\t{:.2}\t{}\t{:.2}\t{:.2}\t{firing}",
                values.join("\t"),
                m.recall,
                m.precision,
                m.false_per_100_manager_years,
                m.median_delay_days
                    .map_or("n/a".to_owned(), |d| format!("{d:.0}")),
                a.recall,
                a.precision
            )
        }
        None => writeln!(out, "{}\t-\t-\t-\t-\t-\t-\t{firing}", values.join("\t")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(items: &[&str]) -> Result<SweepGrid, SweepError> {
        SweepGrid::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_combination_once_the_first_axis_fastest() {
        let grid = grid(&["a.x=1,2", "b.y = 0.1, 0.2 ,0.3"]).unwrap();
        assert_eq!(grid.len(), 6);
        let all: Vec<Vec<String>> = (0..grid.len()).map(|i| grid.combination(i)).collect();
        assert_eq!(all[0], ["a.x=1", "b.y=0.1"]);
        assert_eq!(all[1], ["a.x=2", "b.y=0.1"]);
        assert_eq!(all[5], ["a.x=2", "b.y=0.3"]);
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 6);
        let mut header = Vec::new();
        grid.write_header(&mut header).unwrap();
        assert!(String::from_utf8(header)
            .unwrap()
            .starts_with("a.x\tb.y\tmanager_recall\t"));
    }

    #[test]
    fn a_malformed_axis_is_named() {
        let err = grid(&["a.x=1", "detect.win_rate.alpha"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--sweep detect.win_rate.alpha is not KEY=V1,V2,…"
        );
        let err = grid(&["a.x=1,,2"]).unwrap_err();
        assert_eq!(err.to_string(), "--sweep a.x=1,,2 gives no value");
    }

    #[test]
    fn a_row_without_labels_counts_the_alerts_only() {
        let mut row = Vec::new();
        write_row(&mut row, &["a.x=1".to_owned()], &[], None).unwrap();
        assert_eq!(String::from_utf8(row).unwrap(), "1\t-\t-\t-\t-\t-\t-\t0\n");
    }
}
