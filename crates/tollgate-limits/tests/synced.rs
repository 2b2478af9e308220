//! The synced backend: rates decided in process and reconciled with Redis
//! in batches, against a real server.
//!
//! - Nodes learn each other's counts at each sync of a key they decided;
//!   until then a node decides on its own count.
//! - Before a node's first sync of a key, it admits at most one burst on its
//!   own; after the sync, the shared allowance is spent and both refuse.
//! - A node's clock may be off the server's: its decisions follow the
//!   server's clock from its first sync.
//! - Redis away: rates are still decided (per node), the failed sync is
//!   counted, and the counts it held are added by the next sync.
//! - Limits other than rates are still decided on Redis.
//! - A sync of more keys than one script call takes reaches all of them.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tollgate_limits::algo::{Rule, SECOND_US};
use tollgate_limits::synced::Synced;
use tollgate_limits::{Check, Limiter, key};

const HOUR: i64 = 3600 * SECOND_US;

/// A synced node; tests call `sync` themselves, so the interval is moot.
fn synced_node(url: &str) -> Limiter {
    Limiter::synced(synced(url, Duration::from_secs(5)))
}

/// The synced backend itself, giving up on Redis after `timeout`.
fn synced(url: &str, timeout: Duration) -> Synced {
    Synced::new(
        tollgate_limits::redis::Redis::new(&options(url, timeout)).unwrap(),
        Duration::from_secs(3600),
    )
}

/// 50 requests an hour: once spent, the next passes only after 72 s.
fn rate(tag: &str) -> Vec<Check<'static>> {
    vec![Check {
        key: key(&subject(tag), "rate").into(),
        rule: Rule::gcra(50, HOUR, None),
    }]
}

