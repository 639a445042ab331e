#!/usr/bin/env python3
"""A sales organisation drawn by a generator independent of `feidan simulate`.

feidan's detection was built and measured on worlds of its own simulator. This
script draws worlds on other assumptions, written apart from it, to check that
the detection is sound rather than tuned to one generator:

- order gaps of three shapes: memoryless (exponential), heavy-tailed
  (lognormal) and near-regular; orders only on working days;
- books of 6 to 30 accounts, of very different sizes;
- a summer slowdown (orders at 40% for four weeks in August) and a Christmas
  break (20% for two weeks), not the simulator's January lull;
- a market shock in one team: win rates at 60%, orders at 70%, and one in
  seven of the team's customers lost for good, for five months;
- honest churn at 15% a year, the manager still calling on a lost customer
  for up to eight weeks; honest decline (an account ordering half as often);
- leave of three to six weeks (no activity, no new deals, open deals frozen),
  reassignments within a team with `account_assigned`, new hires with fresh
  customers;
- diversion in four styles of its own: `silent` (the largest third of the book
  stops ordering within a week while the manager keeps visiting), `gradual`
  (two in five accounts order less and less), `competitor` (losses steered to
  one rival, two accounts gone), `quote` (quotes cut by half before the deal
  is lost, a quarter of the book ordering less).

It writes schema-v1 events (JSON lines, in time order) and a labels file in
the format `feidan backtest --labels` reads:

    benches/foreign_world.py --seed 1 --out world.jsonl   # and world.labels.json
    feidan backtest --input world.jsonl --labels world.labels.json

Standard library only; deterministic for a seed.
"""

import argparse
import datetime as dt
import json
import math
import random

START = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
COMPETITORS = ["Acme", "Borealis", "Cobalt", "Dynamo", "Everest", "Fulcrum"]


