//! Competitors named in lost deals: each team's usual share of losses to
//! each rival, and a manager's tally of them over a window, for competitor
//! concentration.

use std::collections::VecDeque;
use std::ops::Range;

use crate::engine::Map;
use crate::event::Id;

use super::TeamSums;

/// Each competitor's share of every team member's competitor-named losses
/// (members naming none left out), per team, sorted: worked out once per
/// evaluation, so that a manager's yardstick is one pass over a short list
/// instead of a pass over every teammate's tally.
pub(super) struct UsualShares<'a> {
    /// Team → (the even split, competitor → members' shares, ascending).
    pub(super) by_team: Map<&'a str, (f64, Map<u32, Vec<f64>>)>,
}

impl<'a> UsualShares<'a> {
    /// Pseudo-losses smoothing each share toward the even split.
    pub(super) const PSEUDO: f64 = 2.0;

    /// `members` holds each team's managers as indices into `tallies`, their
    /// competitor-named losses.
    pub(super) fn new(
        members: &'a Map<Id, Vec<usize>>,
        tallies: &[(RivalTally, u64)],
        team_sums: &Map<Id, TeamSums>,
    ) -> UsualShares<'a> {
        let mut by_team = Map::default();
        for (team, members) in members {
            let candidates = team_sums.get(team).map_or(0, |t| t.rivals.len());
            let even = 1.0 / candidates.max(1) as f64;
            let tallies: Vec<&(RivalTally, u64)> = members.iter().map(|i| &tallies[*i]).collect();
            let mut rivals: Vec<u32> = tallies
                .iter()
                .flat_map(|(tally, _)| tally.iter().map(|(rival, _)| *rival))
                .collect();
            rivals.sort_unstable();
            rivals.dedup();
            let by_rival = rivals
                .into_iter()
                .map(|rival| {
                    let mut shares: Vec<f64> = tallies
                        .iter()
                        .filter(|(_, named)| *named > 0)
                        .map(|(tally, named)| Self::share(rival_losses(tally, rival), *named, even))
                        .collect();
                    shares.sort_by(f64::total_cmp);
                    (rival, shares)
                })
                .collect();
            by_team.insert(team.as_str(), (even, by_rival));
        }
        UsualShares { by_team }
    }

    pub(super) fn share(losses: u64, named: u64, even: f64) -> f64 {
        (losses as f64 + Self::PSEUDO * even) / (named as f64 + Self::PSEUDO)
    }

    /// A competitor's usual share of competitor-named losses for a manager
    /// who lost `losses` of `named` deals to it, and how many losses that
    /// share rests on (the test's beta weight); `team_named` is the rest of
    /// the team's competitor-named losses.
    ///
    /// The teammates' share is the mean of their own shares (each smoothed
    /// toward an even split by two pseudo-losses), leaving out the teammate
    /// most given to that rival when there are three or more, and the one
    /// least given to it as well when there are four or more. Averaging
    /// shares rather than pooling losses keeps one busy teammate, above all
    /// one diverting to another rival, from setting everyone's yardstick;
    /// trimming both ends keeps the mean unbiased (leaving out only the
    /// largest share biased it low, and an honest manager with an ordinary
    /// run of losses to one rival was accused on it).
    ///
    /// Where that share is below an even split between the rivals the team's
    /// losses name, it is shrunk toward the even split by
    /// [`Self::EVEN_PRIOR`] losses: a few teammates who happened to lose
    /// little to a rival must not make an ordinary share look like
    /// diversion. A share above the even split is left as it is (a rival
    /// that takes much of everyone's business is the market), so the prior
    /// only ever makes the test more lenient. (The company's share would be
    /// the better prior, but a scaled-out manager stage holds only its own
    /// teams.)
    pub(super) fn without(
        &self,
        team: &str,
        rival: u32,
        (losses, named): (u64, u64),
        team_named: u64,
    ) -> (f64, f64) {
        let even = self.by_team.get(team).map_or(1.0, |(even, _)| *even);
        let teammates = self.teammates(team, rival, losses, named);
        let weight = team_named as f64;
        let shrunk = (teammates * weight + even * Self::EVEN_PRIOR) / (weight + Self::EVEN_PRIOR);
        if shrunk > teammates {
            (shrunk, weight + Self::EVEN_PRIOR)
        } else {
            (teammates, weight)
        }
    }

    /// Weight of the even split in a rival's usual share below it, in losses.
    pub(super) const EVEN_PRIOR: f64 = 50.0;

    /// The teammates' trimmed mean share of `rival` (see [`Self::without`]).
    pub(super) fn teammates(&self, team: &str, rival: u32, losses: u64, named: u64) -> f64 {
        // Every manager is on its own team's list.
        let Some((even, by_rival)) = self.by_team.get(team) else {
            return 1.0;
        };
        let all = by_rival.get(&rival).map(Vec::as_slice).unwrap_or_default();
        // The manager's own share is one of `all`: leave one equal value out.
        let own = (named > 0).then(|| Self::share(losses, named, *even));
        let skip = own.and_then(|own| all.iter().position(|s| s.to_bits() == own.to_bits()));
        let teammates = all.len() - usize::from(skip.is_some());
        // `all` is ascending: the least given to the rival come first.
        let (trim_low, trim_high) = match teammates {
            0 => return *even,
            1 | 2 => (0, 0),
            3 => (0, 1),
            _ => (1, 1),
        };
        let kept = teammates - trim_low - trim_high;
        let sum: f64 = all
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .skip(trim_low)
            .take(kept)
            .map(|(_, share)| share)
            .sum();
        sum / kept as f64
    }
}

/// Losses per competitor (index, count), sorted by index: a manager names
/// few rivals, so a short sorted list beats a hash map built every day.
pub(super) type RivalTally = Vec<(u32, u64)>;

/// The losses in `rivals` on the days in `days`, per competitor, and their total.
pub(super) fn tally_rivals(rivals: &VecDeque<(i64, u32)>, days: Range<i64>) -> (RivalTally, u64) {
    let mut tally = RivalTally::new();
    let mut named = 0;
    for (day, rival) in rivals {
        if days.contains(day) {
            match tally.binary_search_by_key(rival, |(r, _)| *r) {
                Ok(i) => tally[i].1 += 1,
                Err(i) => tally.insert(i, (*rival, 1)),
            }
            named += 1;
        }
    }
    (tally, named)
}

pub(super) fn rival_losses(tally: &RivalTally, rival: u32) -> u64 {
    tally
        .binary_search_by_key(&rival, |(r, _)| *r)
        .map_or(0, |i| tally[i].1)
}
