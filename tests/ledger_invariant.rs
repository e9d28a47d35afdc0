//! The ledger's invariant, checked by proptest against a brute-force model: never more than N calls
//! in any window of length W, for every limit, whatever the sequence of operations; and with no
//! guard, no refunds and no blocks, every slot is the earliest a brute-force search finds.

use std::time::Duration;

use fabraix_scheduler::{Instant, Ledger, LedgerConfig, Quota, WindowSemantics};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Advance the clock by this many ms, then reserve.
    Reserve(u64),
    /// Refund the i-th (mod len) outstanding slot.
    Refund(usize),
    /// Block for this many ms from now.
    Block(u64),
    /// The server says `remaining` more before now + reset ms.
    ServerWindow(u32, u64),
    /// Minimum spacing in ms (0 = none).
    Pace(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..400).prop_map(Op::Reserve),
        1 => (0usize..64).prop_map(Op::Refund),
        1 => (0u64..3_000).prop_map(Op::Block),
        1 => ((0u32..4), (0u64..5_000)).prop_map(|(r, s)| Op::ServerWindow(r, s)),
        1 => (0u64..200).prop_map(Op::Pace),
    ]
}

fn quota() -> impl Strategy<Value = Quota> {
    prop_oneof![
        Just("3/1s".parse().unwrap()),
        Just("2/1s,5/10s".parse().unwrap()),
        Just("4/500ms,6/2s,9/5s".parse().unwrap()),
        Just("1/100ms".parse().unwrap()),
        Just("1100/2s,2000/10s".parse().unwrap()),
    ]
}

/// Most calls in any half-open window [s, s + w) over the sorted slots.
fn worst_window(slots: &[Instant], w: Duration) -> usize {
    let mut sorted = slots.to_vec();
    sorted.sort();
    let mut worst = 0;
    let mut j = 0;
    for i in 0..sorted.len() {
        while j < sorted.len() && sorted[j] < sorted[i] + w {
            j += 1;
        }
        worst = worst.max(j - i);
    }
    worst
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn never_more_than_n_in_any_window(q in quota(), ops in prop::collection::vec(op(), 1..300), guard in 0u64..20) {
        let t0 = Instant::now();
        let mut ledger = Ledger::new(&q, LedgerConfig { guard: Some(Duration::from_millis(guard)), ..LedgerConfig::default() }, t0);
        let mut now = t0;
        let mut live: Vec<Instant> = Vec::new();
        let mut last: Option<Instant> = None;
        for op in ops {
            match op {
                Op::Reserve(ms) => {
                    now += Duration::from_millis(ms);
                    let slot = ledger.reserve(now);
                    prop_assert!(slot >= now, "slot before now");
                    if let Some(l) = last { prop_assert!(slot >= l, "slots out of order"); }
                    last = Some(slot);
                    live.push(slot);
                }
                Op::Refund(i) if !live.is_empty() => {
                    // Only a slot not yet due can be refunded (its call was never sent).
                    let i = i % live.len();
                    if live[i] >= now {
                        let slot = live.remove(i);
                        ledger.refund(slot);
                    }
                }
                Op::Refund(_) => {}
                Op::Block(ms) => ledger.block_until(now + Duration::from_millis(ms)),
                Op::ServerWindow(r, ms) => ledger.apply_server_window(r, now + Duration::from_millis(ms)),
                Op::Pace(ms) => ledger.set_pace((ms > 0).then(|| Duration::from_millis(ms))),
            }
            for limit in q.limits() {
                let worst = worst_window(&live, limit.window());
                prop_assert!(worst <= limit.count() as usize,
                    "{} calls in one window of {:?} (limit {})", worst, limit.window(), limit);
            }
        }
    }

    /// A run that stops (a crash, say) and a second run that starts with the first run's sent
    /// calls as earlier calls: together they never put more than N calls in any window.
    #[test]
    fn a_restarted_ledger_keeps_the_windows_of_the_run_before(
        q in quota(),
        first in prop::collection::vec(0u64..400, 0..120),
        restart_after in 0u64..12_000,
        second in prop::collection::vec(0u64..400, 1..120),
        guard in 0u64..20,
        bucket in any::<bool>(),
    ) {
        let config = LedgerConfig {
            guard: Some(Duration::from_millis(guard)),
            semantics: if bucket { WindowSemantics::TokenBucket } else { WindowSemantics::Sliding },
        };
        let t0 = Instant::now();
        let mut run = Ledger::new(&q, config, t0);
        let mut now = t0;
        let mut slots = Vec::new();
        for ms in first {
            now += Duration::from_millis(ms);
            slots.push(run.reserve(now));
        }
        // The restart: calls whose slot had come were sent; the others never were.
        let restart = now + Duration::from_millis(restart_after);
        slots.retain(|&s| s <= restart);
        let ages: Vec<Duration> = slots.iter().map(|&s| restart - s).collect();
        let mut run = Ledger::with_earlier_calls(&q, config, restart, &ages);
        let mut now = restart;
        for ms in second {
            now += Duration::from_millis(ms);
            let slot = run.reserve(now);
            prop_assert!(slot >= now, "slot before now");
            slots.push(slot);
        }
        if !bucket {
            for limit in q.limits() {
                let worst = worst_window(&slots, limit.window());
                prop_assert!(worst <= limit.count() as usize,
                    "{} calls in one window of {:?} (limit {})", worst, limit.window(), limit);
            }
        } else {
            for (i, &t) in slots.iter().enumerate() {
                prop_assert!(bucket_accepts(&slots[..i], t, &q, t0), "bucket refuses call {} at {:?}", i, t - t0);
            }
        }
    }

    #[test]
    fn slots_are_the_earliest_possible(q in quota(), gaps in prop::collection::vec(0u64..300, 1..250)) {
        let t0 = Instant::now();
        let mut ledger = Ledger::new(&q, LedgerConfig { guard: Some(Duration::ZERO), ..LedgerConfig::default() }, t0);
        let mut now = t0;
        let mut slots: Vec<Instant> = Vec::new();
        for gap in gaps {
            now += Duration::from_millis(gap);
            let slot = ledger.reserve(now);
            // Brute force: the earliest t >= max(now, last slot) whose window (t - W, t] holds
            // fewer than N earlier calls, for every limit. Candidates: now, last, and s + W.
            let floor = slots.last().copied().map_or(now, |l| l.max(now));
            let mut candidates = vec![floor];
            for s in &slots {
                for l in q.limits() {
                    if *s + l.window() > floor { candidates.push(*s + l.window()); }
                }
            }
            candidates.sort();
            let best = candidates.into_iter().find(|&t| {
                q.limits().iter().all(|l| {
                    slots.iter().filter(|&&s| s + l.window() > t).count() < l.count() as usize
                })
            }).expect("a candidate always fits");
            // The ledger rounds recorded times up by at most W / 1024 (large N) or W / 2^22.
            let tolerance = q.limits().iter().map(|l| {
                if l.count() > 1024 { l.window() / 1024 } else { l.window() / (1 << 22) }
            }).max().unwrap_or_default() + Duration::from_nanos(2);
            prop_assert!(slot >= best, "slot {:?} earlier than possible {:?}", slot - t0, best - t0);
            prop_assert!(slot <= best + tolerance, "slot {:?} later than the earliest {:?}", slot - t0, best - t0);
            slots.push(slot);
        }
    }
}