def iso(day, seconds):
    t = START + dt.timedelta(days=day, seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def working_day(day):
    """The first working day on or after `day` (START is a Wednesday)."""
    while (START + dt.timedelta(days=day)).weekday() >= 5:
        day += 1
    return day


def season(day):
    """The company-wide factor on ordering: August and Christmas are slow."""
    date = START + dt.timedelta(days=day)
    if date.month == 8 and date.day <= 28:
        return 0.4
    if (date.month == 12 and date.day >= 20) or (date.month == 1 and date.day <= 3):
        return 0.2
    return 1.0


# What a diversion (start day, factor on the ordering rate, factor on the
# order amount, days to ramp in) scales.
RATE, AMOUNT = 1, 2


def diversion_factor(account, day, which):
    """The diversion's factor on the account's ordering `RATE` or order
    `AMOUNT` on `day`, ramped in from 1: 1 without diversion."""
    diverted = account["diverted"]
    if diverted is None or day < diverted[0]:
        return 1.0
    start, ramp = diverted[0], diverted[3]
    progress = 1.0 if ramp == 0 else min(1.0, (day - start) / ramp)
    return 1.0 - (1.0 - diverted[which]) * progress


class World:
    def __init__(self, seed, managers, days, team_size, diverter_share, churn_per_year,
                 gaps="mixed"):
        self.rng = random.Random(seed)
        self.gap_shapes = ["exponential", "lognormal", "regular"] if gaps == "mixed" else [gaps]
        self.seed = seed
        self.days = days
        self.events = []  # (day, seconds, dict)
        self.next_id = 0
        self.labels = {
            "seed": seed,
            "generator": "benches/foreign_world.py",
            "start": iso(0, 0),
            "days": days,
            "managers": [],
            "diverters": [],
            "churned_accounts": [],
            "downturns": [],
            "leaves": [],
            "new_hires": [],
            "reassignments": [],
        }
        rng = self.rng
        teams = max(1, round(managers / team_size))
        self.managers = []
        for m in range(managers):
            hired = 0
            if rng.random() < 0.1:
                hired = rng.randint(60, days - 200)
            skill = min(0.8, max(0.15, rng.gauss(0.45, 0.1)))
            manager = {
                "id": f"rep-{seed}-{m:04d}",
                "team": f"region-{m % teams}",
                "skill": skill,
                "hired": hired,
                "diligence": rng.uniform(0.5, 2.0),  # how much activity is logged
                "leave": None,
                "style": None,
                "onset": None,
            }
            self.managers.append(manager)
            entry = {
                "manager_id": manager["id"],
                "team": manager["team"],
                "win_rate": skill,
                "hired": iso(hired, 0),
            }
            self.labels["managers"].append(entry)
            if hired:
                self.labels["new_hires"].append(entry)
        self.shocked_team = f"region-{rng.randrange(teams)}"
        self.shock = (rng.randint(150, days - 250), 150)
        self.labels["downturns"].append({
            "team": self.shocked_team,
            "start": iso(self.shock[0], 0),
            "end": iso(sum(self.shock), 0),
            "win_rate_factor": 0.6,
        })
        self.accounts = []
        for manager in self.managers:
            for _ in range(rng.randint(6, 30)):
                self.new_account(manager, churn_per_year)
        honest = list(self.managers)
        rng.shuffle(honest)
        # Diverters among the managers hired early enough to have an onset.
        honest.sort(key=lambda m: m["hired"] > days - 260)
        count = max(1, round(diverter_share * managers))
        styles = ["silent", "gradual", "competitor", "quote"]
        for i, manager in enumerate(honest[:count]):
            manager["style"] = styles[i % len(styles)]
            manager["onset"] = rng.randint(max(manager["hired"] + 120, 150), days - 120)
        for manager in honest[count:]:
            if rng.random() < 0.12:
                start = rng.randint(manager["hired"] + 30, days - 60)
                manager["leave"] = (start, start + rng.randint(21, 42))
                self.labels["leaves"].append({
                    "manager_id": manager["id"],
                    "start": iso(start, 0),
                    "end": iso(manager["leave"][1], 0),
                })
        for manager in honest[:count]:
            self.divert(manager)

    def new_account(self, manager, churn_per_year):
        rng = self.rng
        index = len(self.accounts)
        shape = rng.choice(self.gap_shapes)
        account = {
            "id": f"cust-{self.seed}-{index:05d}",
            "manager": manager,
            "team": manager["team"],
            "mean_gap": math.exp(rng.uniform(math.log(5), math.log(60))),
            "shape": shape,
            "sigma": rng.uniform(0.4, 0.9),
            "size": math.exp(rng.gauss(8, 1.2)),
            "since": manager["hired"],
            "churn_day": None,
            "decline_day": None,
            "diverted": None,  # (day, factor on rate, factor on amount, ramp days)
            "contract": rng.random() < 0.3,
        }
        if rng.random() < churn_per_year * self.days / 365:
            account["churn_day"] = rng.randint(account["since"] + 60, self.days - 1)
        elif (account["team"] == self.shocked_team and self.shock[0] > account["since"] + 60
              and rng.random() < 1 / 7):
            account["churn_day"] = self.shock[0] + rng.randrange(self.shock[1])
        elif rng.random() < 0.05:
            account["decline_day"] = rng.randint(account["since"] + 60, self.days - 1)
        self.accounts.append(account)
        return account

    def divert(self, manager):
        rng = self.rng
        book = sorted((a for a in self.accounts if a["manager"] is manager and a["churn_day"] is None),
                      key=lambda a: -a["size"] / a["mean_gap"])
        onset = manager["onset"]
        style = manager["style"]
        if style == "silent":
            chosen = book[: max(2, len(book) // 3)]
            for a in chosen:
                a["diverted"] = (onset + rng.randint(0, 7), 0.0, 1.0, 0)
        elif style == "gradual":
            chosen = rng.sample(book, max(2, round(len(book) * 0.4)))
            for a in chosen:
                a["diverted"] = (onset, 0.35, 0.6, 60)
        elif style == "competitor":
            manager["rival"] = rng.choice(COMPETITORS)
            chosen = book[:2]
            for a in chosen:
                a["diverted"] = (onset + rng.randint(0, 14), 0.0, 1.0, 0)
        else:
            chosen = rng.sample(book, max(2, len(book) // 4))
            for a in chosen:
                a["diverted"] = (onset, 0.5, 0.7, 45)
        self.labels["diverters"].append({
            "manager_id": manager["id"],
            "team": manager["team"],
            "onset": iso(onset, 0),
            "style": style,
            "diverted_accounts": [a["id"] for a in chosen],
        })
        for a in chosen:
            if a["diverted"][1] == 0.0:
                self.labels["churned_accounts"].append({
                    "account_id": a["id"],
                    "manager_id": manager["id"],
                    "at": iso(a["diverted"][0], 0),
                    "cause": "diversion",
                })

    # --- events -------------------------------------------------------------

    def emit(self, day, event_type, manager, account, **fields):
        seconds = self.rng.randint(8 * 3600, 18 * 3600)
        self.next_id += 1
        event = {
            "event_id": f"fx-{self.seed}-{self.next_id}",
            "type": event_type,
            "occurred_at": iso(day, seconds),
            "manager_id": manager["id"],
            "account_id": account["id"],
            "team": manager["team"],
        }
        event.update(fields)
        self.events.append((day, seconds, self.next_id, event))

    def on_leave(self, manager, day):
        leave = manager["leave"]
        return leave is not None and leave[0] <= day < leave[1]

    def order_rate_factor(self, account, day):
        """The account's ordering pace on `day`, 1 as usual."""
        factor = season(day)
        if account["team"] == self.shocked_team and self.shock[0] <= day < sum(self.shock):
            factor *= 0.7
        if account["decline_day"] is not None and day >= account["decline_day"]:
            factor *= 0.5
        return factor * diversion_factor(account, day, RATE)

    def gone(self, account, day):
        if account["churn_day"] is not None and day >= account["churn_day"]:
            return True
        d = account["diverted"]
        return d is not None and d[1] == 0.0 and day >= d[0]

    def gap(self, account):
        rng, mean = self.rng, account["mean_gap"]
        if account["shape"] == "exponential":
            return rng.expovariate(1.0 / mean)
        if account["shape"] == "lognormal":
            s = account["sigma"]
            return rng.lognormvariate(math.log(mean) - s * s / 2, s)
        return rng.gammavariate(10.0, mean / 10.0)

    def orders(self, account):
        """Order days: a renewal process whose clock runs at the day's pace
        (a gap spanning a slow month takes longer)."""
        day = account["since"] + self.rng.uniform(0, account["mean_gap"])
        while True:
            need = self.gap(account)
            while need > 0:
                if day >= self.days or self.gone(account, int(day)):
                    return
                pace = self.order_rate_factor(account, int(day))
                room = math.floor(day) + 1.0 - day
                if pace * room >= need:
                    day += need / pace
                    need = 0.0
                else:
                    need -= pace * room
                    day = math.floor(day) + 1.0
            d = working_day(int(day))
            if d >= self.days or self.gone(account, d):
                return
            day = max(day, float(d))
            yield d

    def run(self):
        rng = self.rng
        for account in self.accounts:
            manager = account["manager"]
            for day in self.orders(account):
                amount_factor = diversion_factor(account, day, AMOUNT)
                amount = round(account["size"] * amount_factor * rng.lognormvariate(0, 0.25), 2)
                self.emit(day, "order_placed", manager, account,
                          order_id=f"po-{self.next_id + 1}", amount=amount)
            if account["churn_day"] is not None:
                self.labels["churned_accounts"].append({
                    "account_id": account["id"],
                    "manager_id": manager["id"],
                    "at": iso(account["churn_day"], 0),
                    "cause": "natural",
                })
            self.activities(account)
            self.deals(account)
            self.contracts(account)
        self.reassign()
        self.events.sort(key=lambda e: (e[0], e[1], e[2]))

    def activities(self, account):
        rng = self.rng
        manager = account["manager"]
        rate = manager["diligence"] * rng.uniform(1.0, 4.0) / 30.0
        day = account["since"]
        keep_calling = rng.randint(0, 56)
        while True:
            day += rng.expovariate(rate)
            d = int(day)
            if d >= self.days:
                return
            if self.on_leave(manager, d):
                continue
            if account["churn_day"] is not None and d >= account["churn_day"] + keep_calling:
                return
            kind = rng.choices(["visit", "call", "email", "meeting"], [3, 4, 3, 1])[0]
            logged = working_day(d)
            self.emit(logged if logged < self.days else d,
                      "activity_logged", manager, account, activity=kind)
            if rng.random() < 0.02:
                self.emit(d, "customer_feedback", manager, account,
                          kind=rng.choice(["complaint", "revisit"]), score=rng.randint(1, 5))

    def deals(self, account):
        rng = self.rng
        owner = account["manager"]
        day = account["since"] + rng.uniform(0, 60)
        n = 0
        while True:
            day += rng.expovariate(1.0 / rng.uniform(30, 75))
            d = working_day(int(day))
            if d >= self.days:
                return
            if self.on_leave(owner, d) or self.gone(account, d):
                continue
            n += 1
            opp = f"deal-{account['id']}-{n}"
            amount = round(account["size"] * rng.uniform(2, 10), 2)
            self.emit(d, "opportunity_created", owner, account, opportunity_id=opp, amount=amount)
            length = rng.randint(10, 80)
            close = d + length
            # A leave freezes the deal: it closes after the manager is back.
            if owner["leave"] and owner["leave"][0] <= close < owner["leave"][1]:
                close = owner["leave"][1] + rng.randint(1, 10)
            diverting = owner["onset"] is not None and close >= owner["onset"]
            final = amount
            if rng.random() < 0.5:
                mid = d + length // 2
                cut = rng.uniform(0.9, 1.1)
                if diverting and owner["style"] == "quote" and rng.random() < 0.7:
                    cut = rng.uniform(0.4, 0.6)
                final = round(amount * cut, 2)
                if mid < self.days:
                    self.emit(mid, "opportunity_updated", owner, account, opportunity_id=opp,
                              amount=final, stage=rng.choice(["proposal", "negotiation"]))
            if close >= self.days:
                continue
            p_win = owner["skill"]
            if account["team"] == self.shocked_team and self.shock[0] <= close < sum(self.shock):
                p_win *= 0.6
            if self.gone(account, close):
                p_win = 0.05
            if diverting:
                if owner["style"] in ("silent", "competitor") and account["diverted"]:
                    p_win *= 0.2
                elif owner["style"] == "quote" and final < amount * 0.7:
                    p_win *= 0.3
                elif owner["style"] == "competitor":
                    p_win *= 0.7
            u = rng.random()
            if u < p_win:
                self.emit(close, "opportunity_won", owner, account, opportunity_id=opp, amount=final)
            elif u < p_win + 0.06:
                self.emit(close, "opportunity_withdrawn", owner, account, opportunity_id=opp,
                          amount=final)
            else:
                reason = rng.choices(["price", "competitor", "no_decision", "other"], [3, 4, 2, 1])[0]
                fields = {"opportunity_id": opp, "amount": final, "reason": reason}
                if diverting and owner["style"] == "competitor" and rng.random() < 0.8:
                    fields["reason"] = "competitor"
                    fields["competitor"] = owner["rival"]
                elif fields["reason"] == "competitor":
                    fields["competitor"] = rng.choice(COMPETITORS)
                self.emit(close, "opportunity_lost", owner, account, **fields)

    def contracts(self, account):
        if not account["contract"]:
            return
        rng = self.rng
        day = account["since"] + rng.randint(30, 365)
        n = 0
        while day < self.days:
            n += 1
            renewed = not self.gone(account, day) and rng.random() < 0.95
            self.emit(day, "contract_ended", account["manager"], account,
                      contract_id=f"k-{account['id']}-{n}", renewed=renewed,
                      amount=round(account["size"] * 12, 2))
            if not renewed:
                return
            day += 365

    def reassign(self):
        """Moves about 3% of accounts a year to another manager of the team;
        events after the move are the new owner's (history moves along)."""
        rng = self.rng
        by_team = {}
        for manager in self.managers:
            by_team.setdefault(manager["team"], []).append(manager)
        moves = {}
        for account in self.accounts:
            if account["diverted"] or rng.random() > 0.03 * self.days / 365:
                continue
            at = rng.randint(account["since"] + 30, self.days - 30)
            if account["churn_day"] is not None and at >= account["churn_day"]:
                continue
            old = account["manager"]
            candidates = [m for m in by_team[old["team"]]
                          if m is not old and m["onset"] is None and m["hired"] <= at]
            if not candidates:
                continue
            new = rng.choice(candidates)
            moves[account["id"]] = (at, old, new)
            self.labels["reassignments"].append({
                "account_id": account["id"], "from": old["id"], "to": new["id"],
                "at": iso(at, 9 * 3600),
            })
        if not moves:
            return
        for day, seconds, _, event in self.events:
            move = moves.get(event["account_id"])
            if move and (day, seconds) >= (move[0], 9 * 3600):
                event["manager_id"] = move[2]["id"]
        for account_id, (at, old, new) in moves.items():
            self.next_id += 1
            self.events.append((at, 9 * 3600, self.next_id, {
                "event_id": f"fx-{self.seed}-{self.next_id}",
                "type": "account_assigned",
                "occurred_at": iso(at, 9 * 3600),
                "manager_id": new["id"],
                "account_id": account_id,
                "team": new["team"],
                "previous_manager_id": old["id"],
            }))
            for churn in self.labels["churned_accounts"]:
                if churn["account_id"] == account_id and churn["at"] >= iso(at, 0):
                    churn["manager_id"] = new["id"]
        self.events.sort(key=lambda e: (e[0], e[1], e[2]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--managers", type=int, default=100)
    parser.add_argument("--days", type=int, default=540)
    parser.add_argument("--team-size", type=int, default=8)
    parser.add_argument("--diverter-share", type=float, default=0.1)
    parser.add_argument("--churn-per-year", type=float, default=0.15)
    parser.add_argument("--gaps", default="mixed",
                        choices=["mixed", "exponential", "lognormal", "regular"],
                        help="the shape of every account's order gaps (mixed: one of the three each)")
    parser.add_argument("--out", required=True, help="events file; labels go beside it")
    args = parser.parse_args()
    world = World(args.seed, args.managers, args.days, args.team_size,
                  args.diverter_share, args.churn_per_year, args.gaps)
    world.run()
    with open(args.out, "w") as out:
        for _, _, _, event in world.events:
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    world.labels["accounts"] = [{
        "account_id": a["id"],
        "manager_id": a["manager"]["id"],
        "gaps": a["shape"],
        "mean_gap_days": round(a["mean_gap"], 1),
        "churned": None if a["churn_day"] is None else iso(a["churn_day"], 0),
        "declined": None if a["decline_day"] is None else iso(a["decline_day"], 0),
        "diverted": None if a["diverted"] is None else iso(a["diverted"][0], 0),
    } for a in world.accounts]
    labels = args.out[: -len(".jsonl")] if args.out.endswith(".jsonl") else args.out
    with open(labels + ".labels.json", "w") as out:
        json.dump(world.labels, out, indent=1)
    print(f"{len(world.events)} events, {len(world.labels['diverters'])} diverters, "
          f"{len(world.labels['churned_accounts'])} churned accounts")


if __name__ == "__main__":
    main()
