//! A real, public CRM pipeline (Maven Analytics' sample, copied from
//! ../shared/data/maven-crm into tests/data) converted to events and
//! replayed: everything decodes, every alert passes the schema, and what
//! feidan reports on it is pinned here and in the README.

mod common;

use std::path::Path;

use feidan::alert::{AlertKind, Status};
use feidan::backtest;
use feidan::config::Config;
use feidan::import;

#[test]
fn the_maven_crm_sample_imports_and_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/maven-crm");
    let imported = import::maven_crm(&dir).unwrap();
    assert_eq!(imported.rows, 8_800);
    assert_eq!(imported.skipped_no_account, 1_425);
    assert_eq!(imported.skipped_no_engage_date, 163);
    // Created for every kept row; won and lost closes (won also an order).
    assert_eq!(imported.events.len(), 18_161);

    let validator = common::schema("event.v1.schema.json");
    let lines: Vec<u8> = imported
        .events
        .iter()
        .flat_map(|event| {
            let json = event.to_json();
            common::assert_valid(&validator, &json);
            json.to_string().into_bytes().into_iter().chain([b'\n'])
        })
        .collect();

    let report = backtest::replay(&Config::defaults(), lines.as_slice(), |_| Ok(())).unwrap();
    assert_eq!(report.outcomes.get("processed"), Some(&18_161));
    assert!(report.dead_letters.is_empty());

    let alerts = common::schema("alert.v1.schema.json");
    for alert in &report.alerts {
        common::assert_valid(&alerts, &alert.to_json());
    }
    // What feidan reports on this data: no manager stands out; a few
    // accounts go quiet for three weeks or more against a rhythm of a few
    // days, and most resume. (With a business baseline of a year, 7 did, 6
    // of them resuming: four of those were silences of the summer and autumn
    // of 2017, when the whole company closed fewer deals than in the months
    // before, which a baseline reaching back into the thin months of 2016
    // did not see as a lull.)
    let count = |kind: AlertKind, status: Status| {
        report
            .alerts
            .iter()
            .filter(|a| a.status == status && a.kind == kind)
            .count()
    };
    let firing = |kind: AlertKind| count(kind, Status::Firing);
    for kind in AlertKind::ALL
        .into_iter()
        .filter(|k| *k != AlertKind::AccountChurn)
    {
        assert_eq!(firing(kind), 0, "{kind:?}");
    }
    let churn = firing(AlertKind::AccountChurn);
    assert!((2..=10).contains(&churn), "{churn} account-churn alerts");
    let resumed = count(AlertKind::AccountChurn, Status::Resolved);
    assert!(2 * resumed >= churn, "{resumed} of {churn} resolved");
}
