//! Each network fault, pinned: cut links deliver nothing, healed links deliver again,
//! and loss, duplication and reordering happen at their configured ratios (within a
//! tolerance, over many seeds).

use ryu_sim::{NetConfig, Ratio, SimNetwork, SimRng};

fn quiet() -> NetConfig {
    NetConfig {
        latency_min_ns: 1_000_000,
        latency_max_ns: 1_000_000,
        jitter_ns: 0,
        ..NetConfig::default()
    }
}

fn drain<M: Clone>(net: &mut SimNetwork<M>) -> Vec<(u64, u64, M)> {
    let mut out = Vec::new();
    while let Some(d) = net.pop_due(u64::MAX) {
        out.push((d.from, d.to, d.msg));
    }
    out
}

#[test]
fn partitioned_link_delivers_nothing_and_healed_link_delivers_again() {
    let mut net = SimNetwork::new(SimRng::new(1), quiet(), &[1, 2, 3]);
    net.partition(&[vec![1], vec![2, 3]]);
    for i in 0..100 {
        net.send(i, 1, 2, i);
        net.send(i, 2, 1, i);
        net.send(i, 2, 3, i);
    }
    let got = drain(&mut net);
    assert!(
        got.iter().all(|&(from, to, _)| (from, to) == (2, 3)),
        "{got:?}"
    );
    assert_eq!(got.len(), 100);
    net.heal();
    net.send(1000, 1, 2, 7);
    assert_eq!(drain(&mut net), vec![(1, 2, 7)]);
}

#[test]
fn asymmetric_cut_blocks_one_direction_only() {
    let mut net = SimNetwork::new(SimRng::new(2), quiet(), &[1, 2]);
    net.cut(1, 2);
    net.send(0, 1, 2, "lost");
    net.send(0, 2, 1, "arrives");
    assert_eq!(drain(&mut net), vec![(2, 1, "arrives")]);
    assert_eq!(net.counts().cut_at_send, 1);
}

#[test]
fn isolated_node_hears_nothing_and_says_nothing() {
    let mut net = SimNetwork::new(SimRng::new(3), quiet(), &[1, 2, 3]);
    net.isolate(2);
    for (a, b) in [(1, 2), (2, 1), (2, 3), (3, 2), (1, 3)] {
        net.send(0, a, b, (a, b));
    }
    assert_eq!(drain(&mut net), vec![(1, 3, (1, 3))]);
}

#[test]
fn messages_in_flight_when_a_link_is_cut_are_dropped() {
    let mut net = SimNetwork::new(SimRng::new(4), quiet(), &[1, 2]);
    net.send(0, 1, 2, 1);
    net.cut(1, 2);
    assert!(drain(&mut net).is_empty());
    assert_eq!(net.counts().cut_in_flight, 1);
}

/// Over 100 seeds of 500 messages each, observed ratios stay within 1.5 points of the
/// configured ones.
fn observed_ratio(config: NetConfig, count: impl Fn(&[(u64, u64, u64)], u64) -> u64) -> f64 {
    let (mut hits, mut total) = (0u64, 0u64);
    for seed in 0..100 {
        let mut net = SimNetwork::new(SimRng::new(seed), config, &[1, 2]);
        let sent = 500;
        for i in 0..sent {
            // One message per millisecond: far apart compared with jitter (zero),
            // close together compared with the reorder delay (5 ms).
            net.send(i * 1_000_000, 1, 2, i);
        }
        let got = drain(&mut net);
        hits += count(&got, sent);
        total += sent;
    }
    hits as f64 / total as f64
}

#[test]
fn loss_happens_at_the_configured_ratio() {
    let config = NetConfig {
        loss: Ratio::new(1, 10),
        ..quiet()
    };
    let r = observed_ratio(config, |got, sent| sent - got.len() as u64);
    assert!((0.085..0.115).contains(&r), "loss ratio {r}");
}

#[test]
fn duplication_happens_at_the_configured_ratio() {
    let config = NetConfig {
        duplicate: Ratio::new(1, 10),
        ..quiet()
    };
    let r = observed_ratio(config, |got, sent| got.len() as u64 - sent);
    assert!((0.085..0.115).contains(&r), "duplication ratio {r}");
}

#[test]
fn reordering_happens_at_the_configured_ratio() {
    let config = NetConfig {
        reorder: Ratio::new(1, 10),
        ..quiet()
    };
    // A message counts as reordered when some later-sent message overtook it.
    let r = observed_ratio(config, |got, _| {
        let mut overtaken = 0;
        let mut max_seen = None;
        for &(_, _, i) in got {
            if max_seen.is_some_and(|m| m > i) {
                overtaken += 1;
            }
            max_seen = max_seen.max(Some(i));
        }
        overtaken
    });
    // The last few messages of a run have nobody left to overtake them: a slight deficit.
    assert!((0.08..0.115).contains(&r), "reorder ratio {r}");
}

#[test]
fn a_clean_network_delivers_everything_in_order() {
    let r = observed_ratio(quiet(), |got, sent| {
        assert_eq!(got.len() as u64, sent);
        assert!(got.windows(2).all(|w| w[0].2 < w[1].2));
        0
    });
    assert_eq!(r, 0.0);
}

#[test]
fn heal_all_faults_restores_links_and_stops_loss_duplication_and_reordering() {
    let config = NetConfig {
        loss: Ratio::new(1, 2),
        duplicate: Ratio::new(1, 2),
        reorder: Ratio::new(1, 2),
        ..quiet()
    };
    let mut net = SimNetwork::new(SimRng::new(5), config, &[1, 2]);
    net.isolate(1);
    net.heal_all_faults();
    for i in 0..200 {
        net.send(i * 1_000_000, 1, 2, i);
    }
    let got: Vec<u64> = drain(&mut net).into_iter().map(|(_, _, i)| i).collect();
    assert_eq!(got, (0..200).collect::<Vec<u64>>());
}