/// Decides until the first refusal (at most 200 times) on the node's clock
/// `skew_us` off the wall's; returns how many passed.
async fn admit(node: &Limiter, checks: &[Check<'_>], skew_us: i64) -> u64 {
    for passed in 0..200 {
        let d = node.decide(checks, wall_us() + skew_us).await.unwrap();
        if !d.allowed {
            return passed;
        }
    }
    panic!("never refused");
}

async fn decide_once(node: &Limiter, checks: &[Check<'_>]) -> bool {
    node.decide(checks, wall_us()).await.unwrap().allowed
}

fn errors(l: &Limiter) -> u64 {
    l.counters()
        .backend_errors
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn nodes_share_a_limit_through_their_syncs() {
    let url = require_redis!();
    let (a, b) = (synced_node(&url), synced_node(&url));
    let checks = rate("synced-share");
    for _ in 0..30 {
        assert!(decide_once(&a, &checks).await);
    }
    a.sync(wall_us).await;
    assert_eq!(errors(&a), 0);
    // B's first decision is its own; its sync brings in A's 30.
    assert!(decide_once(&b, &checks).await);
    b.sync(wall_us).await;
    assert_eq!(admit(&b, &checks, 0).await, 19, "50 - 30 - 1");
    b.sync(wall_us).await;
    // A has not heard of B's 20 yet: it decides on its own count (31 of
    // 50) until its next sync, which brings them in.
    assert!(decide_once(&a, &checks).await);
    a.sync(wall_us).await;
    assert!(!decide_once(&a, &checks).await);
    assert!(a.is_up() && b.is_up());
}

#[tokio::test]
async fn before_its_first_sync_a_node_admits_one_burst_and_then_the_cluster_is_full() {
    let url = require_redis!();
    let (a, b) = (synced_node(&url), synced_node(&url));
    let checks = rate("synced-burst");
    // Neither has heard of the other: each admits the whole burst.
    assert_eq!(admit(&a, &checks, 0).await, 50);
    assert_eq!(admit(&b, &checks, 0).await, 50);
    a.sync(wall_us).await;
    b.sync(wall_us).await;
    a.sync(wall_us).await;
    // The shared allowance is spent (not overdrawn past one burst) on both.
    assert!(!decide_once(&a, &checks).await);
    assert!(!decide_once(&b, &checks).await);
    // The overdraft is not carried past one burst: the shared counter's
    // theoretical arrival time is at most one hour (50 × 72 s) ahead.
    let ahead = server_tat_ahead(&url, &checks[0].key).await;
    assert!(
        ahead <= HOUR && ahead > HOUR - 60 * SECOND_US,
        "{ahead} µs ahead"
    );
}

/// How far the shared GCRA counter `key` is ahead of the server's clock.
async fn server_tat_ahead(url: &str, key: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (tat, time): (String, Vec<String>) = redis::pipe()
        .cmd("GET")
        .arg(key)
        .cmd("TIME")
        .query_async(&mut conn)
        .await
        .unwrap();
    let now = time[0].parse::<i64>().unwrap() * SECOND_US + time[1].parse::<i64>().unwrap();
    tat.parse::<i64>().unwrap() - now
}

#[tokio::test]
async fn a_node_whose_clock_is_off_decides_on_the_servers_clock_after_a_sync() {
    let url = require_redis!();
    let skewed = synced_node(&url);
    let checks = rate("synced-skew");
    let skew = -HOUR;
    assert!(
        skewed
            .decide(&checks, wall_us() + skew)
            .await
            .unwrap()
            .allowed
    );
    skewed.sync(|| wall_us() + skew).await;
    // The server's count is in its own time; the node applies the offset.
    assert_eq!(admit(&skewed, &checks, skew).await, 49);
    skewed.sync(|| wall_us() + skew).await;
    // An honest node sees the same count.
    let honest = synced_node(&url);
    assert!(
        decide_once(&honest, &checks).await,
        "its own first decision"
    );
    honest.sync(wall_us).await;
    assert!(!decide_once(&honest, &checks).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_away_rates_are_decided_and_the_counts_wait_for_the_next_sync() {
    let Some(mut server) = RedisServer::on_free_port() else {
        return;
    };
    server.start();
    let url = server.url();
    let node = Limiter::synced(synced(&url, Duration::from_millis(300)));
    let checks = rate("synced-away");
    assert!(decide_once(&node, &checks).await);
    node.sync(wall_us).await;
    assert!(node.is_up());

    server.stop();
    let t = Instant::now();
    for _ in 0..10 {
        assert!(decide_once(&node, &checks).await, "a rate needs no Redis");
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    node.sync(wall_us).await;
    assert!(!node.is_up());
    assert_eq!(errors(&node), 1);
    let mut metrics = String::new();
    node.render_metrics(&mut metrics);
    assert!(metrics.contains("tollgate_ratelimit_backend_up{backend=\"redis\"} 0"));
    // Still limited, on this node's own count: 50 - 11.
    assert_eq!(admit(&node, &checks, 0).await, 39);

    server.start();
    // The restarted server has an empty data set (no persistence), so what
    // it holds after the sync is what the node kept for it: the 10 admitted
    // before the failed sync and the 39 after it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.is_up() {
        assert!(Instant::now() < deadline, "the sync never got through");
        tokio::time::sleep(Duration::from_millis(50)).await;
        node.sync(wall_us).await;
    }
    let other = synced_node(&url);
    assert!(decide_once(&other, &checks).await);
    other.sync(wall_us).await;
    assert_eq!(admit(&other, &checks, 0).await, 0, "49 kept + 1 of its own");
}

#[tokio::test]
async fn limits_other_than_rates_are_decided_on_redis() {
    // Nothing listens on this port: only a decision that asks Redis fails.
    let node = Limiter::synced(synced("redis://127.0.0.1:1/", Duration::from_millis(200)));
    let rate = rate("synced-exact");
    assert!(node.decide(&rate, wall_us()).await.unwrap().allowed);
    let window = [Check {
        key: key(&subject("synced-window"), "w").into(),
        rule: Rule::Window {
            window_us: HOUR,
            limit: 10,
        },
    }];
    assert!(node.decide(&window, wall_us()).await.is_err());
    let both = [rate[0].clone(), window[0].clone()];
    assert!(node.decide(&both, wall_us()).await.is_err());
    assert!(node.is_shared());
}

#[tokio::test]
async fn a_sync_of_more_keys_than_one_script_call_takes_reaches_every_key() {
    let url = require_redis!();
    let node = synced(&url, Duration::from_secs(5));
    let tag = subject("synced-many");
    let keys: Vec<String> = (0..1_500).map(|i| key(&tag, &format!("r{i}"))).collect();
    for k in &keys {
        let checks = [Check {
            key: k.as_str().into(),
            rule: Rule::gcra(1, HOUR, None),
        }];
        assert!(node.decide_here(&checks, wall_us()).unwrap().allowed);
    }
    // 1,500 keys: two script calls of at most 1,000.
    assert_eq!(node.sync(wall_us).await.unwrap(), 1_500);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut exists = redis::cmd("EXISTS");
    for k in &keys {
        exists.arg(k);
    }
    let n: usize = exists.query_async(&mut conn).await.unwrap();
    assert_eq!(n, 1_500, "every key's admission reached Redis");
    // Each key's single allowance stays spent after the sync.
    let checks = [Check {
        key: keys[1_200].as_str().into(),
        rule: Rule::gcra(1, HOUR, None),
    }];
    assert!(!node.decide_here(&checks, wall_us()).unwrap().allowed);
    assert_eq!(node.sync(wall_us).await.unwrap(), 1, "only the refused key");
}
