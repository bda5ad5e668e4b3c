//! The upgrade scenario of the real-node suite, on the three-member cluster
//! of `examples/etcdcluster-3.yaml`: its image moves to another tag under
//! continuous writes (one pod at a time, the leader last after leadership
//! moved), and writes fail for no longer than about one election; then a
//! broken image stops the rollout after its first member, with the
//! `Upgrading` condition saying why and quorum kept, and going back to the
//! working image repairs that member.

use std::time::{Duration, Instant};

use ferrocd_e2e::k8s::{text, wait_for};
use serde_json::Value;

use super::{writer, Cluster, CLUSTER, IMAGE_REPOSITORY, IMAGE_TAG};

/// Same binaries under another tag: a new pod template, as a new release.
const NEXT_TAG: &str = "e2e-next";
/// An image whose `ferrocd` is the operator binary, which refuses the
/// store's flags and exits at once: a release that cannot start.
const BROKEN_TAG: &str = "e2e-broken";
/// Writes may fail this long during the rollout: about one election plus
/// the Service moving off a stopped pod, with the writer's own timeouts.
/// Measured: 0 s on a quiet node, 4.1 s once with two other test suites
/// running beside it on the 2 cores.
const MAX_OUTAGE: Duration = Duration::from_secs(8);

/// One member pod as the API server shows it.
#[derive(Debug)]
struct PodSeen {
    name: String,
    image: String,
    ready: bool,
}

/// Runs the scenario; `keys` were written before and must survive it.
/// Returns the longest time writes failed during the rollout.
pub fn image_upgrade_under_writes_and_a_broken_image_stops(
    cluster: &Cluster<'_>,
    keys: &[(String, String)],
) -> Duration {
    let base = format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}");
    let next = format!("{IMAGE_REPOSITORY}:{NEXT_TAG}");
    let broken = format!("{IMAGE_REPOSITORY}:{BROKEN_TAG}");
    cluster.node.import_derived_image(
        &format!("FROM {base}\nLABEL io.ferrocd.e2e.release=next\n"),
        &next,
    );
    cluster.node.import_derived_image(
        &format!(
            "FROM {base} AS good\nFROM {base}\nCOPY --from=good /usr/local/bin/ferrocd-operator /usr/local/bin/ferrocd\n"
        ),
        &broken,
    );
    let outage = rolls_onto(cluster, keys, &next);
    broken_image_stops_after_one_member(cluster, &next, &broken);
    outage
}

fn rolls_onto(cluster: &Cluster<'_>, keys: &[(String, String)], image: &str) -> Duration {
    let before = cluster.wait_ready("3 ready voters before the upgrade", |_| true);
    let old_leader = before
        .iter()
        .find(|m| m.is_leader)
        .expect("a leader")
        .clone();
    let writer = writer(&cluster.service, &[]);
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    set_image(cluster, image);
    wait_for(
        &format!("every member on {image}, ready, Upgrading=False/UpToDate"),
        Duration::from_secs(180),
        || {
            let pods = pods(cluster);
            let all_new = pods.len() == 3 && pods.iter().all(|p| p.image == image && p.ready);
            let done = upgrading(cluster)
                .is_some_and(|(status, reason, _)| status == "False" && reason == "UpToDate");
            (all_new && done && cluster.ready_members(&|_| true).is_some()).then_some(())
        },
        || cluster.describe(),
    );
    let took = started.elapsed();
    let report = writer.stop_when_settled();
    let after = cluster.wait_ready("3 ready voters after the upgrade", |_| true);
    let moved = events(cluster, "LeaderMoved");
    eprintln!(
        "upgrade to {image}: {took:.1?}; {} writes ok, {} failed, longest failure window {:.1?}; leader {} -> {}; LeaderMoved: {moved:?}; first errors: {:?}",
        report.ok,
        report.failed,
        report.longest_outage,
        old_leader.name,
        after.iter().find(|m| m.is_leader).map_or("?", |m| m.name.as_str()),
        report.errors
    );
    assert!(
        report.longest_outage <= MAX_OUTAGE,
        "writes failed for {:?} during the upgrade: {:?}",
        report.longest_outage,
        report.errors
    );
    assert!(
        moved
            .iter()
            .any(|note| note.contains(&format!("from {}", old_leader.name))),
        "leadership moved off {} before its restart: {moved:?}",
        old_leader.name
    );
    assert_eq!(
        after.iter().map(|m| &m.id).collect::<Vec<_>>(),
        before.iter().map(|m| &m.id).collect::<Vec<_>>(),
        "every member kept its identity and data"
    );
    cluster.assert_keys(keys, "after the upgrade");
    let acknowledged: Vec<(String, String)> = report
        .acknowledged
        .iter()
        .map(|k| (k.clone(), k.clone()))
        .collect();
    cluster.assert_keys(&acknowledged, "acknowledged during the upgrade");
    cluster.assert_hashkv_equal();
    report.longest_outage
}