/// A token-bucket server (GCRA, rate N / W, burst N per limit) accepts the call at `t` given the
/// earlier accepted calls: virtual scheduling, computed from scratch.
fn bucket_accepts(accepted: &[Instant], t: Instant, q: &Quota, t0: Instant) -> bool {
    q.limits().iter().all(|l| {
        let interval = l.window().as_nanos() as f64 / f64::from(l.count());
        let tolerance = interval * f64::from(l.count() - 1);
        let mut tat = 0.0f64;
        for a in accepted {
            let at = (*a - t0).as_nanos() as f64;
            tat = tat.max(at) + interval;
        }
        let at = (t - t0).as_nanos() as f64;
        at + 1.0 >= tat - tolerance
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, .. ProptestConfig::default() })]

    #[test]
    fn token_bucket_semantics_conform_to_the_bucket(q in quota(), gaps in prop::collection::vec(0u64..300, 1..200), guard in 0u64..20) {
        let t0 = Instant::now();
        let config = LedgerConfig { guard: Some(Duration::from_millis(guard)), semantics: WindowSemantics::TokenBucket };
        let mut ledger = Ledger::new(&q, config, t0);
        let mut now = t0;
        let mut accepted: Vec<Instant> = Vec::new();
        for gap in gaps {
            now += Duration::from_millis(gap);
            let slot = ledger.reserve(now);
            prop_assert!(slot >= now);
            prop_assert!(bucket_accepts(&accepted, slot, &q, t0), "slot {:?} refused by the bucket", slot - t0);
            accepted.push(slot);
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// A change to the ledger (see [`Op`]).
    Change(Op),
    /// An ETA question: the clock moves on by this many ms, and k grows by this much (a queue
    /// filling up), or starts again at this value when the flag is set.
    Ask(u64, usize, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => op().prop_map(Step::Change),
        4 => (prop_oneof![Just(0u64), 0u64..40], (0usize..6), prop::bool::weighted(0.1))
            .prop_map(|(ms, k, reset)| Step::Ask(ms, k, reset)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// The plan cursor that makes a growing queue's ETAs O(1) each answers exactly what a fresh
    /// plan answers, whatever changes the ledger goes through between the questions.
    #[test]
    fn a_plan_cursor_answers_as_a_fresh_plan(q in quota(), steps in prop::collection::vec(step(), 1..200), guard in 0u64..20) {
        let t0 = tokio::time::Instant::now();
        let mut ledger = Ledger::new(&q, LedgerConfig { guard: Some(Duration::from_millis(guard)), ..LedgerConfig::default() }, t0);
        let mut now = t0;
        let mut cursor = None;
        let mut k = 1;
        let mut reserved: Vec<Instant> = Vec::new();
        for step in steps {
            match step {
                Step::Ask(ms, grow, reset) => {
                    now += Duration::from_millis(ms);
                    k = if reset { grow.max(1) } else { k + grow };
                    let fresh = ledger.nth_slot(now, k);
                    let planned = ledger.nth_slot_with(&mut cursor, now, k);
                    prop_assert_eq!(planned, fresh, "k = {}, {:?} after the start", k, now - t0);
                }
                Step::Change(Op::Reserve(ms)) => {
                    now += Duration::from_millis(ms);
                    reserved.push(ledger.reserve(now));
                }
                Step::Change(Op::Refund(i)) if !reserved.is_empty() => {
                    let slot = reserved.remove(i % reserved.len());
                    if slot >= now {
                        ledger.refund(slot);
                    }
                }
                Step::Change(Op::Refund(_)) => {}
                Step::Change(Op::Block(ms)) => ledger.block_until(now + Duration::from_millis(ms)),
                Step::Change(Op::ServerWindow(r, ms)) => ledger.apply_server_window(r, now + Duration::from_millis(ms)),
                Step::Change(Op::Pace(ms)) => ledger.set_pace((ms > 0).then(|| Duration::from_millis(ms))),
            }
        }
    }
}

#[derive(Clone, Debug)]
enum LoadStep {
    /// The next call goes in its slot (the clock moves on to it if it is ahead).
    InItsSlot,
    /// The next call goes this many ms late: the clock moves on by as much, then it reserves.
    Late(u64),
    /// Another change to the ledger (see [`Op`]; its reservations are late ones too).
    Change(Op),
    /// An ETA question at the tail of a queue that grows by this much (or starts again at this
    /// value when the flag is set).
    Ask(usize, bool),
}

fn load_step() -> impl Strategy<Value = LoadStep> {
    prop_oneof![
        4 => Just(LoadStep::InItsSlot),
        1 => (0u64..300).prop_map(LoadStep::Late),
        1 => op().prop_map(LoadStep::Change),
        4 => ((0usize..6), prop::bool::weighted(0.1)).prop_map(|(k, reset)| LoadStep::Ask(k, reset)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// The plan a ledger follows while calls go out (`forecast`): a forecast it calls exact is what
    /// a fresh plan answers, whatever the ledger went through; an estimate is never before `now`
    /// nor after the fresh answer (calls gone late only move slots later), up to a window's tick
    /// (the two round their calls' times apart).
    #[test]
    fn a_forecast_called_exact_is_what_a_fresh_plan_answers(q in quota(), steps in prop::collection::vec(load_step(), 1..300), guard in 0u64..20, bucket in prop::bool::weighted(0.3)) {
        let t0 = tokio::time::Instant::now();
        let semantics = if bucket { WindowSemantics::TokenBucket } else { WindowSemantics::Sliding };
        let mut ledger = Ledger::new(&q, LedgerConfig { guard: Some(Duration::from_millis(guard)), semantics }, t0);
        let mut now = t0;
        let mut k = 1;
        let mut reserved: Vec<Instant> = Vec::new();
        for step in steps {
            match step {
                LoadStep::Ask(grow, reset) => {
                    k = if reset { grow.max(1) } else { k + grow };
                    let fresh = ledger.nth_slot(now, k);
                    let forecast = ledger.forecast(now, k);
                    prop_assert!(forecast.at >= now);
                    if forecast.exact {
                        prop_assert_eq!(forecast.at, fresh, "k = {}, {:?} after the start", k, now - t0);
                    } else {
                        let tick = q.longest_window() / 1024;
                        prop_assert!(forecast.at <= fresh + tick, "estimate {:?} after the fresh plan's {:?}", forecast.at - t0, fresh - t0);
                    }
                }
                LoadStep::InItsSlot => {
                    now = now.max(ledger.earliest(now));
                    reserved.push(ledger.reserve(now));
                    k = k.saturating_sub(1).max(1);
                }
                LoadStep::Late(ms) | LoadStep::Change(Op::Reserve(ms)) => {
                    now += Duration::from_millis(ms);
                    reserved.push(ledger.reserve(now));
                    k = k.saturating_sub(1).max(1);
                }
                LoadStep::Change(Op::Refund(i)) if !reserved.is_empty() => {
                    let slot = reserved.remove(i % reserved.len());
                    if slot >= now {
                        ledger.refund(slot);
                    }
                }
                LoadStep::Change(Op::Refund(_)) => {}
                LoadStep::Change(Op::Block(ms)) => ledger.block_until(now + Duration::from_millis(ms)),
                LoadStep::Change(Op::ServerWindow(r, ms)) => ledger.apply_server_window(r, now + Duration::from_millis(ms)),
                LoadStep::Change(Op::Pace(ms)) => ledger.set_pace((ms > 0).then(|| Duration::from_millis(ms))),
            }
        }
    }
}
