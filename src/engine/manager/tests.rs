//! Tests of the manager stage's judging.

use super::judge::book_evidence;
use super::*;
use crate::detect::book_churn::Cited;

/// A team of the judged manager (index 0) and teammates who lost
/// `losses[i]` of 20 competitor-named deals to rival 0, with five
/// competitors named in the team.
fn usual_share(own: u64, teammates: &[u64]) -> f64 {
    let tallies: Vec<(RivalTally, u64)> = std::iter::once(own)
        .chain(teammates.iter().copied())
        .map(|losses| (vec![(0, losses), (1, 20 - losses)], 20))
        .collect();
    let team = Id::from("team-1");
    let members: Map<Id, Vec<usize>> = [(team.clone(), (0..tallies.len()).collect())]
        .into_iter()
        .collect();
    let sums = TeamSums {
        rivals: (0..5).map(|rival| (rival, 1)).collect(),
        ..TeamSums::default()
    };
    let team_sums: Map<Id, TeamSums> = [(team.clone(), sums)].into_iter().collect();
    UsualShares::new(&members, &tallies, &team_sums).teammates(&team, 0, own, 20)
}

/// A teammate's smoothed share (two pseudo-losses at the even split 1/5).
fn smoothed(losses: f64) -> f64 {
    (losses + 0.4) / 22.0
}

#[test]
fn usual_competitor_share_trims_both_ends_of_the_team() {
    // Teammates around 4 losses in 20, one given to the rival (12) and
    // one not (1): both ends left out, the mean is the middle's.
    let usual = usual_share(10, &[1, 3, 4, 5, 12]);
    let middle = (smoothed(3.0) + smoothed(4.0) + smoothed(5.0)) / 3.0;
    assert!((usual - middle).abs() < 1e-12, "{usual} vs {middle}");
    // Leaving out only the largest share would put it lower, and make
    // an ordinary run of losses to the rival look like diversion.
    assert!(usual > (smoothed(1.0) + middle * 3.0) / 4.0 + 0.01);
    // The manager's own share never sets the yardstick.
    assert_eq!(usual, usual_share(19, &[1, 3, 4, 5, 12]));
}

#[test]
fn usual_competitor_share_of_small_teams() {
    // Three teammates: the one most given to the rival is left out.
    let usual = usual_share(10, &[2, 4, 15]);
    assert!((usual - (smoothed(2.0) + smoothed(4.0)) / 2.0).abs() < 1e-12);
    // Two: both count.
    let usual = usual_share(10, &[2, 4]);
    assert!((usual - (smoothed(2.0) + smoothed(4.0)) / 2.0).abs() < 1e-12);
    // None: the even split.
    assert_eq!(usual_share(10, &[]), 0.2);
}

#[test]
fn a_usual_competitor_share_below_an_even_split_leans_toward_it() {
    // The judged manager lost 9 of 12 to rival 0; three teammates lost
    // 1 of 10 each to it, and rival 1 took the rest: an even split is 1/2.
    let mut tallies: Vec<(RivalTally, u64)> = vec![(vec![(0, 9), (1, 3)], 12)];
    tallies.extend((0..3).map(|_| (vec![(0, 1), (1, 9)], 10)));
    let team = Id::from("team-1");
    let members: Map<Id, Vec<usize>> = [(team.clone(), (0..4).collect())].into_iter().collect();
    let sums = TeamSums {
        rivals: (0..2).map(|rival| (rival, 1)).collect(),
        ..TeamSums::default()
    };
    let team_sums: Map<Id, TeamSums> = [(team.clone(), sums)].into_iter().collect();
    let usual = UsualShares::new(&members, &tallies, &team_sums);
    let teammates = usual.teammates(&team, 0, 9, 12);
    assert!((teammates - 2.0 / 12.0).abs() < 1e-12, "{teammates}");
    // Below the even split: shrunk toward it by 50 losses.
    let (share, weight) = usual.without(&team, 0, (9, 12), 30);
    let expected = (teammates * 30.0 + 0.5 * 50.0) / 80.0;
    assert!((share - expected).abs() < 1e-12, "{share} vs {expected}");
    assert_eq!(weight, 80.0);
    // Above it (rival 1 takes most of the teammates' losses): as it is.
    let (share, weight) = usual.without(&team, 1, (3, 12), 30);
    assert_eq!(share, usual.teammates(&team, 1, 3, 12));
    assert!(share > 0.5 && weight == 30.0, "{share} {weight}");
}

#[test]
fn a_book_alert_cites_the_accounts_its_test_counted() {
    use crate::engine::account::{evidence_of, ChurningAccount};
    use crate::event::{Event, EventBody};
    // A churns unvisited, B is quiet and visited (not churning yet), C
    // churns and is visited.
    let listed = |id: &str, p_value: f64, visited: bool, churning: bool| {
        let order = Event {
            event_id: format!("order-{id}").into(),
            occurred_at: Timestamp(0),
            manager_id: "kam-1".into(),
            account_id: id.into(),
            team: "t".into(),
            body: EventBody::OrderPlaced {
                order_id: "o".into(),
                amount: 1.0,
            },
        };
        ChurningAccount {
            account_id: id.into(),
            p_value,
            visited,
            churning,
            evidence: vec![evidence_of(&order, None)],
        }
    };
    let book = Book {
        churning_accounts: vec![
            listed("A", 0.001, false, true),
            listed("B", 0.05, true, false),
            listed("C", 0.002, true, true),
        ],
        ..Book::default()
    };
    let cited = |cited: Cited| -> Vec<String> {
        book_evidence(&book, cited, 20)
            .iter()
            .map(|item| item["account_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Visited first, then by p-value.
    assert_eq!(cited(Cited::Churning), ["C", "A"]);
    assert_eq!(cited(Cited::Visited(None)), ["C", "B"]);
    // Past a tighter bar: the visited accounts that far gone, not A
    // (unvisited) nor B (quiet past the loosest bar only).
    assert_eq!(cited(Cited::Visited(Some(0.01))), ["C"]);
}