fn broken_image_stops_after_one_member(cluster: &Cluster<'_>, good: &str, broken: &str) {
    let started = Instant::now();
    set_image(cluster, broken);
    let message = wait_for(
        "Upgrading=False/UpgradeFailed after the broken image",
        Duration::from_secs(120),
        || match upgrading(cluster) {
            Some((status, reason, message)) if status == "False" && reason == "UpgradeFailed" => {
                Some(message)
            }
            _ => None,
        },
        || cluster.describe(),
    );
    eprintln!(
        "broken image: rollout stopped after {:.1?}: {message}",
        started.elapsed()
    );
    // Give the operator a few more reconciles to prove it stays stopped.
    std::thread::sleep(Duration::from_secs(5));
    let seen = pods(cluster);
    let on_broken: Vec<&str> = seen
        .iter()
        .filter(|p| p.image == broken)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        on_broken.len(),
        1,
        "only the first member restarted onto the broken image: {seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|p| p.image != broken)
            .all(|p| p.image == good && p.ready),
        "the other members untouched and ready: {seen:?}"
    );
    assert!(!events(cluster, "UpgradeFailed").is_empty());
    let put = cluster.etcdctl(&["put", "upgrade/quorum", "kept"]);
    assert!(
        put.status.success(),
        "writes with one member down: {}",
        text(&put)
    );

    // Back to the working image: the broken member is restarted onto it.
    let back = Instant::now();
    set_image(cluster, good);
    cluster.wait_ready("the broken member back on the working image", |_| {
        pods(cluster).iter().all(|p| p.image == good && p.ready)
    });
    eprintln!("rollback repaired the member in {:.1?}", back.elapsed());
}

fn set_image(cluster: &Cluster<'_>, image: &str) {
    let patch = format!(r#"{{"spec":{{"image":"{image}"}}}}"#);
    cluster.node.kubectl_ok(&[
        "patch",
        "etcdcluster",
        CLUSTER,
        "--type=merge",
        "-p",
        &patch,
    ]);
}

/// The `Upgrading` condition: status, reason, message.
fn upgrading(cluster: &Cluster<'_>) -> Option<(String, String, String)> {
    let out = cluster
        .node
        .kubectl(&["get", "etcdcluster", CLUSTER, "-o", "json"]);
    let resource: Value = serde_json::from_slice(&out.stdout).ok()?;
    let condition = resource["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Upgrading")?
        .clone();
    let field = |k: &str| condition[k].as_str().unwrap_or_default().to_string();
    Some((field("status"), field("reason"), field("message")))
}

fn pods(cluster: &Cluster<'_>) -> Vec<PodSeen> {
    let out = cluster.node.kubectl(&[
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/instance={CLUSTER}"),
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .map(|p| PodSeen {
                    name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
                    image: p["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or_default()
                        .into(),
                    ready: p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    }),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Notes of the Events with `reason` about the EtcdCluster.
fn events(cluster: &Cluster<'_>, reason: &str) -> Vec<String> {
    let out = cluster.node.kubectl(&[
        "get",
        "events.events.k8s.io",
        "--field-selector",
        &format!("reason={reason}"),
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|e| e["note"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
